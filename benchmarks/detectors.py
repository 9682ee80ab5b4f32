"""Triage detectors, tuned on one model and measured on another, against the full probe's oracle on a pool.

1. `--tune TUNING_MODEL`: a model other than the evaluated one (a second training seed). Its pool (its most
   duplicated captions, random singleton member captions and never-trained captions) is probed in full, and each
   detector's settings are chosen on a small grid by AUC against that model's own oracle. The choice is written
   to `OUT/tuned.json`.
2. The evaluated model: every distinct member caption plus every never-trained caption of the dataset (memorized
   captions are rare, as in LAION), each probed in full at the study's settings (the oracle), then scored by each
   detector at its tuned settings. Reported: pooled AUC and TPR@1%FPR, AUC on the duplicated member captions alone,
   and the tiered audit: the share of the prompts the full probe extracts that fall in the detector's top K, with
   K as large as a cost budget of 10% of the full probe's UNet evaluations allows (exact per-prompt counts), and
   the smallest cost that recovers 95%; also projected at Carlini's 500 generations per prompt.
Usage: python benchmarks/detectors.py --model models/quick --data runs/quick4/data --tune TUNING_MODEL --out OUT
"""

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.attacks.detect import DETECTORS, score_prompts
from diffaudit.attacks.extraction import ExtractionConfig
from diffaudit.attacks.metrics import roc_summary
from diffaudit.config import CARLINI_SAMPLES, PRESETS
from diffaudit.data.imagefolder import ImageDataset, load_imagefolder
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.progress import make_progress
from diffaudit.study.extraction_audit import most_duplicated_prompts, run_extraction

GRID = {  # the settings each detector is tuned over (on the tuning model only)
    "wen": [{"generations": 4, "steps": s} for s in (1, 3, 10)],
    "agreement": [{"guidance": g} for g in (1.0, 3.0, 7.5)],
    "sharpness": [{"step_size": h} for h in (0.01, 0.1, 1.0)],
}
BUDGET = 0.10  # the tiered audit's cost cap, a share of the full probe's UNet evaluations
RECALL = 0.95


def pool(data: ImageDataset, singletons: int | None = None, nonmembers: int | None = None, top: int = 96,
         seed: int = 0) -> pd.DataFrame:
    """Member captions (all, or the `top` most duplicated plus `singletons` random others) and never-trained ones."""
    members = most_duplicated_prompts(data, len(data), seed)
    if singletons is not None:
        rest = members.iloc[top:]
        members = pd.concat([members.head(top), rest.sample(min(singletons, len(rest)), random_state=seed)])
    never = pd.Series(data.table.loc[data.table["split"] == "nonmember", "text"].unique())
    never = never.sample(min(nonmembers, len(never)), random_state=seed) if nonmembers is not None else never
    outside = pd.DataFrame({"prompt": never[~never.isin(members["prompt"])], "dup_count": 0, "caption_count": 0,
                            "dup_kind": "not-in-training"})
    return pd.concat([members, outside], ignore_index=True)


def full_probe(pipe: AuditPipeline, data: ImageDataset, prompts: pd.DataFrame, out: Path) -> pd.DataFrame:
    """The oracle and the probe at the quick study's settings; per prompt with its exact UNet evaluations."""
    preset = PRESETS["quick"]
    with make_progress() as progress:
        run_extraction(pipe, data, out, prompts, preset.extraction.samples_per_prompt, preset.sample.guidance,
                       preset.sample, ExtractionConfig(), progress)
    per_prompt = pd.read_parquet(out / "per_prompt.parquet")
    samples = pd.read_parquet(out / "samples" / "index.parquet")
    cost = samples[samples["prompt"].isin(per_prompt["prompt"])].groupby("prompt")["unet_evals"].sum()
    return per_prompt.assign(unet_evals=per_prompt["prompt"].map(cost))


def scores(pipe: AuditPipeline, name: str, settings: dict, prompts: list[str], cache: Path | None = None
           ) -> tuple[np.ndarray, int]:
    """The detector's scores, kept in `cache` under the model, detector, settings and prompts they belong to."""
    det = DETECTORS[name](**settings)
    key = hashlib.sha256(json.dumps([pipe.model_hash(), name, vars(det), prompts], sort_keys=True).encode())
    path = cache / f"{name}-{key.hexdigest()[:16]}.npy" if cache is not None else None
    if path is not None and path.exists():
        return np.load(path), det.queries_per_prompt
    score, _ = score_prompts(det, pipe, prompts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, score)
    return score, det.queries_per_prompt


