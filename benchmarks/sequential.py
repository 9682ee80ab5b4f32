"""The sequential probe (attacks.sequential) against the full probe, replayed on one pool of generations per model.

1. A tuning model other than the audited one (a second training seed): its pool (most duplicated, random singleton
   and never-trained captions) is probed in full at N = 16; the seed order is fitted on it (the seeds that copied most
   first) and a stopping rule, for every setting of the grid (round size, quantile, margin), with its miss rate
   estimated there (leave one picture out).
2. The audited model: every member and never-trained caption, probed in full at N = 16 (the truth: what the full probe
   extracts). Each rule is replayed on those generations in its seed order (no new sampling): recall of the full probe's
   extracted captions with its 95% interval, the share of the full probe's generations (UNet evaluations) spent,
   captions confirmed early that the full probe does not extract, and the projection at Carlini's N = 500 (truth: the
   N = 16 extractions; cost: captions stopped futile keep their draws, every other caption is charged all 500, an
   upper bound).
3. With --screen, a one-step detector in front: captions scoring below the lowest score of the tuning model's extracted
   captions are dropped before the sequential probe; its cost counts for every caption.
Targets (issue 33): recall >= 95% at <= 25% of the full probe's cost; projected at N = 500, >= 95% at <= 5%.
Usage: python benchmarks/sequential.py --model models/quick --data DATA --tune SECOND_MODEL --out OUT [--screen wen]
"""

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import matplotlib
import pandas as pd
from detectors import GRID, full_probe, pool, scores, tiered_curve

from diffaudit.attacks.extraction import ExtractionConfig
from diffaudit.attacks.metrics import clopper_pearson
from diffaudit.attacks.sequential import StoppingRule, fit_rule, replay
from diffaudit.config import CARLINI_SAMPLES
from diffaudit.data.imagefolder import ImageDataset, load_imagefolder
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.study.extraction_audit import fit_inputs, fitted_seed_order

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DEFAULT = {"round_size": 2, "quantile": 1.0, "margin": 0.1}  # the study.sequential_* defaults
SETTINGS = [{"round_size": r, "quantile": q, "margin": m}
            for r in (1, 2, 4) for q in (0.9, 1.0) for m in (0.0, 0.1, 0.25)]
TARGET_RECALL, TARGET_COST, TARGET_COST_500 = 0.95, 0.25, 0.05


def evaluated_pool(data: ImageDataset, limit: int | None = None) -> pd.DataFrame:
    """Every member and never-trained caption: the duplicated ones first, the rest in seeded random order, so the first
    `limit` are every duplicated caption and a random sample of the rest. `weight` scales the sampled rest back to the
    whole pool in cost shares."""
    p = pool(data)
    dup, rest = p[p["dup_count"] >= 2], p[p["dup_count"] < 2].sample(frac=1.0, random_state=0)
    taken = rest.head(max(0, (limit or len(p)) - len(dup)))
    return pd.concat([dup.assign(weight=1.0), taken.assign(weight=len(rest) / max(len(taken), 1))], ignore_index=True)


