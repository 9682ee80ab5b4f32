"""The one copy test. Every caller (extraction probe, oracle, memorization benchmark, detectors' truth, viewer)
decides "is this generation a copy?" here, so the verdicts cannot drift apart.

A generation copies training image i when its tiled distance to i is below delta (Carlini et al. 2023 §4.2).
A caption is memorized when a generation copies an image that caption was trained with (its *own* image);
copies of another image of the same near-duplicate family are *family* hits, copies of any other training
image *other* hits. delta is not taken on faith: it is read against two nulls, measured on never-trained data.
"""

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from diffaudit.attacks.metrics import clopper_pearson
from diffaudit.config import CARLINI_DELTA
from diffaudit.measure.distance import copy_distance
from diffaudit.measure.neighbours import TrainingIndex

if TYPE_CHECKING:
    from diffaudit.data.imagefolder import ImageDataset

KINDS = ("own", "family", "other", "none")  # a generation's verdict, strongest first
# Sensitivity grid: how much a headline depends on the threshold (Carlini's delta at the top).
DELTA_GRID = (0.03, 0.04, 0.05, 0.06, 0.08, 0.10, 0.12, CARLINI_DELTA)
# Gu et al. 2023: a generation replicates when nearest / second-nearest training distance < 1/3.
GU_RATIO = 1 / 3
# What the copy test may miss: the nearest training picture is the caption's own, far nearer than any other (a Gu ratio
# at or below this), yet above delta (and below MISS_FACTOR x delta), e.g. a copy with a speckled background.
MISS_RATIO = 0.2
MISS_FACTOR = 2.0


