"""Figures built from saved results."""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from diffaudit.io import write_atomic


def sample_grid(images: np.ndarray, index: pd.DataFrame, references: dict[str, np.ndarray], prompts: list[str],
                out: Path, per_row: int = 8, scale: int = 4) -> Path:
    """One row per prompt: its training image (left, after a gap), then `per_row` generations."""
    h, w = images.shape[1:3]
    pad = 2
    grid = np.full((len(prompts) * (h + pad), (per_row + 1) * (w + pad) + pad * 2, 3), 255, np.uint8)
    for r, prompt in enumerate(prompts):
        y = r * (h + pad)
        if prompt in references:
            grid[y: y + h, :w] = references[prompt]
        gens = images[index.index[index["prompt"] == prompt][:per_row]]
        for c, gen in enumerate(gens):
            x = (c + 1) * (w + pad) + pad * 2
            grid[y: y + h, x: x + w] = gen
    picture = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST)
    write_atomic(out, lambda tmp: picture.save(tmp, format="PNG"))
    return out


def pair_strip(generated: np.ndarray, training: np.ndarray, out: Path, scale: int = 8) -> Path:
    """Generation beside its training match, enlarged so a reader can compare them."""
    gap = np.full((generated.shape[0], 2, 3), 255, np.uint8)
    strip = Image.fromarray(np.concatenate([generated, gap, training], axis=1))
    strip = strip.resize((strip.width * scale, strip.height * scale), Image.Resampling.NEAREST)
    write_atomic(out, lambda tmp: strip.save(tmp, format="PNG"))
    return out
