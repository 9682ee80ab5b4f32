"""What every membership-inference attack needs: the query batch and the forward-noising formula."""

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from diffaudit.model.device import at_least_float32, host_randn
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
    return QueryBatch(pipe.pixels_to_latents(images), pipe.encode_text(captions), list(captions))


def alpha_bar(pipe: AuditPipeline, t: int) -> torch.Tensor:
    """A 0-dim tensor: it scales tensors of any device and dtype (0-dim tensors do not move or promote them)."""
    return pipe.scheduler.alphas_cumprod[t]


# The schedules the attacks' papers were tuned on, 1,000 steps each: DDPM's linear betas 1e-4..0.02 (Ho et al. 2020;
# loss, PIA and SecMI on CIFAR-10) and Stable Diffusion's "scaled linear" sqrt-spaced 0.00085..0.012 (CLiD).
PAPER_SCHEDULES = ("linear", "scaled_linear")


@cache
def _papers_alpha_bar(schedule: str) -> np.ndarray:
    if schedule == "linear":
        betas = np.linspace(1e-4, 0.02, 1000)
    elif schedule == "scaled_linear":
        betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    else:
        raise ValueError(f"unknown paper schedule {schedule!r}; choose from {PAPER_SCHEDULES}")
    return np.cumprod(1 - betas)


def matched_timestep(pipe: AuditPipeline, t_paper: int, schedule: str = "linear") -> int:
    """The step of `pipe`'s schedule with the noise level (alpha-bar) of step `t_paper` in the paper's `schedule`.

    An index means a different noise level in another schedule: on our cosine schedule t = 100 has alpha-bar 0.972,
    while DDPM's linear t = 100 (0.895) sits at our t = 203 and CLiD's Stable Diffusion t = 495 (0.283) at our 639.
    t = 0 is the clean image in every schedule and stays 0."""
    if t_paper == 0:
        return 0
    ours = pipe.scheduler.alphas_cumprod.cpu().float().numpy()
    return int(np.abs(ours - _papers_alpha_bar(schedule)[t_paper]).argmin())


def noised(pipe: AuditPipeline, x0: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
    """q(x_t | x_0) with the given noise (Ho et al. 2020, eq. 4)."""
    a = alpha_bar(pipe, t)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def fixed_noise(pipe: AuditPipeline, shape: torch.Size, seed: int) -> torch.Tensor:
    """Noise that depends only on (shape, seed), drawn on the CPU and moved to `pipe`'s device: every model sees the
    same draws, which lowers the variance of per-sample comparisons (Carlini et al. S&P 2022 use fixed
    augmentations for the same reason)."""
    return pipe.place(host_randn(shape, seed=seed))


def per_sample(x: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Mean |x|^p over everything but the batch axis, in at least float32 (CLiD's differences of losses cancel
    badly in bfloat16)."""
    return x.to(at_least_float32(x.dtype)).abs().pow(p).flatten(1).mean(1)


def scores(pipe: AuditPipeline, *shape: int) -> torch.Tensor:
    """Zeroed per-sample accumulators on the pipeline's device, in at least float32."""
    return torch.zeros(*shape, device=pipe.device, dtype=at_least_float32(pipe.dtype))


def batched(batch: QueryBatch, size: int):
    for i in range(0, len(batch), size):
        yield slice(i, i + size), batch.latents[i: i + size], batch.cond[i: i + size]
