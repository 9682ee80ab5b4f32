"""Does the sequential probe's fitted seed order carry from one model to another (issue 33)?

The rule (`diffaudit stopping-rule`'s defaults) fits its seed order and thresholds on a second model's full probe and
is replayed on the audited model's full pool (no new sampling; run benchmarks/sequential.py first). Three checks:
1. tuning -> audited: the shipped direction (models/quick audited, the seed-1 model fitting).
2. audited -> tuning: the roles swapped, so the order is fitted on the other training seed.
3. K random halves of the fitting model's extracted pictures (numpy's default_rng(2)): the rule fitted on each half
   alone (order and thresholds), replayed on the audited model: how much the result rests on which pictures fitted it.
With --held-out DIR (a third training seed's `benchmarks/sequential.py --out DIR`), only the shipped rule
(benchmarks/results/sequential_rule.json) replayed on that model's full pool, with its per-seed copies: the held-out
test.
Each row: recall of the full probe's extractions by caption and by picture with exact 95% intervals, the share of the
full probe's generations spent, and the projection at N = 500 (as benchmarks/sequential.py computes it).
Usage: python benchmarks/sequential_transfer.py --out runs/seq [--halves 20] | --held-out runs/seq2
"""

import argparse
import json
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from sequential import DEFAULT, TARGET_COST, TARGET_COST_500, TARGET_RECALL
from sequential_orders import one_order

from diffaudit.attacks.sequential import StoppingRule, copies_per_seed, fit_rule, seed_order
from diffaudit.study.extraction_audit import fit_inputs, full_probe_tables, stopping_rule_from

SHIPPED = Path(__file__).parent / "results" / "sequential_rule.json"


@cache
def _inputs(run: Path, order: tuple[int, ...]) -> tuple:
    return fit_inputs(run, list(order))


def fitted_on_half(run: Path, pictures: set[str]) -> StoppingRule:
    """The default rule fitted on `run` with only the extracted captions of `pictures` counted as extracted."""
    _, per_prompt, matches = full_probe_tables(run)
    groups = _inputs(run, tuple(range(int(per_prompt["generations"].max()))))[2]
    extracted = per_prompt.set_index("prompt")["extracted"] & groups.reindex(per_prompt["prompt"]).isin(pictures
                                                                                                         ).to_numpy()
    order = seed_order(matches, extracted, int(per_prompt["generations"].max()))
    paths, _, _, template = _inputs(run, tuple(order))
    return fit_rule(paths, extracted, groups, replace(template, order=order, **DEFAULT))


def held_out(out: Path) -> None:
    """The shipped rule on a model neither its order nor its thresholds saw."""
    rule = StoppingRule.load(SHIPPED)
    r = one_order(out, rule.seeds(), rule, audited="evaluated")
    _, per_prompt, matches = full_probe_tables(out / "evaluated")
    copied = copies_per_seed(matches, per_prompt.set_index("prompt")["extracted"], rule.budget)
    print(f"shipped rule (fitted on {rule.fitted_on}, order {rule.seeds()}) on {out / 'evaluated'}: "
          f"{r['recovered']}/{r['truth']} captions [{r['recall_ci'][0]:.0%}, {r['recall_ci'][1]:.0%}], "
          f"{r['pictures_found']}/{r['pictures']} pictures [{r['picture_ci'][0]:.0%}, {r['picture_ci'][1]:.0%}], "
          f"cost share {r['cost_share']:.1%}; N = 500: {r['recovered_500']}/{r['truth']} at "
          f"{r['cost_share_500_upper']:.1%}")
    print(f"its extracted captions copying under each seed: "
          f"{copied.reindex(rule.seeds()).to_dict()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/sequential"))
    parser.add_argument("--halves", type=int, default=20)
    parser.add_argument("--held-out", type=Path, help="replay the shipped rule on this run's pool only")
    args = parser.parse_args()
    if args.held_out:
        held_out(args.held_out)
        return
    tuning, audited = args.out / "tuning", args.out / "evaluated"
    rows = [{"fit": "tuning -> audited", **one_order(args.out, (r := stopping_rule_from(tuning, **DEFAULT)).order, r,
                                                      audited="evaluated")},
            {"fit": "audited -> tuning", **one_order(args.out, (r := stopping_rule_from(audited, **DEFAULT)).order, r,
                                                      audited="tuning")}]
    _, per_prompt, _ = full_probe_tables(tuning)
    groups = _inputs(tuning, tuple(range(int(per_prompt["generations"].max()))))[2]
    found = sorted(set(groups[per_prompt.set_index("prompt")["extracted"]]))
    rng = np.random.default_rng(2)
    for k in range(args.halves):
        half = set(rng.choice(found, size=len(found) // 2, replace=False).tolist())
        rule = fitted_on_half(tuning, half)
        rows.append({"fit": f"half {k + 1} of tuning's {len(found)} pictures -> audited",
                     **one_order(args.out, rule.order, rule, audited="evaluated")})
    (args.out / "transfer.json").write_text(json.dumps(rows, indent=1, default=float))
    print("| fitted -> replayed | seed order (first four) | recall, captions [95% CI] | recall, pictures [95% CI] "
          "| cost share | N = 500: recall, cost share (upper) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fit']} | {', '.join(map(str, r['order'][:4]))} | {r['recovered']}/{r['truth']} "
              f"[{r['recall_ci'][0]:.0%}, {r['recall_ci'][1]:.0%}] | {r['pictures_found']}/{r['pictures']} "
              f"[{r['picture_ci'][0]:.0%}, {r['picture_ci'][1]:.0%}] | {r['cost_share']:.1%} | "
              f"{r['recovered_500']}/{r['truth']}, {r['cost_share_500_upper']:.1%} |")
    halves = pd.DataFrame(rows[2:])
    if len(halves):
        recall, cost = halves["recovered"] / halves["truth"], halves["cost_share"]
        recall_500, cost_500 = halves["recovered_500"] / halves["truth"], halves["cost_share_500_upper"]
        print(f"over {len(halves)} halves: recall median {recall.median():.1%} (range {recall.min():.1%}-"
              f"{recall.max():.1%}), cost median {cost.median():.1%} (range {cost.min():.1%}-{cost.max():.1%}); both "
              f"targets in {int(((recall >= TARGET_RECALL) & (cost <= TARGET_COST)).sum())} of {len(halves)}; at N = "
              f"500 both in {int(((recall_500 >= TARGET_RECALL) & (cost_500 <= TARGET_COST_500)).sum())}")


if __name__ == "__main__":
    main()
