"""Generate prompts x seeds x guidance scales into image shards plus an index, resumably and keyed by content.

A sample is identified by (prompt text, seed, guidance) within a folder whose samples all share one model
hash, sampler, step count and conditioning (`model.conditioning`: the caption's text unless an attack or an
inference-time mitigation puts something else there). The index (parquet) is the source of truth: a shard counts
only once the index lists it, and the index is rewritten atomically after each shard. So a killed run loses at most one
shard, a reordered prompt list is a no-op, added prompts, seeds or scales extend the folder, and a changed
model, sampler or step count is refused rather than mixed in.
"""

from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diffaudit import faults
from diffaudit.backend import mapped
from diffaudit.config import SampleConfig
from diffaudit.data.imagefolder import caption_problem
from diffaudit.errors import CheckpointError, ConfigError
from diffaudit.io import write_atomic
from diffaudit.model.conditioning import Conditioning, Text
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import sample
from diffaudit.model.shards import INDEX, KEY
from diffaudit.ownership import owned, remove_stale_temps
from diffaudit.progress import Progress
from diffaudit.resources import check_fits

REQUEST_ROW_BYTES = 400  # one (prompt, seed, guidance) row of the request table and the index, generously
SHARD_SIZE = 64  # a kill loses at most this many samples (~16 s of the quick preset's sampling on 2 cores)


def _write_shard(path: Path, images: np.ndarray) -> None:
    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, images)

    write_atomic(path, save)