def tiered_curve(extracted: np.ndarray, score: np.ndarray, detector_cost: float, full_cost: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tiered audit as K grows: the full probe's extractions in the detector's order, and per K the share of the
    full probe's cost spent (`detector_cost`: the detector's total) and the recall of its extractions."""
    # Ties in random order: a detector that scores every prompt alike must not inherit the pool's order (most
    # duplicated first), which alone recovers every extracted prompt.
    order = np.lexsort((np.random.default_rng(0).random(len(score)), -score))
    hits = extracted[order]
    cost = (detector_cost + np.cumsum(full_cost[order])) / full_cost.sum()
    return hits, cost, np.cumsum(hits) / max(hits.sum(), 1)


def tiered(probe: pd.DataFrame, score: np.ndarray, per_prompt_cost: int, samples: int | None = None) -> dict:
    """Recall of the full probe's extracted prompts among the detector's top K, K filling the budget; and the
    cheapest K reaching 95%. `samples` rescales the probe's cost to that many generations per prompt."""
    full_cost = probe["unet_evals"].to_numpy(float)
    if samples is not None:
        full_cost = full_cost * samples / probe["generations"].to_numpy(float)
    hits, cost, recall = tiered_curve(probe["extracted"].to_numpy(), score, per_prompt_cost * len(probe), full_cost)
    within = np.flatnonzero(cost <= BUDGET)
    k = int(within[-1]) + 1 if len(within) else 0
    reach = int(np.argmax(recall >= RECALL)) if (recall >= RECALL).any() else len(recall) - 1
    return {"extracted": int(hits.sum()), "budget": BUDGET, "confirmed_at_budget": k,
            "recovered_at_budget": int(hits[:k].sum()), "recall_at_budget": float(recall[k - 1]) if k else 0.0,
            "cost_for_95pct": float(cost[reach]), "confirmed_for_95pct": reach + 1,
            "detector_cost_share": per_prompt_cost * len(probe) / full_cost.sum()}


def evaluate(probe: pd.DataFrame, score: np.ndarray, per_prompt_cost: int) -> dict:
    truth = probe["memorized"].to_numpy()
    duplicated = probe["dup_count"].to_numpy() >= 2
    return {"pooled": roc_summary(truth, score), "duplicated_only": roc_summary(truth[duplicated], score[duplicated]),
            "queries_per_prompt": per_prompt_cost, "tiered": tiered(probe, score, per_prompt_cost),
            f"tiered_at_{CARLINI_SAMPLES}": tiered(probe, score, per_prompt_cost, CARLINI_SAMPLES)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tune", type=Path, required=True, help="a model other than --model to tune settings on")
    parser.add_argument("--out", type=Path, default=Path("runs/detectors"))
    parser.add_argument("--top", type=int, default=96, help="most-duplicated captions in the tuning pool")
    parser.add_argument("--tune-pool", type=int, default=100, help="singleton and never-trained captions in the "
                                                                    "tuning pool, each")
    parser.add_argument("--pool-sample", type=int, help="evaluate on this many singleton and never-trained "
                                                         "captions each (default: every caption; for smoke tests)")
    args = parser.parse_args()
    data = load_imagefolder(args.data)
    tuning = AuditPipeline.from_pretrained(args.tune)
    tune_probe = full_probe(tuning, data, pool(data, args.tune_pool, args.tune_pool, args.top),
                            args.out / "tuning")
    tuned = {}
    print(f"tuning model {tuning.model_hash()}: {len(tune_probe)} prompts, {int(tune_probe['memorized'].sum())} "
          "memorized (oracle)")
    for name, grid in GRID.items():
        aucs = [roc_summary(tune_probe["memorized"], scores(tuning, name, s, tune_probe["prompt"].tolist(),
                                                            args.out / "scores")[0], resamples=200)["auc"]
                for s in grid]
        tuned[name] = grid[int(np.argmax(aucs))]
        print(f"  {name}: " + ", ".join(f"{s} AUC {a:.3f}" for s, a in zip(grid, aucs, strict=True)))
    (args.out / "tuned.json").write_text(json.dumps(tuned, indent=1))
    pipe = AuditPipeline.from_pretrained(args.model)
    probe = full_probe(pipe, data, pool(data, args.pool_sample, args.pool_sample, args.top), args.out / "evaluated")
    print(f"evaluated model {pipe.model_hash()}: {len(probe)} prompts ({int((probe['dup_count'] >= 2).sum())} "
          f"duplicated member captions), {int(probe['memorized'].sum())} memorized, {int(probe['extracted'].sum())} "
          "extracted by the full probe")
    results = {}
    for name, settings in tuned.items():
        score, cost = scores(pipe, name, settings, probe["prompt"].tolist(), args.out / "scores")
        results[name] = {"settings": settings, **evaluate(probe, score, cost)}
        probe[f"score_{name}"] = score
    probe.to_parquet(args.out / "evaluated_scores.parquet", index=False)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print("| detector | settings (tuned) | UNet evals per prompt | pooled AUC [95% CI] | TPR@1%FPR | duplicated-only "
          "AUC | recovered at 10% cost | cost for 95% | at N = 500: recovered at 10%, cost for 95% |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        p, d, t, c = r["pooled"], r["duplicated_only"], r["tiered"], r[f"tiered_at_{CARLINI_SAMPLES}"]
        print(f"| {name} | {r['settings']} | {r['queries_per_prompt']} | {p['auc']:.3f} [{p['auc_ci'][0]:.3f}, "
              f"{p['auc_ci'][1]:.3f}] | {p['tpr_at_1pct_fpr']:.2f} | {d['auc']:.3f} | {t['recovered_at_budget']}/"
              f"{t['extracted']} | {t['cost_for_95pct']:.1%} | {c['recovered_at_budget']}/{c['extracted']}, "
              f"{c['cost_for_95pct']:.1%} |")


if __name__ == "__main__":
    main()
