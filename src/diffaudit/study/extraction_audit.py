"""`diffaudit extract`: choose target prompts, generate, probe, score against the oracle, write results."""

import json
import math
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.attacks.copies import match_generations, near_misses, per_prompt_verdicts, rate_by_delta, saturation
from diffaudit.attacks.detect import DETECTORS, score_prompts
from diffaudit.attacks.extraction import ExtractionConfig, cliques, probe, recall_sweep, summarize
from diffaudit.attacks.metrics import rate_table, roc_summary
from diffaudit.attacks.sequential import (
    STOPS,
    StoppingRule,
    check_rule,
    draw_sequentially,
    fit_rule,
    probe_setting,
    seed_order,
    trajectories,
)
from diffaudit.config import SampleConfig
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.figures import pair_strip, pairs_grid, sample_grid
from diffaudit.io import write_atomic, write_json
from diffaudit.model.conditioning import Conditioning, Text
from diffaudit.model.generate import can_share, generate
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.shards import load_samples
from diffaudit.progress import Progress


def most_duplicated_prompts(data: ImageDataset, top: int, seed: int = 0) -> pd.DataFrame:
    """Carlini attacked the most-duplicated training captions: rank member captions by the copy count of
    their image, then by how often the caption itself repeats; ties (e.g. singletons) in seeded random order."""
    members = data.table[data.table["split"] == "member"]
    ranked = members.groupby("text").agg(dup_count=("dup_count", "max"), caption_count=("id", "size"),
                                         dup_kind=("dup_kind", "first")).reset_index()
    ranked["tiebreak"] = np.random.default_rng(seed).permutation(len(ranked))
    ranked = ranked.sort_values(["dup_count", "caption_count", "tiebreak"], ascending=[False, False, True])
    return ranked.head(top).drop(columns="tiebreak").rename(columns={"text": "prompt"}).reset_index(drop=True)


def prompts_from_file(path: Path, data: ImageDataset) -> pd.DataFrame:
    """User-chosen prompts; those that are training captions keep their duplication info, others get 0."""
    prompts = list(dict.fromkeys(ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()))
    if not prompts:
        raise ConfigError(f"{path} lists no prompts")
    known = most_duplicated_prompts(data, len(data)).set_index("prompt")
    frame = pd.DataFrame({"prompt": prompts}).join(known, on="prompt")
    return frame.fillna({"dup_count": 0, "caption_count": 0, "dup_kind": "not-in-training"}).astype(
        {"dup_count": int, "caption_count": int})


def dup_bucket(count: pd.Series) -> pd.Series:
    """Duplication buckets on a doubling ladder: 1, 2-3, 4-7, ..., 64+."""
    edges = [0, 1, 2, 4, 8, 16, 32, 64]
    labels = ["0", "1", "2-3", "4-7", "8-15", "16-31", "32-63", "64+"]
    return pd.Series(pd.cut(count, [*edges, np.inf], right=False, labels=labels), index=count.index).astype(str)


