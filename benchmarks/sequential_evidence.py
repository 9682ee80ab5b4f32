"""Why the sequential probe cannot stop early on this model (issue 33): how much its extracted captions show in their
first draws.

From the audited model's full pool (run benchmarks/sequential.py first; no new sampling):
0. Which seeds the copies come from, on the audited model and on the tuning model (another training seed): why the
   rule fits its seed order (attacks.sequential.seed_order) instead of drawing the seeds in an arbitrary one.
1. How many of each extracted caption's N draws copy its own picture (the copies any clique is made of).
2. The share of extracted captions with no copy among their first n draws, exactly, over every seed order
   (hypergeometric, from those counts): a rule has only non-copy evidence to keep these captions drawing.
3. How well that evidence separates them: the AUC of each statistic of a caption's first n draws (the closest pair,
   and the nearest own-picture distance, i.e. the copy test itself) between extracted captions with no copy yet and
   captions the full probe does not extract, pooled over K seed orders.
4. An optimistic frontier: for each statistic and one check after n draws, the cheapest threshold that keeps >= 95% of
   the extractions in every one of the K orders, *chosen on the audited model's own labels* (the shipped rule never
   is), so no rule of this kind, with one check, can do better on this pool.
Usage: python benchmarks/sequential_evidence.py --out runs/seq [--orders 10]
"""

import argparse
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
from sequential import TARGET_COST, TARGET_RECALL
from sklearn.metrics import roc_auc_score

from diffaudit.attacks.sequential import copies_per_seed
from diffaudit.study.extraction_audit import fit_inputs, full_probe_tables

CHECKS = (2, 3, 4, 6, 8)
STATISTICS = {"closest pair": ["closest"], "own-picture distance": ["own"], "both": ["closest", "own"]}


def prefixes(run: Path, order: list[int], matches: pd.DataFrame) -> pd.DataFrame:
    """Per caption and n, its first n draws (seeds in `order`): largest clique, closest pair, nearest own-picture
    distance (inf for a never-trained caption) and whether one of them copies it."""
    paths = fit_inputs(run, order)[0]
    rank = {seed: r + 1 for r, seed in enumerate(order)}
    own = matches.assign(drawn=matches["seed"].map(rank), copy=matches["kind"] == "own").sort_values("drawn")
    own["own"] = own.groupby("prompt")["own_distance"].cummin()
    own["copied"] = own.groupby("prompt")["copy"].cummax()
    return paths.drop(columns="copy").merge(own[["prompt", "drawn", "own", "copied"]], on=["prompt", "drawn"])


def frontier(at: pd.DataFrame, columns: list[str], n: int, budget: int) -> tuple[float, float] | None:
    """The cheapest one-check rule at n (stop a caption not yet confirmed when every column in `columns` exceeds its
    threshold; thresholds at one common quantile) keeping >= TARGET_RECALL of the extractions in every order: its
    quantile and cost share, or None."""
    open_ = at["clique"] < at["confirm"]
    best = None
    for q in np.linspace(0.0, 1.0, 201):
        stop = open_.copy()
        for column in columns:
            values = at[column].replace(np.inf, np.nan)
            stop &= at[column] > np.nanquantile(values, q)
        recall = 1 - (stop & at["extracted"]).groupby(at["order"]).sum() / at["extracted"].groupby(at["order"]).sum()
        cost = float(np.where(stop, n, budget).mean() / budget)
        if recall.min() >= TARGET_RECALL and (best is None or cost < best[1]):
            best = (float(q), cost)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/sequential"))
    parser.add_argument("--orders", type=int, default=10)
    args = parser.parse_args()
    run = args.out / "evaluated"
    summary, per_prompt, matches = full_probe_tables(run)
    budget, confirm = int(summary["samples_per_prompt"]), int(summary["clique_size_required"])
    extracted = per_prompt.set_index("prompt")["extracted"]
    copies = (matches[matches["kind"] == "own"].groupby("prompt").size().reindex(extracted[extracted].index)
              .fillna(0).astype(int))
    for name in ("evaluated", "tuning"):
        _, pp, m = full_probe_tables(args.out / name)
        copied = copies_per_seed(m, pp.set_index("prompt")["extracted"], budget)
        print(f"0. {name} model: of its {int(pp['extracted'].sum())} extracted captions, how many copied under each "
              f"seed: {copied.to_dict()}")
    print(f"1. own copies among {budget} draws, per extracted caption ({len(copies)}): "
          f"{copies.value_counts().sort_index().to_dict()}")
    blind = {n: float(np.mean([comb(budget - k, n) / comb(budget, n) for k in copies])) for n in CHECKS}
    print("2. extracted captions with no copy yet after n draws, over every seed order: "
          + ", ".join(f"n = {n}: {b:.0%}" for n, b in blind.items()))
    rng = np.random.default_rng(0)
    orders = [list(range(budget))] + [rng.permutation(budget).tolist() for _ in range(args.orders - 1)]
    pool = pd.concat([prefixes(run, order, matches).assign(order=i) for i, order in enumerate(orders)])
    pool = pool.assign(extracted=pool["prompt"].map(extracted), confirm=confirm)
    print(f"3. AUC, extracted captions with no copy yet vs captions not extracted, over {len(orders)} orders")
    print("| n | blind extracted (caption-orders) | closest pair | own-picture distance |")
    print("|---|---|---|---|")
    for n in CHECKS:
        at = pool[pool["drawn"] == n]
        no_copy = at[at["extracted"] & ~at["copied"]]
        negatives = at[~at["extracted"]]
        y = np.r_[np.ones(len(no_copy)), np.zeros(len(negatives))]
        aucs = [roc_auc_score(y, -np.r_[no_copy[c], negatives[c]].clip(max=10)) for c in ("closest", "own")]
        print(f"| {n} | {len(no_copy)} | {aucs[0]:.2f} | {aucs[1]:.2f} |")
    print(f"4. optimistic one-check frontier (thresholds chosen on the audited labels; >= {TARGET_RECALL:.0%} of the "
          f"extractions kept in each of {len(orders)} orders; target cost <= {TARGET_COST:.0%})")
    print("| statistic | " + " | ".join(f"check at n = {n}" for n in CHECKS) + " |")
    print("|---|" + "---|" * len(CHECKS))
    for name, columns in STATISTICS.items():
        cells = []
        for n in CHECKS:
            best = frontier(pool[pool["drawn"] == n].reset_index(drop=True), columns, n, budget)
            cells.append("none" if best is None else f"{best[1]:.1%}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
