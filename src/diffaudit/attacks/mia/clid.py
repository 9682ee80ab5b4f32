"""CLiD, conditional likelihood discrepancy (Zhai et al. NeurIPS 2024): 15 queries per sample.

A text-to-image model overfits the *pairing* of an image with its caption, so for a member the loss
with the true caption is much lower than with reduced captions. Following the public code's simple
variant: the reduced captions are the first, middle and last character-thirds of the caption plus the
empty caption; t in {485, 495, 505} of Stable Diffusion's schedule (matched by noise level), one noise draw each,
shared by every condition.
"""

import numpy as np
import torch
from sklearn.preprocessing import RobustScaler

from diffaudit.attacks.metrics import auc
from diffaudit.attacks.mia.common import QueryBatch, batched, fixed_noise, matched_timestep, noised, per_sample, scores
from diffaudit.config import UNET_ROWS
from diffaudit.model.pipeline import AuditPipeline

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # weights of the discrepancy tried when CLiD is fitted with labels


def reduced_captions(caption: str) -> list[str]:
    """First, middle and last third of the caption's characters, then the empty caption."""
    n = len(caption)
    a, b = n // 3, 2 * n // 3
    return [caption[:a], caption[a:b], caption[b:], ""]


class CLiD:
    def __init__(self, timesteps: tuple[int, ...] = (485, 495, 505), alpha: float = 0.5, seed: int = 0):
        # alpha weighs the discrepancy against the plain loss (CLiD_th). The authors pick it, and fit the robust
        # scalers, on shadow data: `fit` does both on a labelled tuning set; unfitted, the scalers come from the
        # scored set itself and alpha stays 0.5.
        self.timesteps, self.alpha, self.seed = tuple(timesteps), alpha, seed
        self.scalers: tuple[RobustScaler, RobustScaler] | None = None

    @property
    def queries(self) -> int:
        return len(self.timesteps) * 5

    @torch.inference_mode()
    def features(self, pipe: AuditPipeline, batch: QueryBatch, batch_size: int = UNET_ROWS) -> np.ndarray:
        """Per sample: [L(c), L(c_1)-L(c), ..., L(c_4)-L(c)]."""
        reduced = [reduced_captions(c) for c in batch.captions]
        conds = [batch.cond] + [pipe.encode_text([r[i] for r in reduced]) for i in range(4)]
        losses = scores(pipe, 5, len(batch))
        for j, t_paper in enumerate(self.timesteps):
            t = matched_timestep(pipe, t_paper, "scaled_linear")
            eps_all = fixed_noise(pipe, batch.latents.shape, self.seed * 1000 + j)
            for sl, x0, _ in batched(batch, batch_size):
                x_t = noised(pipe, x0, eps_all[sl], t)
                for i, cond in enumerate(conds):
                    losses[i, sl] += per_sample(pipe.denoiser(x_t, t, cond[sl]) - eps_all[sl])
        losses = (losses / len(self.timesteps)).cpu().float().numpy()
        return np.stack([losses[0], *(losses[1:] - losses[0])], axis=1)

    def fit(self, pipe: AuditPipeline, batch: QueryBatch, labels: np.ndarray) -> dict:
        """Fit the scalers on a labelled tuning set and choose alpha there by AUC in the paper's direction (never on
        the scored set); `tuning.tune` decides the direction."""
        f = self.features(pipe, batch)
        self.scalers = _scalers(f)
        aucs = {a: auc(labels, self._combine(f, a)) for a in ALPHAS}
        self.alpha = max(aucs, key=aucs.__getitem__)
        return {"alpha": self.alpha, "scaler": "fitted on the tuning set"}

    def score(self, pipe: AuditPipeline, batch: QueryBatch) -> np.ndarray:
        return self._combine(self.features(pipe, batch), self.alpha)

    def _combine(self, f: np.ndarray, alpha: float) -> np.ndarray:
        loss_scaler, gap_scaler = self.scalers or _scalers(f)
        loss = loss_scaler.transform(f[:, :1])[:, 0]
        discrepancy = gap_scaler.transform(f[:, 1:].mean(1, keepdims=True))[:, 0]
        return -((1 - alpha) * loss - alpha * discrepancy)


def _scalers(f: np.ndarray) -> tuple[RobustScaler, RobustScaler]:
    return RobustScaler().fit(f[:, :1]), RobustScaler().fit(f[:, 1:].mean(1, keepdims=True))
