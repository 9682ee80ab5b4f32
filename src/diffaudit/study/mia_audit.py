"""`diffaudit mia`: score members and non-members with every attack on one model and one split."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.attacks.metrics import roc_summary
from diffaudit.attacks.mia import ATTACKS
from diffaudit.attacks.mia.common import query_batch
from diffaudit.attacks.mia.lira import LiRA, Shadow
from diffaudit.attacks.mia.split_check import model_free_auc
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.io import write_atomic, write_json
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.train import train
from diffaudit.progress import Progress
from diffaudit.report.figures import roc_figure

LIRA = ("lira-online", "lira-offline")


def evaluation_set(data: ImageDataset, per_side: int, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Unique member images (with their most frequent caption) and non-members, `per_side` of each, IID."""
    table = data.table.assign(row=np.arange(len(data)))
    members = (table[table["split"] == "member"].groupby(["sha256", "text"], sort=False).agg(
        row=("row", "first"), n=("row", "size")).reset_index().sort_values("n", ascending=False, kind="stable")
        .drop_duplicates("sha256"))
    nonmembers = table[table["split"] == "nonmember"]
    rng = np.random.default_rng(seed)
    n = min(per_side, len(members), len(nonmembers))
    if n == 0:
        raise ConfigError("membership inference needs member and nonmember rows in the dataset")
    rows = np.concatenate([rng.choice(members["row"].to_numpy(), n, replace=False),
                           rng.choice(nonmembers["row"].to_numpy(), n, replace=False)])
    chosen = table.iloc[rows][["id", "sha256", "text", "split", "dup_count", "family"]].reset_index(drop=True)
    chosen["label"] = (chosen["split"] == "member").astype(int)
    return data.images[rows], chosen


def train_shadows(images: np.ndarray, table: pd.DataFrame, preset: Preset, count: int, out: Path,
                  progress: Progress | None = None) -> list[Shadow]:
    """Shadow k trains on a seeded random half of the evaluation pool with the target's recipe
    (the LiRA threat model: the attacker knows the training recipe and can sample the data distribution)."""
    shadows = []
    for k in range(count):
        folder = out / f"shadow-{k}"
        in_mask = np.random.default_rng([preset.train.seed, 7919, k]).random(len(table)) < 0.5
        part = table[in_mask].assign(split="member", dup_count=1).reset_index(drop=True)
        data = ImageDataset(folder, images[in_mask], part)
        model_dir = folder / "model"
        if (model_dir / "training_manifest.json").exists():
            pipe = AuditPipeline.from_pretrained(model_dir)
        else:
            cfg = preset.train.model_copy(update={"seed": preset.train.seed + 1 + k})
            pipe = train(build_pipeline(preset.model, preset.data.resolution, seed=cfg.seed), data, cfg, folder,
                         progress)
        shadows.append(Shadow(pipe, in_mask))
    return shadows


def check_attacks(attacks: list[str], shadows: int) -> None:
    """Refuse unknown attack names, and LiRA without shadows, before any model is loaded or trained."""
    unknown = [a for a in attacks if a not in ATTACKS and a not in LIRA]
    if unknown or not attacks:
        raise ConfigError(f"unknown attack(s) {unknown}; choose from {[*ATTACKS, *LIRA]}")
    if any(a in LIRA for a in attacks) and not shadows:
        raise ConfigError("LiRA needs shadow models: pass --shadows K")


def run_mia(pipe: AuditPipeline, data: ImageDataset, out: Path, attacks: list[str], per_side: int,
            shadows: list[Shadow] | None = None, progress: Progress | None = None, seed: int = 0) -> dict:
    """Score the evaluation set with each attack; write per-sample scores, ROC summaries and a figure."""
    check_attacks(attacks, len(shadows or []))
    images, table = evaluation_set(data, per_side, seed)
    batch = query_batch(pipe, images, table["text"].tolist())
    labels = table["label"].to_numpy()
    split_check = model_free_auc(images, batch.cond.mean(1).numpy(), labels, seed, groups=table["family"].to_numpy())
    results: dict = {}
    task = progress.add_task("membership inference", total=len(attacks)) if progress else None
    for name in attacks:
        attack = LiRA(shadows, online=name == "lira-online") if name.startswith("lira") else ATTACKS[name]()
        with pipe.denoiser.counting() as spent:
            scores = attack.score(pipe, batch)
        table[f"score_{name}"] = scores
        singles = (table["label"] == 0) | (table["dup_count"] == 1)
        results[name] = {
            "all": roc_summary(labels, scores, seed=seed),
            "singleton_members": roc_summary(labels[singles], scores[singles], seed=seed),
            "queries_per_sample": spent.evaluations / len(table),
        }
        if progress is not None:
            progress.advance(task)
    write_atomic(out / "scores.parquet", lambda p: table.to_parquet(p, index=False))
    summary = {"model_hash": pipe.model_hash(), "dataset_version": data.version, "per_side": len(table) // 2,
               "seed": seed, "split_check": split_check, "attacks": results,
               "shadows": len(shadows or []),
               "assumptions": {
                   "members": "unique training images, each with its most frequent training caption",
                   "nonmembers": "held-out split drawn IID from the same OpenMoji pool",
                   "attacker": "white-box noise predictions on (image, caption) pairs; LiRA also knows the recipe"}}
    if not split_check["at_chance"]:
        summary["warning"] = (f"model-free classifier separates the split (AUC {split_check['auc']:.2f}): "
                              "distribution shift may inflate every attack below")
    write_json(out / "summary.json", summary)
    roc_figure(table, [f"score_{a}" for a in attacks], out / "roc.png")
    return summary


def load_scores(out: Path) -> tuple[pd.DataFrame, dict]:
    """Per-sample scores and the summary of an earlier run (for unlearning checks and reports)."""
    return pd.read_parquet(out / "scores.parquet"), json.loads((out / "summary.json").read_text())
