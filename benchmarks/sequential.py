"""The sequential probe (attacks.sequential) against the full probe, replayed on one pool of generations per model.

1. A tuning model other than the audited one (a second training seed): its pool (most duplicated, random singleton
   and never-trained captions) is probed in full at N = 16, and a stopping rule is fitted on it for every setting of
   the grid (round size, quantile, margin), with its miss rate estimated there (leave one picture out).
2. The audited model: every member and never-trained caption, probed in full at N = 16 (the truth: what the full probe
   extracts). Each rule is replayed on those generations in seed order (no new sampling): recall of the full probe's
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
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from detectors import GRID, full_probe, pool, scores

from diffaudit.attacks.extraction import largest_clique
from diffaudit.attacks.metrics import clopper_pearson
from diffaudit.attacks.sequential import StoppingRule, fit_rule, replay, trajectories
from diffaudit.config import CARLINI_SAMPLES, PRESETS
from diffaudit.data.imagefolder import ImageDataset, load_imagefolder
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.shards import load_samples

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SETTINGS = [{"round_size": r, "quantile": q, "margin": m}
            for r in (1, 2, 4) for q in (0.9, 1.0) for m in (0.0, 0.1, 0.25)]
TARGET_RECALL, TARGET_COST, TARGET_COST_500 = 0.95, 0.25, 0.05


def evaluated_pool(data: ImageDataset) -> pd.DataFrame:
    """Every member and never-trained caption: the duplicated ones first, the rest in seeded random order."""
    p = pool(data)
    return pd.concat([p[p["dup_count"] >= 2], p[p["dup_count"] < 2].sample(frac=1.0, random_state=0)],
                     ignore_index=True)


def paths_of(run: Path, per_prompt: pd.DataFrame, budget: int, side: int, edge: float) -> tuple[pd.DataFrame, dict]:
    """Trajectories at every draw count (cached beside the run) and, per caption, its draws' images in seed order."""
    index = pd.read_parquet(run / "samples" / "index.parquet")
    index = index[index["prompt"].isin(per_prompt["prompt"]) & (index["seed"] < budget)].sort_values(["prompt", "seed"])
    images, index = load_samples(run / "samples", index, side)
    cache = run / "trajectories.parquet"
    if cache.exists():
        paths = pd.read_parquet(cache)
    else:
        paths = trajectories(images, index, list(range(1, budget + 1)), edge)
        paths.to_parquet(cache, index=False)
    return paths, {p: images[g.index.to_numpy()] for p, g in index.groupby("prompt", sort=False)}


def extracted_at_stop(stops: pd.DataFrame, images: dict, own: pd.DataFrame, edge: float) -> pd.Series:
    """Per caption stopped confirmed: whether its largest clique among the draws it took holds a copy of its own picture
    (the full probe's confirmation, on fewer draws)."""
    hit = {}
    for row in stops[stops["stop"] == "confirmed"].itertuples():
        clique = largest_clique(images[row.prompt][: row.draws], edge)
        hit[row.prompt] = bool(own.loc[row.prompt].to_numpy()[: row.draws][clique].any())
    return stops["prompt"].map(hit).fillna(False).astype(bool)


def own_hits(run: Path, budget: int) -> pd.DataFrame:
    """prompt x seed: whether that generation copies the caption's own training picture (the full probe's copy test)."""
    matches = pd.read_parquet(run / "matches.parquet")
    index = pd.read_parquet(run / "samples" / "index.parquet")
    per_prompt = pd.read_parquet(run / "per_prompt.parquet")
    index = index[index["prompt"].isin(per_prompt["prompt"]) & (index["seed"] < budget)].reset_index(drop=True)
    kind = pd.Series(matches["kind"].to_numpy() == "own", index=pd.MultiIndex.from_frame(
        index.loc[matches["sample"].to_numpy(), ["prompt", "seed"]]))
    return kind.unstack("seed").sort_index(axis=1)


def score_rule(rule: StoppingRule, paths: pd.DataFrame, probe: pd.DataFrame, images: dict, own: pd.DataFrame,
               edge: float, keep: pd.Series | None = None, screen_share: float = 0.0) -> dict:
    """Recall, cost share and the N = 500 projection of `rule` replayed on the audited model's pool (`keep`: captions
    a screen let through; the rest cost nothing more and are found by nothing)."""
    kept = probe if keep is None else probe[keep.to_numpy()]
    stops = replay(paths[paths["prompt"].isin(kept["prompt"])], rule)
    stops["extracted"] = extracted_at_stop(stops, images, own, edge).to_numpy()
    truth = set(probe.loc[probe["extracted"], "prompt"])
    found = set(stops.loc[stops["extracted"], "prompt"])
    futile = stops["stop"] == "futile"
    k, n = len(found & truth), len(truth)
    lo, hi = clopper_pearson(k, n)
    not_futile = set(stops.loc[~futile, "prompt"])
    k500 = len(not_futile & truth)
    lo5, hi5 = clopper_pearson(k500, n)
    budget, total = rule.budget, len(probe)
    cost_500 = (stops.loc[futile, "draws"].sum() + CARLINI_SAMPLES * (~futile).sum()) / (CARLINI_SAMPLES * total)
    return {"recovered": k, "truth": n, "recall": k / n if n else float("nan"), "recall_ci": [lo, hi],
            "cost_share": screen_share + stops["draws"].sum() / (budget * total),
            "early_not_at_n": len(found - truth), "stops": stops["stop"].value_counts().to_dict(),
            "recall_500": k500 / n if n else float("nan"), "recall_500_ci": [lo5, hi5],
            "cost_share_500_upper": screen_share * budget / CARLINI_SAMPLES + cost_500}