def sample_shard(pipe: AuditPipeline, cond: torch.Tensor, chunk: list[tuple[str, int, float]], cfg: SampleConfig,
                 batch: int) -> tuple[np.ndarray, list[int]]:
    """One shard's images (in `chunk` order) and each sample's UNet evaluations: one sampler call per guidance
    scale. A worker runs this as it is; the caller writes the shard."""
    images, evals, cond = [], [], pipe.place(cond)
    for g in dict.fromkeys(j[2] for j in chunk):
        rows = [i for i, j in enumerate(chunk) if j[2] == g]
        with pipe.denoiser.counting() as spent:
            images.append(sample(pipe, cond[rows], [chunk[i][1] for i in rows], g, cfg.steps, cfg.sampler, batch,
                                 guidance_start=cfg.guidance_start, early_guidance=cfg.early_guidance))
        evals += [spent.evaluations // len(rows)] * len(rows)
    faults.point("sample-shard")  # drawn, not yet written: a crash here loses the shard's work only
    return np.concatenate(images), evals


def _read_index(out: Path) -> pd.DataFrame:
    """The folder's index; folders written before conditionings (or delayed guidance) existed hold text samples
    guided at every step."""
    if not (out / INDEX).exists():
        return pd.DataFrame()
    index = pd.read_parquet(out / INDEX)
    older = {"conditioning": Text.name, "guidance_start": 0.0, "early_guidance": 0.0}
    return index.assign(**{k: v for k, v in older.items() if k not in index.columns})


def _check_folder(out: Path, index: pd.DataFrame, want: dict) -> None:
    """Every sample in a folder shares model, sampler and steps; name what differs instead of mixing them."""
    if index.empty:
        return
    missing = [k for k in want if k not in index.columns]
    if missing:
        raise CheckpointError(f"{out / INDEX} was written by an older diffaudit (no {missing} column); "
                              "write to a new folder")
    seen = index[list(want)].drop_duplicates().to_dict("records")
    if len(seen) != 1 or seen[0] != want:
        differ = sorted({k for rec in seen for k in want if rec[k] != want[k]})
        have = ", ".join(f"{k}={sorted({str(r[k]) for r in seen})}" for k in differ)
        ask = ", ".join(f"{k}={want[k]}" for k in differ)
        raise CheckpointError(f"{out / INDEX} holds samples made with {have}; this run asks {ask}. "
                              "Write to a new folder (samples from different settings are never mixed)")


def can_share(out: Path, pipe: AuditPipeline, cfg: SampleConfig, conditioning: Conditioning | None = None) -> bool:
    """Whether `out` is a generation folder of this model, sampler, step count and conditioning (so it can be
    extended)."""
    if not (Path(out) / INDEX).exists():
        return False
    try:
        _check_folder(Path(out), _read_index(Path(out)), _settings(pipe, cfg, conditioning))
    except CheckpointError:
        return False
    return True


def _settings(pipe: AuditPipeline, cfg: SampleConfig, conditioning: Conditioning | None) -> dict:
    return {"model_hash": pipe.model_hash(), "pipeline_config": pipe.config_hash(), "sampler": cfg.sampler,
            "steps": cfg.steps, "guidance_start": cfg.guidance_start, "early_guidance": cfg.early_guidance,
            "conditioning": (conditioning or Text()).name}


def plan(pipe: AuditPipeline, prompts: int, seeds: int, guidances: int, out: Path) -> None:
    """Refuse a request whose samples (on disk), request table and conditioning (in memory, all at once) cannot fit,
    before any of it is built."""
    n = prompts * seeds * guidances
    tokens = int(pipe.text_config.get("max_tokens", 77))  # Stable Diffusion's CLIP pads to 77
    embedding = prompts * seeds * tokens * pipe.unet.config.cross_attention_dim * 4
    check_fits(f"generating {n:,} samples ({prompts:,} prompts x {seeds:,} seeds x {guidances} scales)",
               memory=n * REQUEST_ROW_BYTES + embedding, disk=n * pipe.resolution**2 * 3, where=out)


def requested_keys(prompts: list[str], seeds: list[int], guidances: list[float]) -> pd.DataFrame:
    """The (prompt, seed, guidance) grid in sampling order: guidance outer, so a batch shares one scale."""
    for p in prompts:
        problem = caption_problem(p)
        if problem:
            raise ConfigError(f"prompt: {problem}")
    grid = product(dict.fromkeys(float(g) for g in guidances), dict.fromkeys(prompts), dict.fromkeys(map(int, seeds)))
    return pd.DataFrame([(p, s, g) for g, p, s in grid], columns=["prompt", "seed", "guidance"])


def generate(pipe: AuditPipeline, prompts: list[str], seeds: list[int], guidances: list[float], cfg: SampleConfig,
             out: Path, progress: Progress | None = None, shard_size: int = SHARD_SIZE,
             max_shards: int | None = None, conditioning: Conditioning | None = None) -> pd.DataFrame:
    """Write every (prompt, seed, guidance) sample once into `out` (a samples folder of ours); returns the index
    rows of the requested samples in request order (the folder may hold more). `max_shards` stops early, as a crash
    would (tests)."""
    with owned(Path(out), "samples"):
        return _generate(pipe, prompts, seeds, guidances, cfg, Path(out), progress, shard_size, max_shards,
                         conditioning)


def _generate(pipe: AuditPipeline, prompts: list[str], seeds: list[int], guidances: list[float], cfg: SampleConfig,
              out: Path, progress: Progress | None, shard_size: int, max_shards: int | None,
              conditioning: Conditioning | None) -> pd.DataFrame:
    conditioning = conditioning or Text()
    if shard_size < 1:
        raise ConfigError(f"shard_size must be at least 1, got {shard_size}")
    limit = pipe.scheduler.config.num_train_timesteps
    if cfg.steps > limit:
        raise ConfigError(f"{cfg.steps} sampling steps exceed the model's {limit} training timesteps")
    plan(pipe, len(prompts), len(seeds), len(guidances), out)
    requested = requested_keys(prompts, seeds, guidances)  # checked before anything is written
    out = Path(out)
    want = _settings(pipe, cfg, conditioning)
    index = _read_index(out)
    _check_folder(out, index, want)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    done = set(index[KEY].itertuples(index=False, name=None)) if not index.empty else set()
    todo = [k for k in requested.itertuples(index=False, name=None) if k not in done]
    # The conditioning of the whole request, so a sample's embedding does not depend on where a crash fell; its own
    # UNet calls (an attack's search, a setting's optimisation) are shared out over the request, so each sample
    # carries the same cost whether it was written before or after a resume.
    keys = list(dict.fromkeys((p, s) for p, s, _ in requested.itertuples(index=False, name=None)))
    with pipe.denoiser.counting() as prepared:
        emb = conditioning(pipe, [k[0] for k in keys], [k[1] for k in keys]) if todo else None
    share, rest = divmod(prepared.evaluations, max(len(requested), 1))
    upfront = {k: share + (i < rest) for i, k in enumerate(requested.itertuples(index=False, name=None))}
    row_of = {k: i for i, k in enumerate(keys)}  # one embedding per (prompt, seed), shared across scales
    task = (progress.add_task("generate", total=len(requested), completed=len(requested) - len(todo))
            if progress else None)
    next_shard = int(index["shard"].str[6:11].astype(int).max()) + 1 if not index.empty else 0
    chunks = [todo[start: start + shard_size] for start in range(0, len(todo), shard_size)][:max_shards]
    batch = min(cfg.batch_size, shard_size)
    blocks = [(emb[[row_of[(p, s)] for p, s, _ in chunk]].cpu(), chunk, cfg, batch) for chunk in chunks]
    # Shards come back in order wherever they were drawn (`backend`), so the index grows exactly as here.
    for n, (chunk, (images, evals)) in enumerate(zip(chunks, mapped(pipe, sample_shard, blocks), strict=True)):
        shard = f"shard-{next_shard + n:05d}.npy"
        _write_shard(out / shard, images)
        evals = [e + upfront[k] for e, k in zip(evals, chunk, strict=True)]
        rows = pd.DataFrame(chunk, columns=KEY).assign(**want, shard=shard, offset=np.arange(len(chunk)),
                                                       unet_evals=evals)
        index = pd.concat([index, rows], ignore_index=True)
        write_atomic(out / INDEX, lambda tmp, idx=index: idx.to_parquet(tmp, index=False))
        faults.point("generate-shard")
        if task is not None:
            progress.advance(task, len(chunk))
    return requested.merge(index, on=KEY, how="inner")


