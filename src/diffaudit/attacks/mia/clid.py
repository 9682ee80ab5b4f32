"""CLiD, conditional likelihood discrepancy (Zhai et al. NeurIPS 2024): 15 queries per sample.

A text-to-image model overfits the *pairing* of an image with its caption, so for a member the loss
with the true caption is much lower than with reduced captions. Following the public code's simple
variant: the reduced captions are the first, middle and last character-thirds of the caption plus the
empty caption; t in {485, 495, 505} with one noise draw each, shared by every condition.
"""

import numpy as np
import torch
from sklearn.preprocessing import RobustScaler

from diffaudit.attacks.mia.common import QueryBatch, batched, fixed_noise, noised, per_sample
from diffaudit.config import UNET_ROWS
from diffaudit.model.pipeline import AuditPipeline


def reduced_captions(caption: str) -> list[str]:
    """First, middle and last third of the caption's characters, then the empty caption."""
    n = len(caption)
    a, b = n // 3, 2 * n // 3
    return [caption[:a], caption[a:b], caption[b:], ""]


class CLiD:
    def __init__(self, timesteps: tuple[int, ...] = (485, 495, 505), alpha: float = 0.5, seed: int = 0):
        # alpha weighs the discrepancy against the plain loss (CLiD_th). The authors pick it on shadow
        # models; without labels we fix it at 0.5 and scale both terms robustly on the evaluated set itself.
        self.timesteps, self.alpha, self.seed = timesteps, alpha, seed

    @property
    def queries(self) -> int:
        return len(self.timesteps) * 5

    @torch.inference_mode()
    def features(self, pipe: AuditPipeline, batch: QueryBatch, batch_size: int = UNET_ROWS) -> np.ndarray:
        """Per sample: [L(c), L(c_1)-L(c), ..., L(c_4)-L(c)]."""
        reduced = [reduced_captions(c) for c in batch.captions]
        conds = [batch.cond] + [pipe.encode_text([r[i] for r in reduced]) for i in range(4)]
        losses = torch.zeros(5, len(batch))
        for j, t in enumerate(self.timesteps):
            eps_all = fixed_noise(batch.latents.shape, self.seed * 1000 + j)
            for sl, x0, _ in batched(batch, batch_size):
                x_t = noised(pipe, x0, eps_all[sl], t)
                for i, cond in enumerate(conds):
                    losses[i, sl] += per_sample(pipe.denoiser(x_t, t, cond[sl]) - eps_all[sl])
        losses = (losses / len(self.timesteps)).numpy()
        return np.stack([losses[0], *(losses[1:] - losses[0])], axis=1)

    def score(self, pipe: AuditPipeline, batch: QueryBatch) -> np.ndarray:
        f = self.features(pipe, batch)
        loss = RobustScaler().fit_transform(f[:, :1])[:, 0]
        discrepancy = RobustScaler().fit_transform(f[:, 1:].mean(1, keepdims=True))[:, 0]
        return -((1 - self.alpha) * loss - self.alpha * discrepancy)
