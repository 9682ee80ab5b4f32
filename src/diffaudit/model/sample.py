"""Batched classifier-free-guidance sampling with the schedulers of the sampler registry (`samplers`).

The unconditional and conditional halves go through the UNet as one batch and many prompts share a batch; at
16 px on 2 cores this runs at the speed of a diffusers-pipeline-style loop (1.02-1.03x, benchmarks/throughput.py):
only fewer steps buy more, and they change verdicts (benchmarks/sampler_verdicts.py).
"""

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from diffaudit import samplers
from diffaudit.model.device import host_randn, on_host
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.progress import Progress


def make_scheduler(pipe: AuditPipeline, sampler: str, steps: int) -> SchedulerMixin:
    """A fresh sampling scheduler derived from the model's training schedule (multistep ones keep state)."""
    return samplers.scheduler(sampler, pipe.scheduler.config, steps)


def initial_noise(pipe: AuditPipeline, seeds: list[int]) -> torch.Tensor:
    """One CPU generator per sample, moved to the pipeline's device: a sample's noise depends on its seed alone,
    not on batching or device."""
    with on_host():
        noise = torch.stack([host_randn(pipe.latent_shape, seed=s) for s in seeds])
    return pipe.place(noise)


def noise_pair(pipe: AuditPipeline, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor,
               uncond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unconditional, conditional) noise predictions at x, both halves in one UNet batch."""
    eps_u, eps_c = pipe.denoiser(torch.cat([x, x]), t, torch.cat([uncond.expand_as(cond), cond])).chunk(2)
    return eps_u, eps_c


@torch.inference_mode()
def guided_eps(pipe: AuditPipeline, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
               guidance: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022); guidance 1 needs only the conditional pass, 0 only the
    unconditional one."""
    if guidance == 1.0:
        return pipe.denoiser(x, t, cond)
    if guidance == 0.0:
        return pipe.denoiser(x, t, uncond.expand_as(cond))
    eps_u, eps_c = noise_pair(pipe, x, t, cond, uncond)
    return eps_u + guidance * (eps_c - eps_u)


def sample(pipe: AuditPipeline, cond: torch.Tensor, seeds: list[int], guidance: float, steps: int,
           sampler: str = "ddim-unclamped", batch_size: int = 256, progress: Progress | None = None,
           guidance_start: float = 0.0, early_guidance: float = 0.0) -> np.ndarray:
    """Generate one image per (cond row, seed); returns uint8 N x H x W x 3. With `guidance_start` > 0 the first
    that share of the steps runs at `early_guidance` (0: unconditional) and `guidance` only after it: Jain et al.
    (CVPR 2025) keep guidance out of the early "attraction basin" that steers a trajectory to a memorized image."""
    if len(cond) != len(seeds):
        raise ValueError(f"{len(cond)} conditionings but {len(seeds)} seeds")
    with torch.inference_mode(False):  # weights converted in inference mode could never be trained or searched again
        pipe.unet.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        uncond = pipe.encode_text([""])
        delayed = guidance_start > 0
        per_batch = batch_size if guidance == 1.0 and not delayed else max(1, batch_size // 2)
        task = progress.add_task(f"sample {sampler} x{steps} g={guidance:g}", total=len(seeds)) if progress else None
        out = []
        for i in range(0, len(seeds), per_batch):
            c = cond[i: i + per_batch]
            x = initial_noise(pipe, seeds[i: i + per_batch])
            sched = make_scheduler(pipe, sampler, steps)
            x = x * sched.init_noise_sigma
            late = round(guidance_start * len(sched.timesteps))  # the first step index that gets `guidance`
            for i, t in enumerate(sched.timesteps):
                scale = guidance if i >= late else early_guidance
                eps = guided_eps(pipe, sched.scale_model_input(x, t), t, c, uncond, scale)
                x = sched.step(eps, t, x).prev_sample
            out.append(pipe.to_uint8(x))
            if progress is not None:
                progress.advance(task, len(c))
        return np.concatenate(out)
