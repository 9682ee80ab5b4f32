"""SISA (Bourtoule et al. 2021): shards trained apart, in slices, so a deletion retrains only what saw the data.

The member rows are split into K shards and each shard into R slices, whole near-duplicate families at a time (a
sibling of a forgotten picture in another shard would keep teaching it). Shard k trains in R stages: stage r on
slices 1..r, starting from stage r-1's model, which is kept as a checkpoint. Forgetting rows of slice r in shard k
restarts that shard from its stage r-1 checkpoint without them; other shards are reused as they are. The shards
answer as one model by averaging their noise predictions (`model.ensemble`). The shards share the original's step
budget (each stage gets 1/(K R) of it); within a shard a row of slice r is trained in stages r..R, so rows of the
first slice are seen about twice as often as in the unsharded model and rows of the last slice a quarter as often
(R = 4). What a deletion saves depends on where its rows fall (`single_subject_shares`).
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.config import UTILITY, RuntimeConfig, TrainConfig
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import CheckpointError
from diffaudit.io import atomic_dir, write_json
from diffaudit.model.ensemble import ShardEnsemble
from diffaudit.model.lineage import write_lineage
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.train import step_seed, train
from diffaudit.progress import Progress
from diffaudit.unlearning.base import ForgetJob, Forgotten, Origin, Unlearner, fresh_like

ASSIGNMENT = "sisa.parquet"


def assign(members: pd.DataFrame, shards: int, slices: int, seed: int) -> pd.DataFrame:
    """Shard and slice of every member row: families in a seeded random order, dealt round-robin."""
    families = np.array(sorted(members["family"].unique()))
    order = families[np.random.default_rng([seed, shards, slices]).permutation(len(families))]
    rank = pd.Series(np.arange(len(order)), index=order)
    r = rank.reindex(members["family"]).to_numpy()
    return pd.DataFrame({"id": members["id"].to_numpy(), "family": members["family"].to_numpy(),
                         "shard": r % shards, "slice": (r // shards) % slices})


def single_subject_shares(plan: pd.DataFrame, slices: int) -> pd.Series:
    """Per subject, the share of all K x R stages that forgetting that subject alone retrains: what SISA saves
    depends on where the request falls, and a request over several subjects is the union of theirs."""
    shards = int(plan["shard"].max()) + 1
    first = plan.groupby("family")["slice"].min()
    return (slices - first) / (shards * slices)


def stage_config(cfg: TrainConfig, shards: int, slices: int, shard: int, stage: int) -> TrainConfig:
    """Stage `stage` of `shard`: its share of the steps, its own seed, warm-up only where the shard starts."""
    steps = max(1, cfg.steps // (shards * slices))
    return cfg.model_copy(update={"steps": steps, "seed": step_seed(cfg.seed, 1_000_003 * (shard + 1) + stage),
                                  "warmup_steps": min(cfg.warmup_steps, steps) if stage == 0 else 0})


def _train_stages(start: AuditPipeline | None, template: AuditPipeline, members: ImageDataset, plan: pd.DataFrame,
                  cfg: TrainConfig, shards: int, slices: int, shard: int, first: int, work: Path,
                  runtime: RuntimeConfig, progress: Progress | None) -> list[Path]:
    """Stages `first`..R-1 of one shard, each from the previous stage's model (`start` before `first`; a fresh
    model when None); returns their model folders. A stage left without rows (its families all forgotten) passes
    its starting model on unchanged."""
    done = []
    for stage in range(first, slices):
        folder = work / f"shard-{shard}" / f"stage-{stage}"
        model = folder / "model"
        if not (model / "training_manifest.json").exists():
            pipe = start if start is not None else fresh_like(template, step_seed(cfg.seed, shard))
            rows = ((plan["shard"] == shard) & (plan["slice"] <= stage)).to_numpy()
            stage_cfg = stage_config(cfg, shards, slices, shard, stage)
            if rows.any():
                train(pipe, members.where(rows), stage_cfg, folder, progress)
            else:
                pipe.save_pretrained(model)
                write_lineage(model, members.where(rows))
                write_json(model / "training_manifest.json", {"train_config": stage_cfg.model_dump(), "rows": 0,
                                                              "seconds": 0.0, "model_hash": pipe.model_hash()})
        start = AuditPipeline.from_pretrained(model, runtime)
        done.append(model)
    return done


def _seconds(models: list[Path]) -> float:
    return round(sum(json.loads((m / "training_manifest.json").read_text())["seconds"] for m in models), 1)


def _assemble(out: Path, stages: dict[tuple[int, int], Path], members: ImageDataset, plan: pd.DataFrame,
              slices: int, manifest: dict, template: AuditPipeline, runtime: RuntimeConfig) -> Path:
    """The ensemble model folder, with every stage checkpoint inside it (what a later deletion restarts from)."""
    model = out / "model"
    if (model / "training_manifest.json").exists():
        return model
    shards = 1 + max(k for k, _ in stages)
    finals = [AuditPipeline.from_pretrained(stages[(k, slices - 1)], runtime).unet for k in range(shards)]
    pipe = AuditPipeline(ShardEnsemble(finals), template.scheduler, template.encode_text, template.resolution,
                         vae=template.vae, kind=template.kind, text_config=template.text_config)
    with atomic_dir(model) as tmp:
        pipe.save_pretrained(tmp / "ensemble")
        for part in (tmp / "ensemble").iterdir():
            part.rename(tmp / part.name)
        (tmp / "ensemble").rmdir()
        for (k, r), folder in stages.items():
            target = tmp / "slices" / f"shard-{k}" / f"stage-{r}"
            for part in ("unet", "scheduler", "model_index.json", "training_manifest.json"):
                (shutil.copytree if (folder / part).is_dir() else shutil.copy2)(folder / part, target / part)
        plan.to_parquet(tmp / ASSIGNMENT, index=False)
        write_lineage(tmp, members)
        write_json(tmp / "training_manifest.json", {**manifest, "model_hash": pipe.model_hash()})
    return model


def train_sharded(template: AuditPipeline, data: ImageDataset, cfg: TrainConfig, shards: int, slices: int, out: Path,
                  runtime: RuntimeConfig, progress: Progress | None = None) -> Path:
    """Train `data`'s members as a SISA ensemble into `out/model` (resumable: finished stages are kept)."""
    members = data.split("member")
    plan = assign(members.table, shards, slices, cfg.seed)
    stages = {}
    for k in range(shards):
        for r, model in enumerate(_train_stages(None, template, members, plan, cfg, shards, slices, k, 0,
                                                out / "work", runtime, progress)):
            stages[(k, r)] = model
    per_stage = stage_config(cfg, shards, slices, 0, 0).steps
    manifest = {"train_config": cfg.model_dump(), "dataset_version": data.version, "rows": len(members),
                "seconds": _seconds(list(stages.values())), "weights": "EMA",
                "sisa": {"shards": shards, "slices": slices, "steps_per_stage": per_stage,
                         "stages_trained": len(stages)}}
    return _assemble(out, stages, members, plan, slices, manifest, template, runtime)


