"""`diffaudit mia`: score members and non-members with every attack on one model and one split.

Free settings (timestep, direction, CLiD's alpha) are chosen on a labelled tuning set whose near-duplicate
families are disjoint from the scored samples; every choice is written into the summary beside its AUC.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.attacks.metrics import paired_auc_difference, roc_summary
from diffaudit.attacks.mia import ATTACKS, LIRA_ACCESS, access
from diffaudit.attacks.mia.common import QueryBatch, query_batch
from diffaudit.attacks.mia.lira import LiRA, Shadow, leave_one_shadow_out
from diffaudit.attacks.mia.loss import paper_loss
from diffaudit.attacks.mia.split_check import model_free_auc
from diffaudit.attacks.mia.tuning import Oriented, paper_default, tune
from diffaudit.backend import mapped
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.figures import roc_figure
from diffaudit.io import write_atomic, write_json
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.train import train
from diffaudit.progress import Progress

LIRA = tuple(LIRA_ACCESS)


def _unique_members(table: pd.DataFrame) -> pd.DataFrame:
    """One row per member image, with its most frequent training caption."""
    members = table[table["split"] == "member"]
    return (members.groupby(["sha256", "text"], sort=False).agg(row=("row", "first"), n=("row", "size"))
            .reset_index().sort_values("n", ascending=False, kind="stable").drop_duplicates("sha256")
            .merge(table[["row", "family"]], on="row"))


def _by_family(side: pd.DataFrame, rng: np.random.Generator, tune_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of one side in a seeded random family order; whole families fill the tuning set first-fit (one that
    would overshoot it is skipped), the rest are for evaluation."""
    families = side["family"].unique()
    ordered = side.assign(rank=side["family"].map(dict(zip(families, rng.permutation(len(families)), strict=True))))
    ordered = ordered.sort_values(["rank", "row"], kind="stable")
    chosen, room = [], tune_rows
    for rank, size in ordered.groupby("rank", sort=True).size().items():
        if size <= room:
            chosen.append(rank)
            room -= size
    in_tune = ordered["rank"].isin(chosen).to_numpy()
    rows = ordered["row"].to_numpy()
    return rows[in_tune], rows[~in_tune]


