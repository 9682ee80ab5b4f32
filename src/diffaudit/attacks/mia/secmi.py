"""SecMI (Duan et al. ICML 2023): step-wise error under deterministic DDIM inversion, 11 queries.

Invert x_0 to x_{t-k} with DDIM steps of size k, take one deterministic step up to t and one back down
to t-k. Members, fitted closely, come back nearer to where they started (smaller "t-error").
"""

from itertools import pairwise

import numpy as np
import torch

from diffaudit.attacks.mia.common import QueryBatch, alpha_bar, batched, matched_timestep, per_sample, scores
from diffaudit.config import UNET_ROWS
from diffaudit.model.pipeline import AuditPipeline


def ddim_move(pipe: AuditPipeline, x: torch.Tensor, t_from: int, t_to: int, cond: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) from t_from to t_to, forwards (inversion) or backwards."""
    eps = pipe.denoiser(x, t_from, cond)
    a_from, a_to = alpha_bar(pipe, t_from), alpha_bar(pipe, t_to)
    x0 = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
    return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps


class SecMI:
    def __init__(self, t: int = 100, steps: int = 10):
        # Duan et al. (public code, DDPM, linear schedule): t_SEC = 100 reached in 10 steps of k = 10; the error
        # is measured at t_SEC - k. Every node of that path is matched to our schedule by noise level.
        self.t, self.steps = t, steps

    @property
    def queries(self) -> int:
        return self.steps + 1

    @torch.inference_mode()
    def score(self, pipe: AuditPipeline, batch: QueryBatch, batch_size: int = UNET_ROWS) -> np.ndarray:
        nodes = [matched_timestep(pipe, round(self.t * i / self.steps)) for i in range(self.steps + 1)]
        out = scores(pipe, len(batch))
        for sl, x0, cond in batched(batch, batch_size):
            x = x0
            for a, b in pairwise(nodes[:-1]):
                x = ddim_move(pipe, x, a, b, cond)
            up = ddim_move(pipe, x, nodes[-2], nodes[-1], cond)
            back = ddim_move(pipe, up, nodes[-1], nodes[-2], cond)
            out[sl] = -per_sample(back - x)
        return out.cpu().float().numpy()
