"""Figures built from saved results."""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

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


def pair_image(generated: np.ndarray, training: np.ndarray, scale: int) -> Image.Image:
    """Generation beside its training match, enlarged so a reader can compare them."""
    gap = np.full((generated.shape[0], 2, 3), 255, np.uint8)
    strip = Image.fromarray(np.concatenate([generated, gap, training], axis=1))
    return strip.resize((strip.width * scale, strip.height * scale), Image.Resampling.NEAREST)


def pairs_grid(generated: np.ndarray, training: np.ndarray, out: Path, columns: int = 6, scale: int = 4) -> Path:
    """Many generation|training pairs in one picture (row-major), for looking at what a count counts."""
    h, w = generated.shape[1:3]
    cell_w, pad = 2 * w + 2, 4
    rows = max(1, -(-len(generated) // columns))
    grid = np.full((rows * (h + pad), columns * (cell_w + pad), 3), 255, np.uint8)
    for i, (gen, ref) in enumerate(zip(generated, training, strict=True)):
        y, x = (i // columns) * (h + pad), (i % columns) * (cell_w + pad)
        grid[y: y + h, x: x + w] = gen
        grid[y: y + h, x + w + 2: x + cell_w] = ref
    picture = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST)
    write_atomic(out, lambda tmp: picture.save(tmp, format="PNG"))
    return out


def pair_strip(generated: np.ndarray, training: np.ndarray, out: Path, scale: int = 8) -> Path:
    strip = pair_image(generated, training, scale)
    write_atomic(out, lambda tmp: strip.save(tmp, format="PNG"))
    return out


def roc_figure(table: pd.DataFrame, columns: list[str], out: Path) -> Path:
    """ROC curves on log-log axes, where the low-FPR regime that matters for privacy is visible."""
    from sklearn.metrics import roc_curve

    fig, ax = _plt().subplots(figsize=(5, 5))
    for col in columns:
        fpr, tpr, _ = roc_curve(table["label"], table[col])
        ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4), label=col.removeprefix("score_"))
    ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=1, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(1e-3, 1), ylim=(1e-3, 1), xlabel="false-positive rate",
           ylabel="true-positive rate", title="Membership inference ROC")
    ax.legend(fontsize=8)
    return _save(fig, out)


BAND_ALPHA = 0.15  # shading of a 95% band behind its line


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    write_atomic(out, lambda tmp: fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight"))
    _plt().close(fig)
    return out


def dup_rate_figure(by_dup: list[dict], out: Path) -> Path:
    """Extraction rate per duplication bucket, with exact 95% intervals."""
    plt = _plt()
    frame = pd.DataFrame(by_dup)
    fig, ax = plt.subplots(figsize=(5.5, 2.6))
    x = np.arange(len(frame))
    err = np.vstack([frame["rate"] - frame["ci_low"], frame["ci_high"] - frame["rate"]])
    ax.bar(x, frame["rate"] * 100, color="#c0392b", alpha=0.8)
    ax.errorbar(x, frame["rate"] * 100, yerr=err * 100, fmt="none", ecolor="k", capsize=3)
    ax.set_xticks(x, [f"{b}\n(n={n})" for b, n in zip(frame["dup_bucket"], frame["prompts"], strict=True)],
                  fontsize=7)
    ax.set(ylabel="% of captions copied", xlabel="copies of the picture in the training data", ylim=(0, 105))
    return _save(fig, out)


def arms_figure(arms: pd.DataFrame, out: Path, labels: list[str] | None = None) -> Path:
    """Extraction rate per arm with its 95% interval; the base model first, as the reference line. `labels` name the
    arms in a reader's words; the axis ends just past the largest upper bound."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 0.6 + 0.3 * len(arms)))
    y = np.arange(len(arms))[::-1]
    # A cluster-bootstrap interval need not contain the ratio's point estimate: draw what lies on each side of it.
    ax.errorbar(arms["rate"] * 100, y, xerr=[(arms["rate"] - arms["ci_low"]).clip(lower=0) * 100,
                                             (arms["ci_high"] - arms["rate"]).clip(lower=0) * 100], fmt="o",
                color="#2c3e50", capsize=3)
    ax.axvline(arms["rate"].iloc[0] * 100, color="#c0392b", ls=":", lw=1)
    ax.set_yticks(y, labels or arms["arm"], fontsize=7)
    top = min(100, 10 * np.ceil(arms["ci_high"].max() * 100 / 10 + 0.5))
    ax.set(xlabel="share of captions that gave back their training picture, % (95% range)", xlim=(0, top))
    return _save(fig, out)


def pairs_montage(pair_files: list[Path], out: Path, columns: int = 3) -> Path | None:
    """Several generation|training strips in one picture."""
    if not pair_files:
        return None
    strips = [np.asarray(Image.open(p).convert("RGB")) for p in pair_files]
    h, w = strips[0].shape[:2]
    rows = -(-len(strips) // columns)
    head, gap = 14, 16  # a label line above each pair; white space and a grey frame between pairs
    canvas = np.full((rows * (h + head + gap), columns * (w + gap), 3), 255, np.uint8)
    for i, s in enumerate(strips):
        r, c = divmod(i, columns)
        y, x = r * (h + head + gap) + head, c * (w + gap) + gap // 2
        canvas[y - 1: y + h + 1, x - 1: x + w + 1] = 170
        canvas[y: y + h, x: x + w] = s
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for i in range(len(strips)):
        r, c = divmod(i, columns)
        y, x = r * (h + head + gap), c * (w + gap) + gap // 2
        draw.text((x, y), "generated", fill=(60, 60, 60))
        draw.text((x + w // 2, y), "training", fill=(60, 60, 60))
    write_atomic(out, lambda tmp: picture.save(tmp, format="PNG"))
    return out


def exposure_figure(exposure: pd.DataFrame, out: Path) -> Path:
    """AUC (with its 95% interval) of each attack against epochs per training image."""
    fig, ax = _plt().subplots(figsize=(5.5, 3.8))
    for attack, rows in exposure.groupby("attack", sort=False):
        line = ax.plot(rows["epochs"], rows["auc"], marker="o", label=attack)[0]
        ax.fill_between(rows["epochs"], rows["auc_low"], rows["auc_high"], color=line.get_color(), alpha=BAND_ALPHA)
    ax.axhline(0.5, color="k", ls=":", lw=1, label="chance")
    ax.set(xscale="log", ylim=(0, 1.02), xlabel="epochs per training image", ylabel="membership AUC",
           title="How much training makes membership visible")
    ax.legend(fontsize=8)
    return _save(fig, out)


def delta_figure(curves: dict[str, list[dict]], chosen: float, out: Path) -> Path:
    """Rate of prompts within each copy threshold delta, one line per curve (probe, oracle, never-trained null) with
    its 95% band, and the study's delta marked: how much a headline rests on the threshold."""
    fig, ax = _plt().subplots(figsize=(5.5, 3.2))
    for name, rows in curves.items():
        frame = pd.DataFrame(rows)
        line = ax.plot(frame["delta"], frame["rate"] * 100, marker="o", ms=3, label=name)[0]
        ax.fill_between(frame["delta"], frame["ci_low"] * 100, frame["ci_high"] * 100, color=line.get_color(),
                        alpha=BAND_ALPHA)
    ax.axvline(chosen, color="k", ls=":", lw=1, label=f"study delta {chosen:g}")
    ax.set(xlabel="copy threshold delta (tiled RMS on [0, 1] pixels)", ylabel="% of prompts within delta (95% CI)",
           ylim=(0, 102))
    ax.legend(fontsize=8)
    return _save(fig, out)
