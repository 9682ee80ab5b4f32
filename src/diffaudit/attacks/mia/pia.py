"""PIA, proximal initialization attack (Kong et al. ICLR 2024): 2 queries per sample.

The model's own noise prediction at t=0 stands in for the unknown noise; a member's prediction at a
later step t stays consistent with it. Score = minus the l_p distance between the two predictions.
"""

import numpy as np
import torch

from diffaudit.attacks.mia.common import QueryBatch, batched, matched_timestep, noised, per_sample, scores
from diffaudit.config import UNET_ROWS
from diffaudit.model.pipeline import AuditPipeline


class PIA:
    def __init__(self, t: int = 200, p: int = 4):
        # Kong et al.: t = 200 of 1000 on DDPM's linear schedule; l_4 distance (their default norm).
        self.t, self.p = t, p

    queries = 2

    @torch.inference_mode()
    def score(self, pipe: AuditPipeline, batch: QueryBatch, batch_size: int = UNET_ROWS) -> np.ndarray:
        t = matched_timestep(pipe, self.t)
        out = scores(pipe, len(batch))
        for sl, x0, cond in batched(batch, batch_size):
            eps0 = pipe.denoiser(x0, 0, cond)
            eps_t = pipe.denoiser(noised(pipe, x0, eps0, t), t, cond)
            out[sl] = -per_sample(eps_t - eps0, self.p)
        return out.cpu().float().numpy()