def detector_curve(probe: pd.DataFrame, score: np.ndarray, per_prompt_cost: int, budget_evals: np.ndarray
                   ) -> pd.DataFrame:
    """The tiered audit as K grows: recall of the full probe's extractions among the detector's top K, and its cost."""
    order = np.lexsort((np.random.default_rng(0).random(len(score)), -score))
    hits = probe["extracted"].to_numpy()[order]
    cost = (per_prompt_cost * len(probe) + np.cumsum(budget_evals[order])) / budget_evals.sum()
    return pd.DataFrame({"cost_share": cost, "recall": np.cumsum(hits) / max(hits.sum(), 1)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tune", type=Path, required=True, help="a model other than --model to fit the rule on")
    parser.add_argument("--out", type=Path, default=Path("runs/sequential"))
    parser.add_argument("--screen", choices=sorted(GRID), help="a one-step detector in front of the probe")
    args = parser.parse_args()
    data = load_imagefolder(args.data)
    n, side = PRESETS["quick"].study.samples_per_prompt, data.images.shape[1]
    tuning, pipe = AuditPipeline.from_pretrained(args.tune), AuditPipeline.from_pretrained(args.model)
    tune_probe = full_probe(tuning, data, pool(data, 100, 100, 96), args.out / "tuning")
    probe = full_probe(pipe, data, evaluated_pool(data), args.out / "evaluated")
    summary = json.loads((args.out / "evaluated" / "summary.json").read_text())
    edge, confirm = float(summary["config"]["edge_threshold"]), int(summary["clique_size_required"])
    stopping = {}
    for name, run, frame in (("tuning", args.out / "tuning", tune_probe), ("evaluated", args.out / "evaluated", probe)):
        stopping[name] = (*paths_of(run, frame, n, side, edge), own_hits(run, n))
    t_paths, e_paths = stopping["tuning"][0], stopping["evaluated"][0]
    t_matches = pd.read_parquet(args.out / "tuning" / "matches.parquet")
    t_groups = t_matches[t_matches["own_idx"] >= 0].drop_duplicates("prompt").set_index("prompt")["own_idx"]  # picture
    picture = pd.Series(tune_probe["prompt"].map(t_groups).astype("string").fillna(tune_probe["prompt"]).to_numpy(),
                        index=tune_probe["prompt"])
    truth_t = tune_probe.set_index("prompt")["extracted"]
    rows = []
    for setting in SETTINGS:
        rule = fit_rule(t_paths, truth_t, picture, n, setting["round_size"], confirm, edge, tuning.model_hash(),
                        setting["quantile"], setting["margin"])
        rows.append({**setting, "fitted_miss": rule.miss, "futility": rule.futility,
                     **score_rule(rule, e_paths, probe, stopping["evaluated"][1], stopping["evaluated"][2], edge)})
        if setting == {"round_size": 2, "quantile": 1.0, "margin": 0.1}:
            rule.save(args.out / "rule.json")
    full_evals = probe["unet_evals"].to_numpy(float)
    curves = {}
    for name in ("wen",) if args.screen is None else (args.screen,):
        tuned = json.loads((args.out / "tuned.json").read_text())[name] if (args.out / "tuned.json").exists() \
            else GRID[name][0]
        score, cost = scores(pipe, name, tuned, probe["prompt"].tolist(), args.out / "scores")
        curves[name] = detector_curve(probe, score, cost, full_evals)
        if args.screen:
            t_score, _ = scores(tuning, name, tuned, tune_probe["prompt"].tolist(), args.out / "scores")
            floor = t_score[tune_probe["extracted"].to_numpy()].min()
            keep = pd.Series(score >= floor)
            share = cost * len(probe) / full_evals.sum()
            for setting in SETTINGS:
                rule = fit_rule(t_paths, truth_t, picture, n, setting["round_size"], confirm, edge,
                                tuning.model_hash(), setting["quantile"], setting["margin"])
                rows.append({**setting, "screen": f"{name} >= {floor:.3g} ({int(keep.sum())} kept)",
                             "fitted_miss": rule.miss, "futility": rule.futility,
                             **score_rule(rule, e_paths, probe, stopping["evaluated"][1], stopping["evaluated"][2],
                                          edge, keep, share)})
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=float))
    plot(rows, curves, args.out / "sequential_curve.png")
    print(f"tuning model {tuning.model_hash()}: {len(tune_probe)} captions, {int(truth_t.sum())} extracted at N = {n}; "
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