def closest(gens: np.ndarray, refs: np.ndarray, ref_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per generation, (id of the closest reference, its distance); (-1, inf) when there is no reference."""
    if len(refs) == 0:
        return np.full(len(gens), -1), np.full(len(gens), np.inf, dtype=np.float32)
    d = copy_distance(gens[:, None], refs[None])
    best = d.argmin(1)
    return ref_ids[best], d[np.arange(len(gens)), best]


def verdict(own: np.ndarray, family: np.ndarray, nearest: np.ndarray, delta: float) -> np.ndarray:
    """Per generation: own image copied, else a family sibling, else another training image, else none."""
    return np.select([own < delta, family < delta, nearest < delta], list(KINDS[:3]), KINDS[3])


def match_generations(images: np.ndarray, index: pd.DataFrame, members: "ImageDataset", delta: float,
                      candidates: int = 32) -> pd.DataFrame:
    """One row per generation: nearest training image (any), the closest of the prompt's own image(s) and of
    the rest of their families, the Gu ratio (second-nearest taken outside the nearest image's family) and
    the verdict at `delta`. Prompts that were never training captions have no own image (distance inf).
    Image ids are row numbers of `members`."""
    table = members.table
    family = table["family"].to_numpy()
    first = ~table["sha256"].duplicated().to_numpy()  # one row per distinct image
    distinct = np.flatnonzero(first)  # candidates among distinct images, so copies cannot crowd out the second
    ids = distinct[TrainingIndex(members.images[distinct]).candidates(images, candidates)]
    dists = copy_distance(images[:, None], members.images[ids])
    order = np.argsort(dists, axis=1, kind="stable")
    ids, dists = np.take_along_axis(ids, order, 1), np.take_along_axis(dists, order, 1)
    outside = family[ids] != family[ids[:, :1]]
    # No candidate outside the family: the ratio is unknown (NaN), never a replication by default.
    second = np.where(outside.any(1), dists[np.arange(len(ids)), outside.argmax(1)], np.nan)
    own_idx, own = np.full(len(images), -1), np.full(len(images), np.inf, dtype=np.float32)
    fam_idx, fam = own_idx.copy(), own.copy()
    text = table["text"].to_numpy()
    for prompt, group in index.groupby("prompt", sort=False):
        rows = group.index.to_numpy()
        mine = text == prompt
        if not mine.any():
            continue
        own_sha = table["sha256"].isin(set(table.loc[mine, "sha256"])).to_numpy()
        refs = np.flatnonzero(own_sha & first)
        kin = np.flatnonzero(np.isin(family, np.unique(family[mine])) & ~own_sha & first)
        own_idx[rows], own[rows] = closest(images[rows], members.images[refs], refs)
        fam_idx[rows], fam[rows] = closest(images[rows], members.images[kin], kin)
    nearest = dists[:, 0]
    return pd.DataFrame({
        "prompt": index["prompt"].to_numpy(), "sample": np.arange(len(images)), "nearest_idx": ids[:, 0],
        "nearest_distance": nearest, "own_idx": own_idx, "own_distance": own, "family_idx": fam_idx,
        "family_distance": fam, "gu_ratio": nearest / second, "kind": verdict(own, fam, nearest, delta)})


def matched_image(matches: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The training image a generation's verdict is about (its own image, the sibling, or the nearest) and
    the distance to it."""
    which = [matches["kind"] == "own", matches["kind"] == "family"]
    return (np.select(which, [matches["own_idx"], matches["family_idx"]], matches["nearest_idx"]),
            np.select(which, [matches["own_distance"], matches["family_distance"]], matches["nearest_distance"]))


def per_prompt_verdicts(matches: pd.DataFrame, delta: float) -> pd.DataFrame:
    """Per prompt: memorized (own image copied), family hit, other hit, and the closest distances."""
    m = matches.assign(own_hit=matches["own_distance"] < delta, family_hit=matches["family_distance"] < delta,
                       other_hit=(matches["nearest_distance"] < delta) & (matches["own_distance"] >= delta)
                       & (matches["family_distance"] >= delta), gu_hit=matches["gu_ratio"] < GU_RATIO)
    out = m.groupby("prompt", sort=False).agg(
        memorized=("own_hit", "any"), family_hit=("family_hit", "any"), other_hit=("other_hit", "any"),
        gu_hit=("gu_hit", "any"), oracle_min_distance=("own_distance", "min"),
        nearest_min_distance=("nearest_distance", "min")).reset_index()
    return out


def near_misses(matches: pd.DataFrame, delta: float, ratio: float | None = MISS_RATIO) -> pd.Series:
    """Per generation: a likely copy the test misses, for counting and looking at beside the rate: its closest training
    picture is the caption's own, between delta and MISS_FACTOR x delta, with a Gu ratio at or below `ratio` (None:
    any ratio; study.verdicts uses that, since speckle raises the distance to every picture alike)."""
    near = ((matches["kind"] != "own") & (matches["own_distance"] >= delta)
            & (matches["own_distance"] < MISS_FACTOR * delta) & (matches["nearest_idx"] == matches["own_idx"]))
    return near & (matches["gu_ratio"] <= ratio) if ratio is not None else near


def saturation(generated: np.ndarray, training: np.ndarray) -> np.ndarray:
    """Per pair: the share of pixels a generation pins at 0 or 255 where its training picture does not (OpenMoji's
    white backgrounds are 255 in the training picture itself, so they do not count)."""
    if len(generated) == 0:
        return np.zeros(0)
    pinned = ((generated == 0) | (generated == 255)).any(-1)
    free = ~((training == 0) | (training == 255)).all(-1)
    return (pinned & free).sum((1, 2)) / np.maximum(free.sum((1, 2)), 1)


def rate_by_delta(min_distance_per_prompt: pd.Series, grid: tuple[float, ...] = DELTA_GRID) -> list[dict]:
    """Share of prompts whose closest generation is within each delta of the grid, with 95% intervals."""
    d = min_distance_per_prompt.to_numpy()
    rows = []
    for delta in grid:
        k = int((d < delta).sum())
        low, high = clopper_pearson(k, len(d))
        rows.append({"delta": delta, "hits": k, "n": len(d), "rate": k / len(d) if len(d) else float("nan"),
                     "ci_low": low, "ci_high": high})
    return rows


def model_null(gens: np.ndarray, index: pd.DataFrame, own_images: dict[str, np.ndarray],
               grid: tuple[float, ...] = DELTA_GRID) -> list[dict]:
    """The floor every memorization rate is read against: for never-trained captions, the share with a
    generation within delta of their own never-seen image, per delta of the grid."""
    nearest = {p: float(copy_distance(gens[g.index.to_numpy()], own_images[p][None]).min())
               for p, g in index.groupby("prompt", sort=False)}
    return rate_by_delta(pd.Series(nearest), grid)


def calibrate_delta(null: list[dict], cap: float, target: float, bound: float) -> dict:
    """The largest delta (at most `cap`) whose model null is <= target with its upper 95% bound <= bound;
    if none qualifies, the smallest allowed delta of the grid, flagged as missing the target with the reason."""
    allowed = [r for r in null if r["delta"] <= cap] or [min(null, key=lambda r: r["delta"])]
    ok = [r for r in allowed if r["rate"] <= target and r["ci_high"] <= bound]
    chosen = max(ok, key=lambda r: r["delta"]) if ok else min(allowed, key=lambda r: r["delta"])
    n = chosen["n"]
    # With no hit at all, the exact upper bound is 1 - 0.025^(1/n): below `bound` only from this many captions.
    needed = int(np.ceil(np.log(0.025) / np.log(1 - bound))) if 0 < bound < 1 else 1
    return {"delta": chosen["delta"], "model_null": chosen, "target": target, "bound": bound, "met": bool(ok),
            "cap": cap, "captions_needed": needed,
            "reason": "met" if ok else f"too few never-trained captions ({n} < {needed}) to certify the bound"
            if n < needed else "no delta of the grid keeps the model null within the target"}