def evaluation_set(data: ImageDataset, per_side: int, seed: int = 0,
                   tune_per_side: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Unique member images (with their most frequent caption) and non-members: up to `tune_per_side` of each for
    tuning (`role` "tune") and `per_side` of each, balanced, for scoring ("eval"). Whole near-duplicate families go
    to one role, so no sibling of a tuning image is scored."""
    table = data.table.assign(row=np.arange(len(data)))
    rng = np.random.default_rng(seed)
    members = _unique_members(table)
    nonmembers = table[table["split"] == "nonmember"]
    tune_m, eval_m = _by_family(members, rng, tune_per_side)
    tune_n, eval_n = _by_family(nonmembers, rng, tune_per_side)
    n = min(per_side, len(eval_m), len(eval_n))
    if n < 2 or (tune_per_side and min(len(tune_m), len(tune_n)) < 2):
        raise ConfigError(f"membership inference needs at least 2 member and 2 nonmember rows to score (and to tune "
                          f"on when tuning): the dataset has {len(members)} unique members and {len(nonmembers)} "
                          f"nonmembers for {per_side} per side plus {tune_per_side} per side of tuning")
    rows = np.concatenate([rng.choice(eval_m, n, replace=False), rng.choice(eval_n, n, replace=False), tune_m, tune_n])
    chosen = table.iloc[rows][["id", "sha256", "text", "split", "dup_count", "family"]].reset_index(drop=True)
    chosen["label"] = (chosen["split"] == "member").astype(int)
    chosen["role"] = ["eval"] * (2 * n) + ["tune"] * (len(tune_m) + len(tune_n))
    return data.images[rows], chosen


def train_shadows(data: ImageDataset, preset: Preset, count: int, out: Path,
                  progress: Progress | None = None) -> list[Shadow]:
    """Shadow k trains with the target's recipe (steps, batch, learning rate) on a seeded random half of the
    candidate pool, every distinct member and non-member image, each with all of its training rows (a planted
    duplicate keeps its copies and captions). With as many non-members as unique members and no duplication (the
    overfit preset), a half is the size of the target's training set."""
    pool = data.table["split"].isin(["member", "nonmember"]).to_numpy()
    images = data.table.loc[pool, "sha256"].unique()
    shadows = []
    for k in range(count):
        folder = out / f"shadow-{k}"
        half = set(images[np.random.default_rng([preset.train.seed, 7919, k]).random(len(images)) < 0.5])
        chosen = np.flatnonzero(pool & data.table["sha256"].isin(half).to_numpy())
        part = data.table.iloc[chosen].assign(split="member").reset_index(drop=True)
        shadow_data = ImageDataset(folder, data.images[chosen], part)
        model_dir = folder / "model"
        if (model_dir / "training_manifest.json").exists():
            pipe = AuditPipeline.from_pretrained(model_dir, preset.runtime)
        else:
            cfg = preset.train.model_copy(update={"seed": preset.train.seed + 1 + k})
            fresh = build_pipeline(preset.model, preset.data.resolution, seed=cfg.seed, runtime=preset.runtime)
            pipe = train(fresh, shadow_data, cfg, folder, progress).use(preset.runtime)
        shadows.append(Shadow(pipe, frozenset(part["sha256"])))
    return shadows


def check_attacks(attacks: list[str], shadows: int) -> None:
    """Refuse unknown attack names, and LiRA without shadows, before any model is loaded or trained."""
    unknown = [a for a in attacks if a not in ATTACKS and a not in LIRA]
    if unknown or not attacks:
        raise ConfigError(f"unknown attack(s) {unknown}; choose from {[*ATTACKS, *LIRA]}")
    if any(a in LIRA for a in attacks) and not shadows:
        raise ConfigError("LiRA needs shadow models: pass --shadows K")


def _score_attack(pipe: AuditPipeline, name: str, lira: LiRA | None, batch: QueryBatch, tune_batch: QueryBatch | None,
                  tune_labels: np.ndarray) -> tuple[object, np.ndarray, int]:
    """One attack, tuned on the labelled set when there is one: (the attack as scored, its scores, the UNet
    evaluations the scoring spent)."""
    batch, tune_batch = (None if b is None else QueryBatch(pipe.place(b.latents), pipe.place(b.cond), b.captions)
                         for b in (batch, tune_batch))  # onto the worker's device when it runs on Ray
    for shadow in lira.shadows if lira is not None else []:
        shadow.pipe.to(pipe.device, pipe.dtype)  # a no-op here; on a GPU worker the shadows follow the target
    attack: object = lira or (tune(name, pipe, tune_batch, tune_labels) if tune_batch is not None
                              else paper_default(name))
    with pipe.denoiser.counting() as spent:
        scores = attack.score(pipe, batch)  # type: ignore[attr-defined]
    return attack, scores, spent.evaluations


def run_mia(pipe: AuditPipeline, data: ImageDataset, out: Path, attacks: list[str], per_side: int,
            shadows: list[Shadow] | None = None, progress: Progress | None = None, seed: int = 0,
            tune_per_side: int = 0) -> dict:
    """Tune (when `tune_per_side` > 0) and score the evaluation set with each attack; write per-sample scores,
    ROC summaries with intervals, paired comparisons with the loss attack, and a figure."""
    check_attacks(attacks, len(shadows or []))
    images, table = evaluation_set(data, per_side, seed, tune_per_side)
    is_eval = (table["role"] == "eval").to_numpy()
    table, tuning = table[is_eval].reset_index(drop=True), table[~is_eval].reset_index(drop=True)
    batch = query_batch(pipe, images[is_eval], table["text"].tolist())
    tune_batch = query_batch(pipe, images[~is_eval], tuning["text"].tolist()) if len(tuning) else None
    labels, families = table["label"].to_numpy(), table["family"].to_numpy()
    text_features = batch.cond.mean(1).cpu().float().numpy()
    split_check = model_free_auc(images[is_eval], text_features, labels, seed, groups=families)
    loss = paper_loss(pipe, batch, (100,), 4)
    gap = {"member_loss": float(loss[labels == 1].mean()), "nonmember_loss": float(loss[labels == 0].mean())}
    gap["gap"] = gap["nonmember_loss"] - gap["member_loss"]
    gap["relative_gap"] = gap["gap"] / gap["nonmember_loss"]
    results: dict = {}
    task = progress.add_task("membership inference", total=len(attacks)) if progress else None
    lira = {name: LiRA(shadows or [], np.stack([table["sha256"].isin(s.trained).to_numpy() for s in shadows or []]),
                       online=name == "lira-online") for name in attacks if name in LIRA}
    blocks = [(name, lira.get(name), batch, tune_batch, tuning["label"].to_numpy()) for name in attacks]
    # One attack per block: tuned and scored where it runs (`backend`), on the same batch as here.
    for name, (attack, scores, evaluations) in zip(attacks, mapped(pipe, _score_attack, blocks), strict=True):
        table[f"score_{name}"] = scores
        singles = ((table["label"] == 0) | (table["dup_count"] == 1)).to_numpy()
        results[name] = {
            "all": roc_summary(labels, scores, seed=seed, groups=families),
            "singleton_members": roc_summary(labels[singles], scores[singles], seed=seed, groups=families[singles]),
            "queries_per_sample": evaluations / len(table), "access": access(name),
            "choice": attack.choice if isinstance(attack, Oriented) else {"tuned": False, "shadows": len(shadows)},
        }
        if isinstance(attack, LiRA):
            results[name]["leave_one_shadow_out"] = leave_one_shadow_out(attack)
        if progress is not None:
            progress.advance(task)
    paired = {f"{name} - loss": paired_auc_difference(labels, table[f"score_{name}"], table["score_loss"], seed,
                                                      groups=families)
              for name in attacks if name != "loss" and "loss" in attacks}
    write_atomic(out / "scores.parquet", lambda p: table.to_parquet(p, index=False))
    summary = {"model_hash": pipe.model_hash(), "dataset_version": data.version, "per_side": len(table) // 2,
               "tune_per_side": len(tuning) // 2, "seed": seed, "split_check": split_check, "loss_gap": gap,
               "attacks": results, "paired": paired, "shadows": len(shadows or []),
               "assumptions": {
                   "members": "unique training images, each with its most frequent training caption",
                   "nonmembers": "held-out split, family-disjoint from the members",
                   "tuning": (f"{len(tuning)} labelled samples, family-disjoint from the scored ones, choose each "
                              "attack's timestep, direction and (CLiD) alpha and scalers" if len(tuning) else
                              "none: every attack runs with its paper's settings and direction"),
                   "attacker": {name: access(name) for name in attacks}}}
    if not split_check["at_chance"]:
        summary["warning"] = (f"model-free classifier separates the split (AUC {split_check['auc']:.2f}): "
                              "distribution shift may inflate every attack below")
    write_json(out / "summary.json", summary)
    roc_figure(table, [f"score_{a}" for a in attacks], out / "roc.png")
    return json.loads((out / "summary.json").read_text())  # as every later reader sees it (tuples as lists)


def load_scores(out: Path) -> tuple[pd.DataFrame, dict]:
    """Per-sample scores and the summary of an earlier run (for unlearning checks and reports)."""
    return pd.read_parquet(out / "scores.parquet"), json.loads((out / "summary.json").read_text())