def run_extraction(pipe: AuditPipeline, data: ImageDataset, out: Path, prompts: pd.DataFrame,
                   samples_per_prompt: int, guidance: float, sample_cfg: SampleConfig,
                   cfg: ExtractionConfig, progress: Progress | None = None, samples: Path | None = None,
                   conditioning: Conditioning | None = None, rule: StoppingRule | None = None) -> dict:
    """Generate for each prompt, run the probe and the oracle, and write tables, pairs and a summary.

    `samples` names a generation folder to share (default `out/samples`): samples are keyed by content, so
    those another audit of the same model already drew are reused, not drawn again. `conditioning` is what the
    model is conditioned on for each prompt (its text by default; an attack's or a setting's otherwise): copies are
    still judged against each prompt's own training image. With a stopping `rule` (`attacks.sequential`) each
    prompt draws in rounds until the rule stops it; the probe then asks every prompt the clique the full budget
    asks, and the tables say how many draws each prompt took and why it stopped."""
    conditioning = conditioning or Text()
    out = Path(out)
    members = data.split("member")
    gen_dir = Path(samples) if samples is not None else out / "samples"
    side = data.images.shape[1]
    if rule is None:
        rows = generate(pipe, prompts["prompt"].tolist(), list(range(samples_per_prompt)), [guidance], sample_cfg,
                        gen_dir, progress, conditioning=conditioning)
    else:
        check_rule(rule, pipe, samples_per_prompt, cfg.clique_size(samples_per_prompt), cfg.edge_threshold, side,
                   probe_setting(sample_cfg, guidance))
        rows, stops = draw_sequentially(pipe, prompts["prompt"].tolist(), rule, guidance, sample_cfg, gen_dir, side,
                                        progress, conditioning)
        prompts = prompts.merge(stops, on="prompt")
        cfg = replace(cfg, clique_fraction=0.0, min_clique=rule.confirm)  # every prompt asked the budget's clique
    images, index = load_samples(gen_dir, rows, side=side)
    table = members.table
    matches = match_generations(images, index, members, cfg.delta)
    clique = cliques(images, index, cfg.edge_threshold)
    per_prompt, pairs = probe(matches, clique, cfg)
    pairs = pairs.assign(seed=index["seed"].to_numpy()[pairs["sample"].to_numpy(dtype=int)],
                         guidance=index["guidance"].to_numpy()[pairs["sample"].to_numpy(dtype=int)],
                         eidetic_k=table["dup_count"].to_numpy()[pairs["train_idx"].to_numpy(dtype=int)],
                         family=table["family"].to_numpy()[pairs["train_idx"].to_numpy(dtype=int)])
    per_prompt = (per_prompt.merge(per_prompt_verdicts(matches, cfg.delta), on="prompt")
                  .merge(prompts, on="prompt"))
    per_prompt["dup_bucket"] = dup_bucket(per_prompt["dup_count"])
    summary = summarize(per_prompt, pairs, table, cfg)
    by_dup = rate_table(per_prompt, ["dup_bucket"], hit="extracted")
    oracle_by_dup = rate_table(per_prompt, ["dup_bucket"], hit="memorized")
    # A generation the probe confirms: in the largest clique of a flagged prompt.
    confirmed = per_prompt.set_index("prompt")["flagged"].reindex(matches["prompt"]).to_numpy() & (clique > 0)
    summary |= {
        "samples_per_prompt": samples_per_prompt, "guidance": guidance, "sampler": sample_cfg.sampler,
        "steps": sample_cfg.steps, "guidance_start": sample_cfg.guidance_start,
        "seeds": f"0..{samples_per_prompt - 1}" if rule is None else
        f"0..{samples_per_prompt - 1} in the order {rule.seeds()}, each prompt's first `draws` (per_prompt.parquet); "
        "the oracle's fields count those draws only", "model_hash": pipe.model_hash(),
        "setting": probe_setting(sample_cfg, guidance),
        "conditioning": conditioning.name, "samples_folder": os.path.relpath(gen_dir, out),
        "compare_size": int(data.images.shape[1]), "generated_size": int(pipe.resolution),
        "dataset_version": data.version, "clique_size_required": cfg.clique_size(samples_per_prompt),
        "unet_evaluations": int(index["unet_evals"].sum()),
        "by_dup": by_dup.to_dict("records"), "oracle_by_dup": oracle_by_dup.to_dict("records"),
        "oracle_by_delta": rate_by_delta(per_prompt["oracle_min_distance"]),
        "extraction_by_delta": rate_by_delta(matches[confirmed].groupby("prompt")["own_distance"].min()
                                             .reindex(per_prompt["prompt"]).fillna(np.inf)),
        "gu_replication_prompts": int(per_prompt["gu_hit"].sum()),
        "probe_sweep": recall_sweep(matches, index, images, per_prompt.set_index("prompt")["memorized"], cfg)
        if rule is None else [],
        "sequential": None if rule is None else {
            "rule": asdict(rule), "stops": per_prompt["stop"].value_counts().reindex(STOPS, fill_value=0).to_dict(),
            "draws": int(per_prompt["draws"].sum()), "full_draws": len(per_prompt) * samples_per_prompt},
        "assumptions": {**asdict(cfg), "distance": "max over 4x4 tiles of RMS on [0,1] pixels (Carlini et al. 2023)",
                        "copy": "a flagged generation within delta of the prompt's own training image; copies of a "
                                "near-duplicate sibling (family) or another image are counted separately",
                        "attacker": "black-box generation; training set used only to confirm flagged samples",
                        "prompts": "most-duplicated training captions"},
    }
    write_atomic(out / "matches.parquet", lambda p: matches.assign(confirmed=confirmed, seed=index["seed"].to_numpy())
                 .to_parquet(p, index=False))
    write_atomic(out / "per_prompt.parquet", lambda p: per_prompt.to_parquet(p, index=False))
    write_atomic(out / "pairs.parquet", lambda p: pairs.to_parquet(p, index=False))
    summary["near_misses"] = _near_misses(images, matches, members, cfg.delta, out / "near_misses.png")
    refs = {p: members.images[i] for p, i in matches.loc[matches["own_idx"] >= 0].groupby("prompt")["own_idx"].first()
            .items()}
    sample_grid(images, index, refs, prompts["prompt"].head(12).tolist(), out / "samples_grid.png")
    write_json(out / "summary.json", summary)
    best = pairs[pairs["kind"] == "own"].sort_values("distance").drop_duplicates("train_idx")
    for row in best.itertuples():
        pair_strip(images[row.sample], members.images[row.train_idx], out / "pairs" / f"{row.train_idx:05d}.png")
    return summary


