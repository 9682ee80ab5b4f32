"""Sampling images/s: diffaudit's sampler against a diffusers-pipeline-style loop, and train steps/s.

The baseline is what `StableDiffusionPipeline.__call__` does: one prompt per call with `num_images_per_prompt`
samples, the unconditional and conditional halves in one UNet batch, DDIM at the preset's steps, `no_grad`.
Ours packs many prompts into each UNet call (`config.UNET_ROWS` rows) and, optionally, uses DPM-Solver++ at
fewer steps: `benchmarks/sampler_verdicts.py` measures whether those keep DDIM's extraction verdicts.

Variants run interleaved (baseline, ours, ours, ..., then again) so a slow spell of the machine hits all of
them; the ratio is taken within each repeat and its median and range reported. Run it alone on the machine.
Usage: python benchmarks/throughput.py [--model models/quick] [--guidance 3 7.5] [--repeats 3]
"""

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from diffaudit.config import PRESETS, UNET_ROWS
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.sample import initial_noise, sample


def train_steps_per_s(pipe: AuditPipeline, batch: int, steps: int = 5) -> float:
    unet = pipe.unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    x = torch.randn(batch, *pipe.latent_shape)
    c = torch.randn(batch, 16, 384)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        t = torch.randint(0, 1000, (batch,))
        torch.nn.functional.mse_loss(unet(x, t, encoder_hidden_states=c).sample, x).backward()
        opt.step()
        opt.zero_grad()
    unet.eval()
    return steps / (time.perf_counter() - start)


def pipeline_loop(pipe: AuditPipeline, prompts: list[str], per_prompt: int, steps: int, guidance: float) -> None:
    """StableDiffusionPipeline's loop: per prompt, N latents doubled for the two guidance halves, one UNet call."""
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    uncond = pipe.encode_text([""])
    with torch.no_grad():
        for prompt in prompts:
            cond = pipe.encode_text([prompt]).expand(per_prompt, -1, -1)
            context = torch.cat([uncond.expand_as(cond), cond])
            x = initial_noise(pipe, list(range(per_prompt))) * sched.init_noise_sigma
            sched.set_timesteps(steps)
            for t in sched.timesteps:
                model_in = sched.scale_model_input(torch.cat([x, x]), t)
                eps_u, eps_c = pipe.unet(model_in, t, encoder_hidden_states=context).sample.chunk(2)
                x = sched.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample
            pipe.to_uint8(x)


def ours(pipe: AuditPipeline, prompts: list[str], per_prompt: int, steps: int, guidance: float, sampler: str) -> None:
    cond = pipe.encode_text([p for p in prompts for _ in range(per_prompt)])
    sample(pipe, cond, list(range(per_prompt)) * len(prompts), guidance, steps, sampler, batch_size=UNET_ROWS)


def seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, help="trained model folder (default: a fresh quick-preset model; "
                                                   "speed does not depend on the weights)")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--per-prompt", type=int, default=16, help="num_images_per_prompt of the baseline")
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0, 7.5])
    parser.add_argument("--fast-steps", type=int, default=10, help="DPM-Solver++ steps of the fast variant")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    preset = PRESETS["quick"]
    pipe = AuditPipeline.from_pretrained(args.model) if args.model else build_pipeline(preset.model,
                                                                                       preset.data.resolution)
    steps = preset.sample.steps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {args.images} images per timing, "
          f"{args.per_prompt} per prompt; {args.repeats} interleaved repeats")
    print(f"quick preset, {preset.data.resolution}px; train {train_steps_per_s(pipe, preset.train.batch_size):.2f} "
          f"steps/s (batch {preset.train.batch_size})")
    prompts = [f"emoji number {i}" for i in range(args.images // args.per_prompt)]
    n = len(prompts) * args.per_prompt
    variants = {f"pipeline loop, DDIM-{steps}": lambda g: pipeline_loop(pipe, prompts, args.per_prompt, steps, g),
                f"ours, DDIM-{steps}": lambda g: ours(pipe, prompts, args.per_prompt, steps, g, "ddim"),
                f"ours, DPM-Solver++-{args.fast_steps}":
                    lambda g: ours(pipe, prompts, args.per_prompt, args.fast_steps, g, "dpmsolver++")}
    base = next(iter(variants))
    print("| guidance | sampler | img/s (median, range) | ratio to the pipeline loop (median, range) |")
    print("|---|---|---|---|")
    for g in args.guidance:
        variants[base](g)  # warm-up: first-call allocations
        rates = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                rates[name].append(n / seconds(fn, g))
        for name, r in rates.items():
            ratios = [a / b for a, b in zip(r, rates[base], strict=True)]
            print(f"| {g:g} | {name} | {statistics.median(r):.2f} ({min(r):.2f}–{max(r):.2f}) | "
                  f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |", flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
