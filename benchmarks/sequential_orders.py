"""How the sequential probe's recall depends on the order its seeds are drawn in (issue 33's re-check).

For each of K seed orders (the natural order first, then random permutations from numpy's default_rng(0)), the
tuning model's and the audited model's full pools are replayed with the seeds drawn in that order (the same order for
both, as a deployer fitting on a second model would draw them), the default rule is refitted on the tuning model and
replayed on the audited one: recall of the full probe's extractions, by caption and by picture (captions of one picture
move together), with exact 95% intervals, and the share of the full probe's UNet evaluations spent. No new sampling:
run benchmarks/sequential.py first (its --out holds both pools).

With --robust K, the rule is instead fitted once over K other orders of the tuning model's draws (numpy's
default_rng(1)): each check's threshold the largest of the K fits' (no threshold where any fit has none), so no
extracted caption of the tuning model stops futile in any of those orders; it is then replayed on the audited model in
each of the evaluated orders.
Usage: python benchmarks/sequential_orders.py --out runs/seq [--orders 10] [--robust K]
"""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from sequential import DEFAULT, TARGET_COST, TARGET_COST_500, TARGET_RECALL

from diffaudit.attacks.extraction import ExtractionConfig
from diffaudit.attacks.metrics import clopper_pearson
from diffaudit.attacks.sequential import StoppingRule, replay
from diffaudit.config import CARLINI_SAMPLES
from diffaudit.study.extraction_audit import fit_inputs, stopping_rule_from


def fitted(out: Path, order: list[int]) -> StoppingRule:
    """The default rule fitted on the tuning model with its seeds drawn in `order`."""
    return stopping_rule_from(out / "tuning", **DEFAULT, order=order)


def robust(out: Path, orders: list[list[int]]) -> StoppingRule:
    """One rule over several orders of the tuning model's draws: each check's largest threshold, none where any
    order's fit has none."""
    rules = [fitted(out, order) for order in orders]
    checks = set.intersection(*(set(r.futility) for r in rules))
    return replace(rules[0], futility={n: max(r.futility[n] for r in rules) for n in sorted(checks)}, miss=None,
                   order=None)


def one_order(out: Path, order: list[int], rule: StoppingRule | None = None, audited: str = "evaluated") -> dict:
    """A rule (by default, the default rule fitted on the tuning model in the same order) replayed on the full pool in
    `out / audited` with the seeds drawn in `order`."""
    rule = rule or fitted(out, order)
    paths, truth, groups, _ = fit_inputs(out / audited, order)
    stops = replay(paths, rule).set_index("prompt")
    wanted = truth[truth].index
    found = stops.loc[wanted].eval("stop == 'confirmed' and copy")
    pictures = groups.loc[wanted]
    # Projected at N = 500 as benchmarks/sequential.py does: a caption not stopped futile is charged all 500 draws and
    # counted found (an upper bound on cost, a lower one on misses).
    far = replay(paths, replace(rule, confirm=ExtractionConfig().clique_size(CARLINI_SAMPLES))).set_index("prompt")
    futile = far["stop"] == "futile"
    kept_500 = int((~futile.loc[wanted]).sum())
    found_pictures = pictures[found.to_numpy()].nunique()
    return {"order": order, "futility": rule.futility, "fitted_miss": rule.miss.missed if rule.miss else "-",
            "recovered": int(found.sum()), "truth": len(wanted),
            "recall_ci": clopper_pearson(int(found.sum()), len(wanted)),
            "pictures_found": int(found_pictures), "pictures": int(pictures.nunique()),
            "picture_ci": clopper_pearson(int(found_pictures), int(pictures.nunique())),
            "cost_share": float(stops["draws"].sum() / (rule.budget * len(stops))),
            "recovered_500": kept_500, "recall_500_ci": clopper_pearson(kept_500, len(wanted)),
            "cost_share_500_upper": float((far.loc[futile, "draws"].sum() + CARLINI_SAMPLES * (~futile).sum())
                                          / (CARLINI_SAMPLES * len(far)))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/sequential"))
    parser.add_argument("--orders", type=int, default=10)
    parser.add_argument("--robust", type=int, help="fit one rule over this many other orders of the tuning model")
    args = parser.parse_args()
    budget = json.loads((args.out / "evaluated" / "summary.json").read_text())["samples_per_prompt"]
    rng = np.random.default_rng(0)
    orders = [list(range(budget))] + [rng.permutation(budget).tolist() for _ in range(args.orders - 1)]
    rule = None
    if args.robust:
        other = np.random.default_rng(1)
        rule = robust(args.out, [other.permutation(budget).tolist() for _ in range(args.robust)])
        print(f"one rule over {args.robust} orders of the tuning model: thresholds "
              f"{ {n: round(v, 3) for n, v in rule.futility.items()} }")
    rows = [one_order(args.out, order, rule) for order in orders]
    name = f"orders-robust{args.robust}.json" if args.robust else "orders.json"
    (args.out / name).write_text(json.dumps(rows, indent=1, default=float))
    print("| order (first four seeds) | miss on tuning model | recall, captions [95% CI] | recall, pictures [95% CI] "
          "| cost share | N = 500: recall [95% CI], cost share (upper) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {', '.join(map(str, r['order'][:4]))}, ... | {r['fitted_miss']} | {r['recovered']}/{r['truth']} "
              f"[{r['recall_ci'][0]:.0%}, {r['recall_ci'][1]:.0%}] | {r['pictures_found']}/{r['pictures']} "
              f"[{r['picture_ci'][0]:.0%}, {r['picture_ci'][1]:.0%}] | {r['cost_share']:.1%} | {r['recovered_500']}/"
              f"{r['truth']} [{r['recall_500_ci'][0]:.0%}, {r['recall_500_ci'][1]:.0%}], "
              f"{r['cost_share_500_upper']:.1%} |")
    recall = np.array([r["recovered"] / r["truth"] for r in rows])
    cost = np.array([r["cost_share"] for r in rows])
    both = int(((recall >= TARGET_RECALL) & (cost <= TARGET_COST)).sum())
    recall_500 = np.array([r["recovered_500"] / r["truth"] for r in rows])
    cost_500 = np.array([r["cost_share_500_upper"] for r in rows])
    both_500 = int(((recall_500 >= TARGET_RECALL) & (cost_500 <= TARGET_COST_500)).sum())
    print(f"over {len(rows)} orders: recall median {np.median(recall):.1%} (range {recall.min():.1%}-"
          f"{recall.max():.1%}), {int((recall >= TARGET_RECALL).sum())} of {len(rows)} at >= {TARGET_RECALL:.0%}; "
          f"cost median {np.median(cost):.1%} (range {cost.min():.1%}-{cost.max():.1%}); both targets met in {both} "
          f"of {len(rows)}; projected at N = {CARLINI_SAMPLES}: recall median {np.median(recall_500):.1%} (range "
          f"{recall_500.min():.1%}-{recall_500.max():.1%}), cost median {np.median(cost_500):.1%} (range "
          f"{cost_500.min():.1%}-{cost_500.max():.1%}), both targets met in {both_500} of {len(rows)}")


if __name__ == "__main__":
    main()
