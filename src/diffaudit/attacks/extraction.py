"""Carlini et al. 2023 extraction probe: many generations per prompt, a clique filter, then a match
against the training set.

Black-box in spirit: the filter sees only generations; the training set is used only to confirm what
the filter flags (as Carlini did), and, separately, by an oracle that gives the true memorized set.
"""

import math
from dataclasses import asdict, dataclass

import networkx as nx
import numpy as np
import pandas as pd

from diffaudit.attacks.distance import tiled_rms_distance
from diffaudit.attacks.metrics import clopper_pearson
from diffaudit.attacks.neighbours import TrainingIndex


@dataclass(frozen=True)
class ExtractionConfig:
    # Carlini et al. 2023 §4.2: (l2, delta)-extraction with delta = 0.15 on [0,1] pixels, tiled distance.
    delta: float = 0.15
    # Edge threshold between two generations of one prompt; Carlini use the same tiled distance.
    edge_threshold: float = 0.15
    # Carlini flag a prompt when >= 10 of 500 generations form a clique; we scale 10/500 with N but floor
    # at 3, since at CPU-sized N a 2-clique would be a single coincidence.
    clique_fraction: float = 10 / 500
    min_clique: int = 3

    def clique_size(self, n: int) -> int:
        return max(self.min_clique, math.ceil(self.clique_fraction * n))


def largest_clique(images: np.ndarray, threshold: float) -> list[int]:
    """Largest set of generations that are all pairwise within `threshold` (tiled RMS)."""
    d = tiled_rms_distance(images[:, None], images[None])
    graph = nx.Graph()
    graph.add_nodes_from(range(len(images)))
    graph.add_edges_from(zip(*np.nonzero(np.triu(d < threshold, k=1)), strict=True))
    return max(nx.find_cliques(graph), key=len)


def probe(images: np.ndarray, index: pd.DataFrame, train_images: np.ndarray, train_dup: np.ndarray,
          cfg: ExtractionConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the probe per prompt. Returns (per-prompt table, extracted pairs table).

    A flagged prompt's clique members are matched to their nearest training image; the training image
    counts as extracted when a member lies within `delta` of it. `train_dup` gives each training image's
    copy count (Carlini's eidetic k).
    """
    nn = TrainingIndex(train_images)
    prompts, pairs = [], []
    for prompt, group in index.groupby("prompt", sort=False):
        gens = images[group.index.to_numpy()]
        clique = largest_clique(gens, cfg.edge_threshold)
        flagged = len(clique) >= cfg.clique_size(len(gens))
        extracted: set[int] = set()
        if flagged:
            ids, dists = nn.search(gens[clique])
            for member, tid, dist in zip(clique, ids, dists, strict=True):
                if dist < cfg.delta:
                    extracted.add(int(tid))
                    pairs.append({"prompt": prompt, "sample": int(group.index[member]), "train_idx": int(tid),
                                  "distance": float(dist), "eidetic_k": int(train_dup[tid])})
        prompts.append({"prompt": prompt, "generations": len(gens), "clique": len(clique), "flagged": flagged,
                        "extracted_images": len(extracted)})
    pair_table = pd.DataFrame(pairs, columns=["prompt", "sample", "train_idx", "distance", "eidetic_k"])
    return pd.DataFrame(prompts), pair_table


def oracle(images: np.ndarray, index: pd.DataFrame, train_images: np.ndarray, delta: float) -> pd.DataFrame:
    """The true memorized set: compare every generation with the whole training set."""
    ids, dists = TrainingIndex(train_images).search(images)
    frame = index[["prompt"]].assign(train_idx=ids, distance=dists)
    per_prompt = frame.groupby("prompt", sort=False)["distance"].min().rename("oracle_min_distance").reset_index()
    per_prompt["memorized"] = per_prompt["oracle_min_distance"] < delta
    return per_prompt


def summarize(per_prompt: pd.DataFrame, pairs: pd.DataFrame, cfg: ExtractionConfig) -> dict:
    """Extraction-success rate = unique extracted training images / attacked prompts, with its 95% interval;
    plus precision/recall of the probe's flagged-and-confirmed prompts against the oracle."""
    n = len(per_prompt)
    unique = pairs["train_idx"].nunique()
    low, high = clopper_pearson(min(unique, n), n)
    found = per_prompt["extracted_images"] > 0
    summary = {"attacked_prompts": n, "extracted_images": int(unique), "rate": unique / n if n else 0.0,
               "ci_low": low, "ci_high": high, "flagged_prompts": int(per_prompt["flagged"].sum()),
               "config": asdict(cfg)}
    if "memorized" in per_prompt:
        truth = per_prompt["memorized"]
        tp = int((found & truth).sum())
        summary |= {"oracle_memorized_prompts": int(truth.sum()), "probe_true_positives": tp,
                    "precision": tp / int(found.sum()) if found.any() else float("nan"),
                    "recall": tp / int(truth.sum()) if truth.any() else float("nan")}
    return summary
