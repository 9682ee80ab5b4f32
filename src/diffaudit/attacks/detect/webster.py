"""Webster 2023 one-step extraction: denoise pure noise to x_0 in a single step for a few seeds. A
verbatim-memorized prompt gives a sharp image that holds still across seeds; others give a blur. The
score is the share of pixels that are edges (Sobel magnitude over a threshold) in most seeds.
2 UNet evaluations (guided) per seed."""

import numpy as np
import torch
from scipy.ndimage import sobel

from diffaudit.config import UNET_ROWS
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import guided_eps, initial_noise


class WebsterEdges:
    def __init__(self, seeds: int = 4, guidance: float = 7.5, edge_threshold: float = 1.5, batch_size: int = UNET_ROWS):
        # Public code: 4 seeds, guidance 7.5, Sobel magnitude summed over RGB > 1.5 (on [0,1] pixels here).
        self.seeds, self.guidance, self.edge_threshold, self.batch_size = seeds, guidance, edge_threshold, batch_size

    @property
    def queries_per_prompt(self) -> int:
        return 2 * self.seeds

    @torch.inference_mode()
    def score(self, pipe: AuditPipeline, prompts: list[str]) -> np.ndarray:
        t = pipe.scheduler.config.num_train_timesteps - 1
        a = pipe.scheduler.alphas_cumprod[t]
        cond = pipe.encode_text(prompts).repeat_interleave(self.seeds, 0)
        uncond = pipe.encode_text([""])
        seeds = [s for _ in prompts for s in range(self.seeds)]
        images = []
        for i in range(0, len(cond), self.batch_size):
            x = initial_noise(pipe, seeds[i: i + self.batch_size])
            eps = guided_eps(pipe, x, t, cond[i: i + self.batch_size], uncond, self.guidance)
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)  # one step straight to x_0
            images.append(pipe.to_images(x0).cpu().float().numpy())
        stack = np.concatenate(images)  # N x C x H x W in [0,1]
        magnitude = np.hypot(sobel(stack, axis=-1), sobel(stack, axis=-2)).sum(1)
        edges = (magnitude > self.edge_threshold).reshape(len(prompts), self.seeds, -1)
        return (edges.mean(1) > 0.5).mean(1)
