"""Jeon et al. ICML 2025 (sharpness of the probability landscape): around a memorized prompt's mode the
conditional density is sharply peaked, so the guidance direction s = eps_c - eps_u changes fast when x moves
along it. Score = ||s(x + h s) - s(x)|| / h at the first sampling step, the finite-difference form of their
Hessian-times-score norm, averaged over a few seeds. 4 UNet evaluations per seed. The step h = 0.01 was the best of
0.01, 0.1 and 1 on a second-seed quick model (all three within 0.003 AUC; benchmarks/detectors.py)."""

import numpy as np
import torch

from diffaudit.attacks.detect.first_step import first_sampling_step, first_steps
from diffaudit.config import UNET_ROWS
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import noise_pair


class Sharpness:
    def __init__(self, seeds: int = 4, step_size: float = 0.01, batch_size: int = UNET_ROWS):
        self.seeds, self.step_size, self.batch_size = seeds, step_size, batch_size

    @property
    def queries_per_prompt(self) -> int:
        return 4 * self.seeds

    @torch.inference_mode()
    def score(self, pipe: AuditPipeline, prompts: list[str]) -> np.ndarray:
        out = []
        for step in first_steps(pipe, prompts, self.seeds, first_sampling_step(pipe), self.batch_size // 2):
            s = step.eps_c - step.eps_u
            moved = step.x + self.step_size * s
            eps_u, eps_c = noise_pair(pipe, moved, step.t, step.cond, step.uncond)
            change = ((eps_c - eps_u) - s).flatten(1).norm(dim=1).float() / self.step_size
            out.append(step.per_prompt(change).mean(1).cpu().numpy())
        return np.concatenate(out)
