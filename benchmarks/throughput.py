"""Train steps/s and sampling images/s per preset, our sampler against a plain diffusers loop, peak RSS.

Ratios are measured in one run on one machine. The plain loop is what a user writes from the diffusers
docs: one prompt's samples per batch, separate unconditional and conditional UNet calls, `no_grad`,
default memory format. Usage: python benchmarks/throughput.py [--presets quick full] [--images 128]
"""

import argparse
import resource
import time

import torch
from diffusers import DDIMScheduler

from diffaudit.config import PRESETS
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


def plain_loop(pipe: AuditPipeline, cond: torch.Tensor, uncond: torch.Tensor, per_prompt: int, steps: int,
               guidance: float) -> None:
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    with torch.no_grad():
        for p in range(0, len(cond), per_prompt):
            c = cond[p: p + per_prompt]
            x = initial_noise(pipe, list(range(len(c))))
            sched.set_timesteps(steps)
            for t in sched.timesteps:
                eps_u = pipe.unet(x, t, encoder_hidden_states=uncond.expand_as(c)).sample
                eps_c = pipe.unet(x, t, encoder_hidden_states=c).sample
                x = sched.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample


def seconds(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["quick", "full"])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--per-prompt", type=int, default=16)
    parser.add_argument("--guidance", type=float, default=3.0)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name in args.presets:
        preset = PRESETS[name]
        pipe = build_pipeline(preset.model, preset.data.resolution)
        steps = preset.sample.steps
        prompts = [f"emoji number {i}" for i in range(args.images // args.per_prompt)]
        cond = pipe.encode_text([p for p in prompts for _ in range(args.per_prompt)])
        uncond = pipe.encode_text([""])
        n = len(cond)
        train_rate = train_steps_per_s(pipe, preset.train.batch_size)
        plain = n / seconds(plain_loop, pipe, cond, uncond, args.per_prompt, steps, args.guidance)
        ours = n / seconds(sample, pipe, cond, list(range(n)), args.guidance, steps,
                           batch_size=preset.sample.batch_size)
        print(f"{name}: {preset.data.resolution}px, train {train_rate:.2f} steps/s (batch {preset.train.batch_size});"
              f" sampling DDIM-{steps} g={args.guidance}: ours {ours:.1f} img/s, plain diffusers loop "
              f"{plain:.1f} img/s, ratio {ours / plain:.2f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
