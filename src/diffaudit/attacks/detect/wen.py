"""Wen et al. ICLR 2024: memorized prompts pull hard on the sample from the first steps, so the norm of
(text-conditional - unconditional) noise prediction is large. The paper's detector averages the norm over
the first sampling steps of a few guided generations (its official notebook: 4 generations, guidance 7.5);
2 UNet evaluations per generation per step. Default: 4 generations, the first 3 of DDIM's 25 steps (unclamped, as
Stable Diffusion samples), the best of 1, 3 and 10 steps by AUC on a second-seed quick model (benchmarks/
detectors.py), never on the evaluated model."""

import numpy as np
import torch

from diffaudit.attacks.detect.first_step import SEED_BASE
from diffaudit.config import UNET_ROWS
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import initial_noise, make_scheduler, noise_pair


class WenTextNorm:
    def __init__(self, generations: int = 4, steps: int = 3, guidance: float = 7.5, sampling_steps: int = 25,
                 batch_size: int = UNET_ROWS):
        if not 1 <= steps <= sampling_steps:
            raise ValueError(f"Wen's norm is averaged over 1..{sampling_steps} sampling steps, not {steps}")
        self.generations, self.steps, self.guidance = generations, steps, guidance
        self.sampling_steps, self.batch_size = sampling_steps, batch_size

    @property
    def queries_per_prompt(self) -> int:
        return 2 * self.generations * self.steps

    @torch.inference_mode()
    def score(self, pipe: AuditPipeline, prompts: list[str]) -> np.ndarray:
        cond = pipe.encode_text(prompts).repeat_interleave(self.generations, 0)
        uncond = pipe.encode_text([""])
        seeds = [SEED_BASE + g for _ in prompts for g in range(self.generations)]
        norms = []
        for i in range(0, len(cond), self.batch_size // 2):
            c = cond[i: i + self.batch_size // 2]
            sched = make_scheduler(pipe, "ddim-unclamped", self.sampling_steps)  # a clamped DDIM collapses at 7.5
            x = initial_noise(pipe, seeds[i: i + self.batch_size // 2]) * sched.init_noise_sigma
            total = torch.zeros(len(c), device=x.device)
            for t in sched.timesteps[: self.steps]:
                eps_u, eps_c = noise_pair(pipe, x, t, c, uncond)
                total += (eps_c - eps_u).flatten(1).norm(dim=1).float()
                x = sched.step(eps_u + self.guidance * (eps_c - eps_u), t, x).prev_sample
            norms.append(total / self.steps)
        return torch.cat(norms).reshape(len(prompts), self.generations).mean(1).cpu().numpy()
