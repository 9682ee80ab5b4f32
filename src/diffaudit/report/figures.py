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


def roc_figure(table: pd.DataFrame, columns: list[str], out: Path) -> Path:
    """ROC curves on log-log axes, where the low-FPR regime that matters for privacy is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for col in columns:
        fpr, tpr, _ = roc_curve(table["label"], table[col])
        ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4), label=col.removeprefix("score_"))
    ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=1, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(1e-3, 1), ylim=(1e-3, 1), xlabel="false-positive rate",
           ylabel="true-positive rate", title="Membership inference ROC")
    ax.legend(fontsize=8)
    write_atomic(out, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return out
