"""LiRA, the likelihood-ratio attack with shadow models (Carlini et al. S&P 2022), on the denoising loss
(as Carlini et al. 2023 did for CIFAR-10 DDPMs).

Shadow models are trained on random halves of the evaluation pool, so every sample is IN some shadows
and OUT of others. Online LiRA compares the target's statistic with Gaussians fitted to the IN and OUT
shadow statistics; offline LiRA uses the OUT ones only (no shadow trained on the target's candidates).
"""

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from diffaudit.attacks.mia.common import QueryBatch
from diffaudit.attacks.mia.loss import denoising_loss
from diffaudit.model.pipeline import AuditPipeline


@dataclass
class Shadow:
    pipe: AuditPipeline
    in_mask: np.ndarray  # bool per evaluation sample: was it in this shadow's training set?


def statistic(pipe: AuditPipeline, batch: QueryBatch, timesteps: tuple[int, ...], draws: int) -> np.ndarray:
    """log of the denoising loss: closer to Gaussian across models than the loss itself."""
    return np.log(denoising_loss(pipe, batch, timesteps, draws))


class LiRA:
    def __init__(self, shadows: list[Shadow], online: bool = True, timesteps: tuple[int, ...] = (100,),
                 draws: int = 4):
        if not shadows:
            raise ValueError("LiRA needs at least one shadow model")
        self.shadows, self.online, self.timesteps, self.draws = shadows, online, timesteps, draws
        self._shadow_stats: np.ndarray | None = None

    @property
    def queries(self) -> int:
        """Queries to the target per sample; shadow queries are the attacker's own compute."""
        return len(self.timesteps) * self.draws

    def score(self, pipe: AuditPipeline, batch: QueryBatch) -> np.ndarray:
        target = statistic(pipe, batch, self.timesteps, self.draws)
        if self._shadow_stats is None:
            self._shadow_stats = np.stack([statistic(s.pipe, batch, self.timesteps, self.draws) for s in self.shadows])
        return lira_scores(target, self._shadow_stats, np.stack([s.in_mask for s in self.shadows]), self.online)


def lira_scores(target: np.ndarray, stats: np.ndarray, in_masks: np.ndarray, online: bool) -> np.ndarray:
    """Likelihood ratio per sample from the target's statistic and the shadows' (shadows x samples).
    Lower loss means member, so offline LiRA scores how far the target falls below the OUT Gaussian."""
    mu_out = _masked_mean(stats, ~in_masks)
    # With few shadows per-sample variances are noisy; Carlini et al. recommend one global variance.
    sd_out = np.nanstd(np.where(~in_masks, stats - mu_out, np.nan)) + 1e-8
    if not online:
        return norm.logsf(target, mu_out, sd_out)
    mu_in = _masked_mean(stats, in_masks)
    sd_in = np.nanstd(np.where(in_masks, stats - mu_in, np.nan)) + 1e-8
    return norm.logpdf(target, mu_in, sd_in) - norm.logpdf(target, mu_out, sd_out)


def _masked_mean(stats: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-sample mean over the shadows where `mask` holds; the overall mean where none do."""
    counts = mask.sum(0)
    means = np.where(mask, stats, 0).sum(0) / np.maximum(counts, 1)
    return np.where(counts > 0, means, stats[mask].mean() if mask.any() else stats.mean())
