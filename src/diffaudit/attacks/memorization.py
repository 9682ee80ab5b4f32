"""Ground-truth memorization: does a caption's generation reproduce that caption's own training image?

This is the oracle view (it knows which image each caption was trained with), used to show that the
model memorizes and to score the black-box extraction probe against the truth.
"""

import numpy as np
import pandas as pd

from diffaudit.attacks.distance import rms_distance, tiled_rms_distance
from diffaudit.data.imagefolder import ImageDataset

# Carlini et al. 2023 §4.2: a generation is a copy when its (normalised) L2 distance is below 0.15.
DELTA = 0.15


def target_prompts(data: ImageDataset, n_singletons: int, seed: int = 0) -> pd.DataFrame:
    """One prompt per duplicated member image (its most frequent caption) plus a random sample of
    singletons as the control group."""
    members = data.table[data.table["split"] == "member"]
    per_image = (members.groupby(["sha256", "text"]).size().rename("n").reset_index()
                 .sort_values(["sha256", "n", "text"], ascending=[True, False, True])
                 .drop_duplicates("sha256"))
    info = members.drop_duplicates("sha256").set_index("sha256")[["dup_count", "dup_kind", "dup_group"]]
    prompts = per_image.join(info, on="sha256").drop(columns="n")
    dup = prompts[prompts["dup_count"] > 1]
    singles = prompts[prompts["dup_count"] == 1]
    rng = np.random.default_rng(seed)
    singles = singles.iloc[np.sort(rng.choice(len(singles), min(n_singletons, len(singles)), replace=False))]
    return pd.concat([dup, singles]).rename(columns={"text": "prompt"}).reset_index(drop=True)


def memorization_scores(images: np.ndarray, index: pd.DataFrame, data: ImageDataset,
                        delta: float = DELTA) -> pd.DataFrame:
    """Per prompt: the closest generation to any training image trained with that caption (plain and
    tiled RMS), the share of generations within `delta`, and whether any is (`hit`)."""
    members = data.table["split"].to_numpy() == "member"
    by_caption: dict[str, np.ndarray] = {}
    for text, group in data.table[members].groupby("text"):
        by_caption[text] = np.unique(data.images[group.index.to_numpy()], axis=0)
    rows = []
    for prompt, group in index.groupby("prompt", sort=False):
        gens = images[group.index.to_numpy()]
        refs = by_caption.get(prompt)
        if refs is None:
            continue
        rms = rms_distance(gens[:, None], refs[None]).min(1)
        tiled = tiled_rms_distance(gens[:, None], refs[None]).min(1)
        rows.append({"prompt": prompt, "generations": len(gens), "min_rms": float(rms.min()),
                     "min_tiled_rms": float(tiled.min()), "share_within": float((rms < delta).mean()),
                     "hit": bool(rms.min() < delta)})
    return pd.DataFrame(rows)
