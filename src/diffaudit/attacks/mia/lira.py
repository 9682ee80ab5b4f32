"""LiRA, the likelihood-ratio attack with shadow models (Carlini et al. S&P 2022), on the denoising loss
(as Carlini et al. 2023 did for CIFAR-10 DDPMs).

Shadow models are trained with the target's recipe on random halves of a candidate pool, so every sample is
IN some shadows and OUT of others. Online LiRA compares the target's statistic with Gaussians fitted to the IN and OUT
shadow statistics; offline LiRA uses the OUT ones only (no shadow trained on the target's candidates).
"""

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from diffaudit.attacks.mia.common import QueryBatch
from diffaudit.attacks.mia.loss import paper_loss
from diffaudit.model.pipeline import AuditPipeline


@dataclass
class Shadow:
    pipe: AuditPipeline
    trained: frozenset[str]  # sha256 of every image in this shadow's training set


def statistic(pipe: AuditPipeline, batch: QueryBatch, timesteps: tuple[int, ...], draws: int) -> np.ndarray:
    """log of the denoising loss (papers' timesteps, matched by noise level): closer to Gaussian across models
    than the loss itself."""
    return np.log(paper_loss(pipe, batch, timesteps, draws))


class LiRA:
    def __init__(self, shadows: list[Shadow], in_masks: np.ndarray, online: bool = True,
                 timesteps: tuple[int, ...] = (100,), draws: int = 4):
        """`in_masks` (shadows x scored samples): whether each shadow trained on each sample."""
        if not shadows:
            raise ValueError("LiRA needs at least one shadow model")
        self.shadows, self.in_masks, self.online = shadows, np.asarray(in_masks, bool), online
        self.timesteps, self.draws = timesteps, draws
        self._shadow_stats: np.ndarray | None = None

    @property
    def queries(self) -> int:
        """Queries to the target per sample; shadow queries are the attacker's own compute."""
        return len(self.timesteps) * self.draws

    def score(self, pipe: AuditPipeline, batch: QueryBatch) -> np.ndarray:
        target = statistic(pipe, batch, self.timesteps, self.draws)
        if self._shadow_stats is None:
            self._shadow_stats = np.stack([statistic(s.pipe, batch, self.timesteps, self.draws) for s in self.shadows])
        return lira_scores(target, self._shadow_stats, self.in_masks, self.online)


def leave_one_shadow_out(attack: LiRA) -> dict:
    """Each shadow in turn plays the target, scored against the other shadows: a LiRA that cannot tell a shadow's
    own IN from OUT samples has nothing to say about the real target. Run after `attack.score`."""
    if attack._shadow_stats is None or len(attack.shadows) < 3:
        return {"aucs": [], "note": "needs 3 or more shadows"}
    stats, masks = attack._shadow_stats, attack.in_masks
    aucs = []
    for j in range(len(stats)):
        rest = np.arange(len(stats)) != j
        if 0 < masks[j].sum() < masks.shape[1]:
            aucs.append(float(roc_auc_score(masks[j], lira_scores(stats[j], stats[rest], masks[rest], attack.online))))
    return {"aucs": aucs, "mean": float(np.mean(aucs)) if aucs else float("nan"),
            "min": float(np.min(aucs)) if aucs else float("nan")}


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
