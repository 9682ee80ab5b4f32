"""Carlini et al. 2023 extraction probe: many generations per prompt, a clique filter, then a match
against the training set.

Black-box in spirit: the filter sees only generations; the training set is used only to confirm what
the filter flags (as Carlini did), and, separately, by an oracle that gives the true memorized set. Both
use the one copy test of `attacks.copies`.
"""

import math
from dataclasses import asdict, dataclass

import networkx as nx
import numpy as np
import pandas as pd

from diffaudit.attacks.copies import matched_image
from diffaudit.attacks.metrics import clopper_pearson
from diffaudit.config import CARLINI_DELTA, ProbeConfig
from diffaudit.measure.distance import copy_distance


@dataclass(frozen=True)
class ExtractionConfig:
    delta: float = CARLINI_DELTA  # the copy threshold (calibrated by the study against the model null)
    edge_threshold: float = CARLINI_DELTA  # between two generations of one prompt; Carlini use the same distance
    # Carlini flag a prompt when >= 10 of 500 generations form a clique; we scale 10/500 with N but floor
    # at 3, since at CPU-sized N a 2-clique would be a single coincidence.
    clique_fraction: float = 10 / 500
    min_clique: int = 3

    @classmethod
    def at(cls, delta: float, settings: ProbeConfig) -> "ExtractionConfig":
        """The probe as configured (`[extraction]`) at a copy threshold chosen elsewhere (calibrated, or given)."""
        return cls(delta=delta, edge_threshold=settings.edge_threshold, min_clique=settings.min_clique)

    def clique_size(self, n: int) -> int:
        return max(self.min_clique, math.ceil(self.clique_fraction * n))


def largest_clique(images: np.ndarray, threshold: float) -> list[int]:
    """Largest set of generations that are all pairwise within `threshold` (the copy distance)."""
    d = copy_distance(images[:, None], images[None])
    graph = nx.Graph()
    graph.add_nodes_from(range(len(images)))
    graph.add_edges_from(zip(*np.nonzero(np.triu(d < threshold, k=1)), strict=True))
    return max(nx.find_cliques(graph), key=len)


def cliques(images: np.ndarray, index: pd.DataFrame, threshold: float) -> np.ndarray:
    """Per generation, the size of its prompt's largest clique if the generation belongs to it, else 0."""
    size = np.zeros(len(images), dtype=int)
    for _, group in index.groupby("prompt", sort=False):
        rows = group.index.to_numpy()
        members = rows[largest_clique(images[rows], threshold)]
        size[members] = len(members)
    return size


