"""Wen et al. ICLR 2024: memorized prompts pull hard on the sample from the first step, so the norm of
(text-conditional - unconditional) noise prediction at step 1 is large. 2 UNet evaluations per
generation (public code: mean over generations and steps; the cheapest setting is one of each)."""

import numpy as np
import torch

from diffaudit.config import UNET_ROWS
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import initial_noise, make_scheduler


class WenTextNorm:
    def __init__(self, generations: int = 1, sampling_steps: int = 25, batch_size: int = UNET_ROWS):
        self.generations, self.sampling_steps, self.batch_size = generations, sampling_steps, batch_size

    @property
    def queries_per_prompt(self) -> int:
        return 2 * self.generations

    @torch.inference_mode()
    def score(self, pipe: AuditPipeline, prompts: list[str]) -> np.ndarray:
        t = make_scheduler(pipe, "ddim", self.sampling_steps).timesteps[0]  # the first sampling step
        cond = pipe.encode_text(prompts).repeat_interleave(self.generations, 0)
        uncond = pipe.encode_text([""])
        seeds = [g for _ in prompts for g in range(self.generations)]
        norms = []
        for i in range(0, len(cond), self.batch_size):
            c = cond[i: i + self.batch_size]
            x = initial_noise(pipe, seeds[i: i + self.batch_size])
            eps_u, eps_c = pipe.denoiser(torch.cat([x, x]), t, torch.cat([uncond.expand_as(c), c])).chunk(2)
            norms.append((eps_c - eps_u).flatten(1).norm(dim=1))
        return torch.cat(norms).reshape(len(prompts), self.generations).mean(1).cpu().float().numpy()
