"""The samplers an audit may draw with, declared once: name -> diffusers scheduler and the options that make it that
sampler. Config, CLI and the study read this registry; `model.sample.make_scheduler` builds from it.

Our training schedule has `clip_sample` on, so plain DDIM clamps every step's x_0 estimate to [-1, 1]. Deployed
Stable Diffusion pipelines do not; under guidance >= 3 the clamp washes the quick model's samples out and hides its
copies (benchmarks/guidance_clipping.py). So the deployer's DDIM is "ddim-unclamped", and "ddim" stays only to show how
numbers measured with it moved.
"""

from dataclasses import dataclass, field

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from diffaudit.registry import Registry


@dataclass(frozen=True)
class Sampler:
    scheduler: type[SchedulerMixin]
    title: str  # a reader's name for it
    options: dict = field(default_factory=dict)  # overrides of the model's training-schedule config


SAMPLERS: Registry[Sampler] = Registry("sampler", "sample.sampler", {
    "ddim": Sampler(DDIMScheduler, "clamped DDIM"),  # the training schedule's clip_sample: not how pipelines sample
    "ddim-unclamped": Sampler(DDIMScheduler, "DDIM", {"clip_sample": False}),  # as Stable Diffusion pipelines run it
    "dpmsolver++": Sampler(DPMSolverMultistepScheduler, "DPM-Solver++", {"algorithm_type": "dpmsolver++"}),
    "unipc": Sampler(UniPCMultistepScheduler, "UniPC"),
    "euler": Sampler(EulerDiscreteScheduler, "Euler"),
    "pndm": Sampler(PNDMScheduler, "PNDM", {"skip_prk_steps": True}),  # as Stable Diffusion 1.x pipelines run it
})


def declared(class_name: str) -> str | None:
    """The sampler a model folder's declared scheduler class names (the first registered one), or None when we
    cannot sample with that class."""
    return next((name for name, s in SAMPLERS.items() if s.scheduler.__name__ == class_name
                 and name != "ddim"), None)


def scheduler(name: str, training_config: dict, steps: int) -> SchedulerMixin:
    """A fresh scheduler for `name` from the model's training schedule, set to `steps` (multistep ones keep state)."""
    entry = SAMPLERS[name]
    sched = entry.scheduler.from_config(training_config, **entry.options)
    sched.set_timesteps(steps)
    return sched
