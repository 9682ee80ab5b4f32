"""What every membership-inference attack needs: the query batch and the forward-noising formula."""

from dataclasses import dataclass

import numpy as np
import torch

from diffaudit.model.pipeline import AuditPipeline


@dataclass(frozen=True)
class QueryBatch:
    """Images to test, in the UNet's space, with their captions' embeddings."""

    latents: torch.Tensor
    cond: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return len(self.latents)


def query_batch(pipe: AuditPipeline, images: np.ndarray, captions: list[str]) -> QueryBatch:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return QueryBatch(pipe.to_latents(x), pipe.encode_text(captions), list(captions))


def alpha_bar(pipe: AuditPipeline, t: int) -> torch.Tensor:
    return pipe.scheduler.alphas_cumprod[t]


def noised(pipe: AuditPipeline, x0: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
    """q(x_t | x_0) with the given noise (Ho et al. 2020, eq. 4)."""
    a = alpha_bar(pipe, t)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def fixed_noise(shape: torch.Size, seed: int) -> torch.Tensor:
    """Noise that depends only on (shape, seed): every model sees the same draws, which lowers the variance
    of per-sample comparisons (Carlini et al. S&P 2022 use fixed augmentations for the same reason)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def per_sample(x: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Mean |x|^p over everything but the batch axis."""
    return x.abs().pow(p).flatten(1).mean(1)


def batched(batch: QueryBatch, size: int):
    for i in range(0, len(batch), size):
        yield slice(i, i + size), batch.latents[i: i + size], batch.cond[i: i + size]