class SISA(Unlearner):
    name = "sisa"
    title = "Sharded training (SISA), retrain the affected shards"

    def original(self, origin: Origin) -> Path:
        """The base recipe and budget, trained sharded (forget.shards x forget.slices): the request is made to it."""
        cfg = origin.preset.train.model_copy(update={"seed": origin.seed})
        return train_sharded(origin.base, origin.data, cfg, origin.preset.forget.shards, origin.preset.forget.slices,
                             origin.folder / "sisa-original", origin.preset.runtime, origin.progress)

    def annotate(self, record: dict, original: Path, measure: Callable[[AuditPipeline], dict],
                 origin: Origin) -> dict:
        """How evenly subjects fall in one slice, and the quality sharding costs against the unsharded base."""
        shares = single_subject_shares(pd.read_parquet(original / ASSIGNMENT), origin.preset.forget.slices)
        unsharded = measure(origin.base)
        return {**record, "single_subject_share": {"mean": float(shares.mean()), "min": float(shares.min()),
                                                   "max": float(shares.max()), "subjects": len(shares)},
                "sharding_cost": {k: {"sharded": record["measures"]["original"][k], "unsharded": unsharded[k]}
                                  for k in UTILITY}}

    def forget(self, job: ForgetJob) -> Forgotten:
        original = job.original
        if not (original / ASSIGNMENT).exists():
            raise CheckpointError(f"{original} was not trained sharded, so SISA cannot forget from it; train it with "
                                  "`diffaudit train DATA OUT --sharded` (forget.shards x forget.slices)")
        info, cfg = job.manifest["sisa"], job.train_cfg
        shards, slices = info["shards"], info["slices"]
        members = job.remaining().split("member")
        plan = pd.read_parquet(original / ASSIGNMENT)
        hit = plan[plan["id"].isin(job.forget_ids)]
        plan = members.table[["id"]].merge(plan, on="id", how="left", validate="one_to_one")
        template = job.load(original)
        stages, retrained = {}, []
        for k in range(shards):
            first = int(hit.loc[hit["shard"] == k, "slice"].min()) if (hit["shard"] == k).any() else slices
            for r in range(first):
                stages[(k, r)] = original / "slices" / f"shard-{k}" / f"stage-{r}"
            if first < slices:
                start = job.load(stages[(k, first - 1)]) if first > 0 else None
                new = _train_stages(start, template, members, plan, cfg, shards, slices, k, first, job.out / "work",
                                    job.preset.runtime, job.progress)
                stages |= {(k, first + i): m for i, m in enumerate(new)}
                retrained += new
        seconds = _seconds(retrained)
        manifest = {"train_config": cfg.model_dump(), "dataset_version": job.remaining().version,
                    "rows": len(members), "seconds": seconds, "weights": "EMA",
                    "sisa": {**info, "stages_trained": len(retrained)}}
        model = _assemble(job.out, stages, members, plan, slices, manifest, template, job.preset.runtime)
        shards_hit = sorted(int(k) for k in hit["shard"].unique())
        return Forgotten(model, seconds, {"shards": shards, "slices": slices, "shards_retrained": shards_hit,
                                          "stages_retrained": len(retrained), "stages": shards * slices,
                                          "retrained_share": len(retrained) / (shards * slices)})