def _near_misses(images: np.ndarray, matches: pd.DataFrame, members: ImageDataset, delta: float, grid: Path,
                 shown: int = 60) -> dict:
    """Generations the copy test may miss (attacks.copies.near_misses): how many, of how many captions, how much of
    them is pinned at 0 or 255, and a grid of the first `shown` (closest first) to look at."""
    miss = matches[near_misses(matches, delta)].sort_values("own_distance")
    gens, refs = images[miss["sample"].to_numpy()], members.images[miss["own_idx"].to_numpy()]
    sat = saturation(gens, refs)
    if len(miss):
        pairs_grid(gens[:shown], refs[:shown], grid)
    return {"generations": len(miss), "prompts": int(miss["prompt"].nunique()),
            "saturated_share": float(sat.mean()) if len(sat) else float("nan"),
            "grid": grid.name if len(miss) else None}


def run_tiered(pipe: AuditPipeline, data: ImageDataset, out: Path, prompts: pd.DataFrame, samples_per_prompt: int,
               guidance: float, sample_cfg: SampleConfig, cfg: ExtractionConfig, detector: str = "wen",
               confirm_fraction: float = 0.1, full_run: Path | None = None,
               progress: Progress | None = None) -> dict:
    """Score every prompt with a cheap detector, then run the full probe on the top `confirm_fraction` only.

    With `full_run` (an earlier full probe on the same prompts) the summary also says how much of the
    full probe's finding the tiered audit recovers and, against that run's oracle, the detector's AUC.
    """
    out = Path(out)
    det = DETECTORS[detector]()
    scores, detect_evals = score_prompts(det, pipe, prompts["prompt"].tolist())
    ranked = prompts.assign(detector_score=scores).sort_values("detector_score", ascending=False)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "detector_scores.parquet", lambda p: ranked.to_parquet(p, index=False))
    confirm = ranked.head(max(1, math.ceil(confirm_fraction * len(ranked)))).drop(columns="detector_score")
    # The full probe drew these prompts' samples already when it ran on this model: reuse them.
    shared = Path(full_run) / "samples" if full_run is not None else None
    shared = shared if shared is not None and can_share(shared, pipe, sample_cfg) else None
    confirmed = run_extraction(pipe, data, out / "confirm", confirm.reset_index(drop=True), samples_per_prompt,
                               guidance, sample_cfg, cfg, progress, samples=shared)
    summary = {"detector": detector, "detector_queries_per_prompt": det.queries_per_prompt,
               "prompts_scored": len(prompts), "prompts_confirmed": len(confirm),
               "unet_evaluations": detect_evals + confirmed["unet_evaluations"],
               "extracted_images": confirmed["extracted_images"]}
    if full_run is not None:
        full = pd.read_parquet(Path(full_run) / "per_prompt.parquet").merge(
            ranked[["prompt", "detector_score"]], on="prompt")
        full_summary = json.loads((Path(full_run) / "summary.json").read_text())
        mine = set(pd.read_parquet(out / "confirm" / "per_prompt.parquet").query("extracted")["prompt"])
        theirs = set(full.loc[full["extracted"], "prompt"])
        truth = full["memorized"].to_numpy().astype(int)
        summary |= {
            "full_probe_extracted_prompts": len(theirs), "recovered": len(mine & theirs),
            "recall_vs_full": len(mine & theirs) / len(theirs) if theirs else float("nan"),
            "cost_ratio_vs_full": summary["unet_evaluations"] / full_summary["unet_evaluations"],
            "detector_vs_oracle": roc_summary(truth, full["detector_score"].to_numpy())
            if 0 < truth.sum() < len(truth) else None,
        }
    write_json(out / "tiered_summary.json", summary)
    return summary


