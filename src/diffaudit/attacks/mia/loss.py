"""Loss attack: members have lower denoising loss. Carlini et al. 2023 (§5) found t near 100 of 1000 best."""

import numpy as np
import torch

from diffaudit.attacks.mia.common import (
    QueryBatch,
    batched,
    fixed_noise,
    matched_timestep,
    noised,
    per_sample,
    scores,
)
from diffaudit.config import UNET_ROWS
from diffaudit.model.pipeline import AuditPipeline


@torch.inference_mode()
def denoising_loss(pipe: AuditPipeline, batch: QueryBatch, timesteps: tuple[int, ...], draws: int,
                   seed: int = 0, batch_size: int = UNET_ROWS) -> np.ndarray:
    """Per-sample epsilon-MSE averaged over `pipe`'s timesteps and fixed noise draws (timesteps x draws queries)."""
    total = scores(pipe, len(batch))
    for t in timesteps:
        for d in range(draws):
            eps_all = fixed_noise(pipe, batch.latents.shape, seed * 1000 + d)
            for sl, x0, cond in batched(batch, batch_size):
                eps = eps_all[sl]
                total[sl] += per_sample(pipe.denoiser(noised(pipe, x0, eps, t), t, cond) - eps)
    return (total / (len(timesteps) * draws)).cpu().float().numpy()


def paper_loss(pipe: AuditPipeline, batch: QueryBatch, timesteps: tuple[int, ...], draws: int) -> np.ndarray:
    """`denoising_loss` at the papers' timesteps, matched to `pipe`'s schedule by noise level."""
    return denoising_loss(pipe, batch, tuple(matched_timestep(pipe, t) for t in timesteps), draws)


class LossAttack:
    """Score = minus the loss at one timestep (`loss`) or averaged over many (`loss-avg`); timesteps in the
    papers' (linear-schedule) units."""

    def __init__(self, timesteps: tuple[int, ...] = (100,), draws: int = 4):
        self.timesteps, self.draws = tuple(timesteps), draws

    @property
    def queries(self) -> int:
        return len(self.timesteps) * self.draws

    def score(self, pipe: AuditPipeline, batch: QueryBatch) -> np.ndarray:
        return -paper_loss(pipe, batch, self.timesteps, self.draws)