def score_rule(rule: StoppingRule, paths: pd.DataFrame, probe: pd.DataFrame, keep: pd.Series | None = None,
               screen_share: float = 0.0) -> dict:
    """Recall, cost share and the N = 500 projection of `rule` replayed on the audited model's pool (`keep`: captions
    a screen let through; the rest cost nothing more and are found by nothing). A caption counts as found when it
    stops confirmed on a clique holding a copy of its own picture (the full probe's confirmation, on fewer draws)."""
    kept = probe if keep is None else probe[keep.to_numpy()]
    stops = replay(paths[paths["prompt"].isin(kept["prompt"])], rule)
    weight = probe.set_index("prompt")["weight"]
    per_draw = (probe["unet_evals"] / probe["generations"]).set_axis(probe["prompt"]) * weight  # a weighted draw
    truth = set(probe.loc[probe["extracted"], "prompt"])
    found = set(stops.loc[stops["copy"], "prompt"])
    k, n = len(found & truth), len(truth)
    lo, hi = clopper_pearson(k, n)
    # At N = 500 the flag asks a bigger clique, which 16 draws rarely hold: captions run on until the rule's futility
    # stops them or to the end; every one not stopped futile is charged all 500 draws and counted found.
    far = replay(paths[paths["prompt"].isin(kept["prompt"])], replace(rule, confirm=ExtractionConfig().clique_size(
        CARLINI_SAMPLES)))
    futile = far["stop"] == "futile"
    k500 = len(set(far.loc[~futile, "prompt"]) & truth)
    lo5, hi5 = clopper_pearson(k500, n)
    full = (probe["unet_evals"] * probe["weight"]).sum()
    cost_500 = ((far.loc[futile, "draws"] * far.loc[futile, "prompt"].map(per_draw)).sum()
                + CARLINI_SAMPLES * far.loc[~futile, "prompt"].map(per_draw).sum())
    return {"recovered": k, "truth": n, "recall": k / n if n else float("nan"), "recall_ci": [lo, hi],
            "cost_share": screen_share + (stops["draws"] * stops["prompt"].map(per_draw)).sum() / full,
            "early_not_at_n": len(found - truth), "confirmed": int((stops["stop"] == "confirmed").sum()),
            "stops": stops["stop"].value_counts().to_dict(), "recall_500": k500 / n if n else float("nan"),
            "recall_500_ci": [lo5, hi5],
            "cost_share_500_upper": (screen_share * full + cost_500) / (full * CARLINI_SAMPLES / rule.budget)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tune", type=Path, required=True, help="a model other than --model to fit the rule on")
    parser.add_argument("--out", type=Path, default=Path("runs/sequential"))
    parser.add_argument("--screen", choices=sorted(GRID), help="a one-step detector in front of the probe")
    parser.add_argument("--limit", type=int, help="audit only the first K captions of the evaluated pool (every "
                                                  "duplicated one, a random sample of the rest, reweighted in costs)")
    args = parser.parse_args()
    data = load_imagefolder(args.data)
    tuning, pipe = AuditPipeline.from_pretrained(args.tune), AuditPipeline.from_pretrained(args.model)
    tune_probe = full_probe(tuning, data, pool(data, 100, 100, 96), args.out / "tuning")
    pooled = evaluated_pool(data, args.limit)
    probe = full_probe(pipe, data, pooled.drop(columns="weight"), args.out / "evaluated").merge(
        pooled[["prompt", "weight"]], on="prompt")
    order = fitted_seed_order(args.out / "tuning")  # the rule's seed order, from the tuning model
    t_paths, truth, picture, template = fit_inputs(args.out / "tuning", order)
    e_paths = fit_inputs(args.out / "evaluated", order)[0]
    rules = [fit_rule(t_paths, truth, picture, replace(template, order=order, **setting)) for setting in SETTINGS]
    rows = [{**setting, "fitted_miss": asdict(rule.miss), "futility": rule.futility, **score_rule(rule, e_paths, probe)}
            for setting, rule in zip(SETTINGS, rules, strict=True)]
    rules[SETTINGS.index(DEFAULT)].save(args.out / "rule.json")
    full_evals = (probe["unet_evals"] * probe["weight"]).to_numpy(float)
    curves = {}
    for name in ("wen",) if args.screen is None else (args.screen,):
        tuned = json.loads((args.out / "tuned.json").read_text())[name] if (args.out / "tuned.json").exists() \
            else GRID[name][0]
        score, cost = scores(pipe, name, tuned, probe["prompt"].tolist(), args.out / "scores")
        _, share_spent, recall = tiered_curve(probe["extracted"].to_numpy(), score, cost * probe["weight"].sum(),
                                              full_evals)
        curves[name] = pd.DataFrame({"cost_share": share_spent, "recall": recall})
        if args.screen:
            t_score, _ = scores(tuning, name, tuned, tune_probe["prompt"].tolist(), args.out / "scores")
            floor = t_score[tune_probe["extracted"].to_numpy()].min()  # keeps every extraction of the tuning model
            keep = pd.Series(score >= floor)
            share = cost * probe["weight"].sum() / full_evals.sum()
            rows += [{**setting, "screen": f"{name} >= {floor:.3g} ({int(keep.sum())} kept)",
                      "fitted_miss": asdict(rule.miss), "futility": rule.futility,
                      **score_rule(rule, e_paths, probe, keep, share)}
                     for setting, rule in zip(SETTINGS, rules, strict=True)]
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=float))
    plot(rows, curves, args.out / "sequential_curve.png")
    print(f"tuning model {tuning.model_hash()}: {len(tune_probe)} captions, {int(truth.sum())} extracted at N = "
          f"{template.budget}; seed order fitted on it {order}; "
          f"audited model {pipe.model_hash()}: {len(probe)} captions, {int(probe['extracted'].sum())} extracted")
    print("| round | quantile | margin | screen | miss on tuning model (LOPO) | recall [95% CI] | cost share | early, "
          "not at N | N = 500: recall, cost (upper) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["fitted_miss"]
        print(f"| {r['round_size']} | {r['quantile']} | {r['margin']} | {r.get('screen', '-')} | "
              f"{m['missed']}/{m['of']}"
              f" | {r['recovered']}/{r['truth']} {r['recall']:.1%} [{r['recall_ci'][0]:.0%}, {r['recall_ci'][1]:.0%}]"
              f" | {r['cost_share']:.1%} | {r['early_not_at_n']} | {r['recall_500']:.1%}, "
              f"{r['cost_share_500_upper']:.1%} |")


def plot(rows: list[dict], curves: dict[str, pd.DataFrame], out: Path) -> None:
    """Recall against cost: each rule setting with its interval, each detector's tiered curve."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(curve["cost_share"], curve["recall"], label=f"{name} screen, then full probe on top K")
    for screened in (False, True):
        pts = [r for r in rows if ("screen" in r) == screened]
        if pts:
            x = [r["cost_share"] for r in pts]
            y = [r["recall"] for r in pts]
            err = [[r["recall"] - r["recall_ci"][0] for r in pts], [r["recall_ci"][1] - r["recall"] for r in pts]]
            ax.errorbar(x, y, yerr=err, fmt="o" if not screened else "s", ms=4, capsize=2,
                        label="sequential probe" + (" behind the screen" if screened else ""))
    ax.axvline(TARGET_COST, ls=":", c="grey")
    ax.axhline(TARGET_RECALL, ls=":", c="grey")
    ax.set(xlabel="share of the full probe's UNet evaluations", ylabel="recall of the full probe's extractions",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
