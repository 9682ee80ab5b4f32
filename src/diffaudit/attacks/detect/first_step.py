"""What every one-step detector reads: the guided model's two noise predictions on pure noise, for a few seeds
of each prompt, batched by whole prompts so a detector can compare a prompt's seeds with each other."""

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from diffaudit.attacks.mia.common import matched_timestep
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import initial_noise, make_scheduler, noise_pair

# Detectors draw their noise from seeds SEED_BASE, SEED_BASE + 1, ...: apart from the probe's seeds 0..N-1, so a
# detector never starts from the noise whose samples decided the oracle's verdict.
SEED_BASE = 1_000_000
SD_FIRST_STEP = 999  # Stable Diffusion's first sampling step on its scaled-linear schedule (alpha-bar 0.0047)


@dataclass
class FirstStep:
    """One batch: `prompts` prompts x `seeds` seeds rows of noise x at step t, and eps_u, eps_c there."""

    x: torch.Tensor
    t: int
    eps_u: torch.Tensor
    eps_c: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    seeds: int

    def per_prompt(self, values: torch.Tensor) -> torch.Tensor:
        """Rows grouped by prompt: (prompts, seeds, ...)."""
        return values.reshape(-1, self.seeds, *values.shape[1:])


def sd_matched_step(pipe: AuditPipeline) -> int:
    """The step of this model's schedule whose noise level is Stable Diffusion's at its first sampling step: on a
    cosine schedule t = 999 has alpha-bar 2.4e-9, where a one-step x_0 divides by 1/sqrt(alpha-bar) ~ 20,000."""
    return matched_timestep(pipe, SD_FIRST_STEP, "scaled_linear")


def first_sampling_step(pipe: AuditPipeline, steps: int = 25) -> int:
    """The timestep DDIM starts from at this many steps (what a user's sampler evaluates first)."""
    return int(make_scheduler(pipe, "ddim", steps).timesteps[0])


@torch.inference_mode()
def first_steps(pipe: AuditPipeline, prompts: list[str], seeds: int, t: int, batch_size: int) -> Iterator[FirstStep]:
    """Noise predictions with and without each prompt at step t, `seeds` seeds from SEED_BASE, whole prompts
    per batch."""
    cond = pipe.encode_text(prompts)
    uncond = pipe.encode_text([""])
    per_batch = max(1, batch_size // (2 * seeds))
    for i in range(0, len(prompts), per_batch):
        c = cond[i: i + per_batch].repeat_interleave(seeds, 0)
        x = initial_noise(pipe, list(range(SEED_BASE, SEED_BASE + seeds)) * (len(c) // seeds))
        eps_u, eps_c = noise_pair(pipe, x, t, c, uncond)
        yield FirstStep(x, t, eps_u, eps_c, c, uncond, seeds)