def full_probe_tables(run: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """A finished full probe's summary, per-prompt and per-draw tables, refusing a run a rule cannot be fitted on."""
    if not all((run / f).is_file() for f in ("per_prompt.parquet", "summary.json", "matches.parquet")):
        raise ConfigError(f"{run} is not a finished extraction (per_prompt, matches or summary is missing)")
    summary = json.loads((run / "summary.json").read_text())
    if summary.get("sequential"):
        raise ConfigError(f"{run} is a sequential probe; fit the rule on a full probe (every caption drew N)")
    per_prompt, matches = pd.read_parquet(run / "per_prompt.parquet"), pd.read_parquet(run / "matches.parquet")
    if "seed" not in matches or "setting" not in summary:
        raise ConfigError(f"{run} was written by an older diffaudit; run `diffaudit extract` on it again (its samples "
                          "are reused)")
    return summary, per_prompt, matches


def fit_inputs(run: Path, order: list[int] | None = None) -> tuple[pd.DataFrame, pd.Series, pd.Series, StoppingRule]:
    """What a stopping rule is fitted on, from a finished full probe (`run`): its draws' trajectories in seed order
    (with whether each clique holds an own copy), the captions it extracted, each caption's picture (its own training
    image; a never-trained caption is its own group) and a rule template for its budget, clique and drawing. `order`
    (a permutation of the seeds 0..N-1) draws the seeds in that order instead, to measure how a rule depends on it."""
    run = Path(run)
    summary, per_prompt, matches = full_probe_tables(run)
    budget, folder = int(summary["samples_per_prompt"]), run / summary["samples_folder"]
    index = matches[["prompt", "seed"]].merge(pd.read_parquet(folder / "index.parquet").query(
        "guidance == @summary['guidance']"), on=["prompt", "seed"], how="left")
    images, index = load_samples(folder, index, side=int(summary["compare_size"]))
    if order is not None:
        if sorted(order) != list(range(budget)):
            raise ConfigError(f"a seed order must hold each of the seeds 0..{budget - 1} once; got {order}")
        index = index.assign(seed=index["seed"].map({seed: rank for rank, seed in enumerate(order)}))
    edge, own = float(summary["config"]["edge_threshold"]), (matches["kind"] == "own").to_numpy()
    paths = trajectories(images, index, list(range(1, budget + 1)), edge, own)
    picture = (matches[matches["own_idx"] >= 0].sort_values("own_distance").drop_duplicates("prompt")
               .set_index("prompt")["own_idx"].astype(str))
    groups = per_prompt["prompt"].map(picture).fillna(per_prompt["prompt"])
    template = StoppingRule(budget=budget, round_size=1, confirm=int(summary["clique_size_required"]),
                            edge_threshold=edge, compare_size=int(summary["compare_size"]), setting=summary["setting"],
                            futility={}, fitted_on=summary["model_hash"], quantile=1.0, margin=0.0)
    return paths, per_prompt.set_index("prompt")["extracted"], groups.set_axis(per_prompt["prompt"]), template


def fitted_seed_order(run: Path) -> list[int]:
    """The seed order a rule fitted on the full probe `run` draws in (`attacks.sequential.seed_order`)."""
    summary, per_prompt, matches = full_probe_tables(Path(run))
    return seed_order(matches, per_prompt.set_index("prompt")["extracted"], int(summary["samples_per_prompt"]))


def stopping_rule_from(run: Path, round_size: int, quantile: float, margin: float,
                       order: list[int] | None = None) -> StoppingRule:
    """Fit a sequential probe's stopping rule on a finished full probe (`run`, an extraction folder) of a second
    model: its seed order (`seed_order`, unless `order` is given) and then its thresholds, the draws read in that
    order."""
    order = fitted_seed_order(run) if order is None else order
    paths, truth, groups, template = fit_inputs(run, order)
    return fit_rule(paths, truth, groups, replace(template, round_size=round_size, quantile=quantile, margin=margin,
                                                  order=list(order)))
