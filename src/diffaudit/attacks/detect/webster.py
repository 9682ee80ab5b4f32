"""Webster 2023 one-step extraction: denoise pure noise to x_0 in a single step for a few seeds. A
verbatim-memorized prompt gives an image that holds still across seeds; others change with the seed.

Webster scores the share of pixels that are edges (Sobel magnitude over a threshold) in most seeds. That score
failed its controls here and was removed: constant on the 8 px positive control (AUC 0.50), and AUC 0.38-0.50
over ten guidance/threshold settings on a second-seed quick model, at Stable Diffusion's first-step noise level
(benchmarks/results/detectors-first-run.txt). In pixel space the one-step x_0 amplifies the noise-prediction
error 1/sqrt(alpha-bar) = 14.6 times and saturates, so edges are everywhere whatever the prompt. Seed agreement
keeps the idea."""

import numpy as np
import torch

from diffaudit.attacks.detect.first_step import FirstStep, first_steps, sd_matched_step
from diffaudit.config import UNET_ROWS
from diffaudit.model.pipeline import AuditPipeline


def one_step_images(pipe: AuditPipeline, step: FirstStep, guidance: float) -> np.ndarray:
    """x_0 predicted in one guided step from the noise, as [0,1] images (rows x C x H x W)."""
    a = pipe.scheduler.alphas_cumprod[step.t].to(step.x.device, step.x.dtype)
    eps = step.eps_u + guidance * (step.eps_c - step.eps_u)
    x0 = ((step.x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
    return pipe.to_images(x0).cpu().float().numpy()


class SeedAgreement:
    """Webster's premise scored directly: a memorized prompt's one-step x_0 is the same picture whatever the seed.
    Score = minus the per-pixel standard deviation across seeds, averaged over pixels. 2 UNet evaluations per seed.
    Guidance 3: the best of 1, 3 and 7.5 on a second-seed quick model (benchmarks/detectors.py)."""

    def __init__(self, seeds: int = 4, guidance: float = 3.0, batch_size: int = UNET_ROWS):
        self.seeds, self.guidance, self.batch_size = seeds, guidance, batch_size

    @property
    def queries_per_prompt(self) -> int:
        return 2 * self.seeds

    @torch.inference_mode()
    def score(self, pipe: AuditPipeline, prompts: list[str]) -> np.ndarray:
        out = []
        for step in first_steps(pipe, prompts, self.seeds, sd_matched_step(pipe), self.batch_size):
            images = one_step_images(pipe, step, self.guidance)
            out.append(-images.reshape(-1, self.seeds, images[0].size).std(1).mean(1))
        return np.concatenate(out)
