"""Is "higher guidance stops copying" a property of guidance or of the sampler? The study samples with DDIM,
which inherits the training scheduler's `clip_sample=True` and so clamps its x_0 estimate to [-1, 1] at every
step; under classifier-free guidance that estimate overshoots. Same model, prompts (the study's 96 attacked
captions) and seeds: DDIM-25 as the study runs it, DDIM-25 without the clamp, and DPM-Solver++-10 (no clamp).
Prints the captions with a generation within delta of their own training image, and writes a grid: per row a
memorized caption; columns training image, then each sampler at guidance 3 and 7.5 (seed 0).
Usage: python benchmarks/guidance_clipping.py --run runs/quick4 --model models/quick
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from diffaudit.config import CARLINI_DELTA, UNET_ROWS
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.measure.distance import copy_distance
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import sample

SAMPLERS = (("ddim", 25), ("ddim-unclamped", 25), ("dpmsolver++", 10))  # the first clamps x_0 at every step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--grid", type=Path, default=Path("benchmarks/guidance_clipping_grid.png"))
    args = parser.parse_args()
    pipe = AuditPipeline.from_pretrained(args.model)
    members = load_imagefolder(args.run / "data").split("member")
    attacked = pd.read_parquet(args.run / "seed0" / "base" / "extraction" / "per_prompt.parquet")
    prompts = attacked["prompt"].tolist()
    text = members.table["text"].to_numpy()
    own = np.stack([members.images[np.flatnonzero(text == p)[0]] for p in prompts])
    cond = pipe.encode_text([p for p in prompts for _ in range(args.seeds)])
    seeds = list(range(args.seeds)) * len(prompts)
    print(f"model {pipe.model_hash()}, {len(prompts)} attacked captions x {args.seeds} seeds, delta {CARLINI_DELTA}")
    print("| guidance | sampler | clamps x_0 | captions with a copy of their own image | median closest distance | "
          "pixels at 0 or 255 |")
    print("|---|---|---|---|---|---|")
    shown = {}
    for g in (1.0, 3.0, 7.5):
        for sampler, steps in SAMPLERS:
            images = sample(pipe, cond, seeds, g, steps, sampler, batch_size=UNET_ROWS)
            dist = copy_distance(images.reshape(len(prompts), args.seeds, *images.shape[1:]), own[:, None]).min(1)
            shown[(g, sampler)] = images[:: args.seeds]
            clamps = "yes" if sampler == "ddim" else "no"
            print(f"| {g:g} | {sampler}-{steps} | {clamps} | {(dist < CARLINI_DELTA).sum()}/{len(prompts)} | "
                  f"{np.median(dist):.3f} | {np.isin(images, [0, 255]).mean():.1%} |", flush=True)
    rows = np.flatnonzero(attacked["memorized"].to_numpy())[:8]
    columns = [own[rows]] + [shown[(g, s)][rows] for g in (3.0, 7.5) for s, _ in SAMPLERS]
    grid = np.concatenate([np.concatenate(list(col), 0) for col in columns], 1)
    Image.fromarray(grid).resize((grid.shape[1] * 6, grid.shape[0] * 6), Image.Resampling.NEAREST).save(args.grid)
    print(f"grid: {args.grid} (columns: training image; guidance 3: DDIM clamped, DDIM unclamped, DPM-Solver++; "
          "the same at guidance 7.5)")


if __name__ == "__main__":
    main()
