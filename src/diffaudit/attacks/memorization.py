"""Ground-truth memorization: does a caption's generation copy that caption's own training image?

This is the oracle view (it knows which image each caption was trained with), used to show that the
model memorizes and to score the black-box probe against the truth. The copy test is `attacks.copies`.
"""

import numpy as np
import pandas as pd

from diffaudit.attacks.copies import match_generations, per_prompt_verdicts
from diffaudit.data.imagefolder import ImageDataset


def target_prompts(data: ImageDataset, n_singletons: int, seed: int = 0) -> pd.DataFrame:
    """One prompt per duplicated member image (its most frequent caption) plus a random sample of singletons
    alone in their family and under a caption of their own (no exact copy, no near-duplicate sibling, no shared
    caption) as the control group."""
    members = data.table[data.table["split"] == "member"]
    per_image = (members.groupby(["sha256", "text"]).size().rename("n").reset_index()
                 .sort_values(["sha256", "n", "text"], ascending=[True, False, True])
                 .drop_duplicates("sha256"))
    info = members.drop_duplicates("sha256").set_index("sha256")[
        ["dup_count", "family_count", "family", "dup_kind", "dup_group"]]
    prompts = per_image.join(info, on="sha256").drop(columns="n")
    dup = prompts[prompts["dup_count"] > 1]
    captions = members["text"].value_counts()
    singles = prompts[(prompts["dup_count"] == 1) & (prompts["family_count"] == 1)
                      & (prompts["text"].map(captions) == 1)]
    rng = np.random.default_rng(seed)
    singles = singles.iloc[np.sort(rng.choice(len(singles), min(n_singletons, len(singles)), replace=False))]
    return pd.concat([dup, singles]).rename(columns={"text": "prompt"}).reset_index(drop=True)


def nonmember_prompts(data: ImageDataset, n: int, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Never-trained captions (family-disjoint from the members) and their own unseen images: the model null."""
    held = data.split("nonmember")
    rows = np.sort(np.random.default_rng(seed).choice(len(held), min(n, len(held)), replace=False))
    table = held.table.iloc[rows].drop_duplicates("text")
    return table[["text"]].rename(columns={"text": "prompt"}).reset_index(drop=True), {
        t: held.images[i] for t, i in zip(table["text"], table.index, strict=True)}


def memorization_scores(images: np.ndarray, index: pd.DataFrame, data: ImageDataset, delta: float) -> pd.DataFrame:
    """Per prompt: memorized (a generation copies its own image), family and other hits, the closest
    distances, and the share of generations that copy the own image."""
    matches = match_generations(images, index, data.split("member"), delta)
    share = (matches["own_distance"] < delta).groupby(matches["prompt"], sort=False).mean().rename("share_within")
    return per_prompt_verdicts(matches, delta).join(share, on="prompt").assign(
        generations=lambda f: f["prompt"].map(matches.groupby("prompt").size()))


def caption_following(images: np.ndarray, index: pd.DataFrame) -> dict:
    """How much the caption, not the seed, decides the picture: mean distance between same-seed generations of
    different captions over that between same-caption generations of different seeds (>= 1: the caption
    matters more). Plain RMS on [0,1] pixels, as a perceptual stand-in."""
    flat = images.astype(np.float32).reshape(len(images), -1) / 255
    prompts, seeds = index["prompt"].to_numpy(), index["seed"].to_numpy()

    def mean_pairwise(groups: np.ndarray) -> float:
        out = []
        for g in np.unique(groups):
            x = flat[groups == g]
            if len(x) > 1:
                norms = (x**2).sum(1)
                sq = np.maximum(norms[:, None] + norms[None] - 2 * x @ x.T, 0) / x.shape[1]
                out.append(np.sqrt(sq[np.triu_indices(len(x), 1)]).mean())
        return float(np.mean(out))

    across_captions, across_seeds = mean_pairwise(seeds), mean_pairwise(prompts)
    return {"same_seed_other_caption": across_captions, "same_caption_other_seed": across_seeds,
            "ratio": across_captions / across_seeds}