def probe(matches: pd.DataFrame, clique: np.ndarray, cfg: ExtractionConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The black-box probe per prompt, confirmed by the copy test. Returns (per-prompt table, pairs).

    A prompt is flagged when its largest clique reaches `clique_size(N)`; its clique members are then
    compared with the training set (as Carlini did) and each copy is a pair, labelled own / family / other.
    A prompt is *extracted* when a flagged generation copies its own training image."""
    m = matches.assign(clique=clique)
    n = m.groupby("prompt", sort=False)["sample"].transform("size")
    m["flagged"] = m.groupby("prompt", sort=False)["clique"].transform("max") >= [cfg.clique_size(k) for k in n]
    confirmed = m[m["flagged"] & (m["clique"] > 0)]
    pairs = confirmed[confirmed["kind"] != "none"].copy()
    pairs["train_idx"], pairs["distance"] = matched_image(pairs)
    per_prompt = m.groupby("prompt", sort=False).agg(generations=("sample", "size"), clique=("clique", "max"),
                                                     flagged=("flagged", "first")).reset_index()
    for kind in ("own", "family", "other"):
        hit = pairs.loc[pairs["kind"] == kind].groupby("prompt")["train_idx"].nunique()
        per_prompt[f"{kind}_images"] = per_prompt["prompt"].map(hit).fillna(0).astype(int)
    per_prompt["extracted"] = per_prompt["own_images"] > 0
    return per_prompt, pairs[["prompt", "sample", "train_idx", "kind", "distance"]].reset_index(drop=True)


def distinct_copies(train_idx: pd.Series, members: pd.DataFrame) -> tuple[int, int]:
    """How many distinct training images, and subjects (families), a set of copies covers: several captions and
    generations can land on one picture, and a reader counts pictures and subjects, not matches."""
    rows = train_idx.to_numpy(dtype=int)
    return int(members["sha256"].iloc[rows].nunique()), int(members["family"].iloc[rows].nunique())


def summarize(per_prompt: pd.DataFrame, pairs: pd.DataFrame, members: pd.DataFrame, cfg: ExtractionConfig) -> dict:
    """The extraction rate is prompts whose flagged generations copy their own image / attacked prompts, a binomial
    proportion with its exact 95% interval; unique images and families (subjects) are counted beside it, per
    match kind, since several prompts can land on one subject. Against the oracle: the clique filter's precision
    and the probe's recall."""
    n = len(per_prompt)
    k = int(per_prompt["extracted"].sum())
    low, high = clopper_pearson(k, n)
    summary = {"attacked_prompts": n, "prompts_with_copy": k, "rate": k / n if n else 0.0, "ci_low": low,
               "ci_high": high, "flagged_prompts": int(per_prompt["flagged"].sum()), "config": asdict(cfg)}
    for kind in ("own", "family", "other"):
        summary[f"{kind}_images"], summary[f"{kind}_families"] = distinct_copies(
            pairs[pairs["kind"] == kind]["train_idx"], members)
        summary[f"{kind}_prompts"] = int((per_prompt[f"{kind}_images"] > 0).sum())
    summary["extracted_images"], summary["extracted_families"] = summary["own_images"], summary["own_families"]
    if "memorized" in per_prompt:
        # Confirmed prompts are memorized by construction (same copy test, fewer generations), so precision is
        # the clique filter's own: of the prompts it flags without training data, how many truly memorize.
        truth, found, flagged = per_prompt["memorized"], per_prompt["extracted"], per_prompt["flagged"]
        tp = int((found & truth).sum())
        summary |= {"oracle_memorized_prompts": int(truth.sum()), "oracle_family_hit_prompts":
                    int((per_prompt["family_hit"] & ~truth).sum()), "probe_true_positives": tp,
                    "precision": int((flagged & truth).sum()) / int(flagged.sum()) if flagged.any() else float("nan"),
                    "recall": tp / int(truth.sum()) if truth.any() else float("nan")}
        lo, hi = clopper_pearson(int(truth.sum()), n)
        summary |= {"oracle_rate": int(truth.sum()) / n if n else 0.0, "oracle_ci": [lo, hi]}
    return summary


def recall_sweep(matches: pd.DataFrame, index: pd.DataFrame, images: np.ndarray, memorized: pd.Series,
                 cfg: ExtractionConfig, sizes: tuple[int, ...] = (2, 3, 4, 6, 8),
                 samples: tuple[int, ...] = (4, 8, 16, 32, 64)) -> list[dict]:
    """Probe recall and flagged prompts as a function of generations per prompt N (the first N seeds) and of the
    clique size asked, so a reader sees what the study's rule buys. Recall is against the oracle of all the
    generations drawn (what the model owner finds), not of the first N."""
    rows = []
    seeds = index["seed"].to_numpy()
    for n in sorted({k for k in samples if k <= seeds.max() + 1} | {int(seeds.max()) + 1}):
        keep = seeds < n
        sub_index = index[keep].reset_index(drop=True)
        sub = matches[keep].reset_index(drop=True).assign(sample=lambda f: np.arange(len(f)))
        clique = cliques(images[keep], sub_index, cfg.edge_threshold)
        for size in sorted({*sizes, cfg.clique_size(n)}):
            if size > n:
                continue
            per_prompt, _ = probe(sub, clique, ExtractionConfig(cfg.delta, cfg.edge_threshold, 0.0, size))
            found = per_prompt.set_index("prompt")["extracted"]
            truth = memorized.reindex(found.index).fillna(False).astype(bool)
            rows.append({"samples_per_prompt": n, "clique_size": size, "flagged": int(per_prompt["flagged"].sum()),
                         "extracted": int(found.sum()), "recall": float((found & truth).sum() / truth.sum())
                         if truth.any() else float("nan"), "study_rule": size == cfg.clique_size(n)})
    return rows
