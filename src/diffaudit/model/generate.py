"""Generate prompts x seeds x guidance scales into image shards plus an index, resumably.

The index (parquet) is the source of truth: a shard counts only once the index lists it, and the
index is rewritten atomically after each shard, so a killed run resumes without losing or
duplicating a sample.
"""

from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diffaudit.config import SampleConfig
from diffaudit.errors import CheckpointError
from diffaudit.io import write_atomic
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import sample
from diffaudit.progress import Progress

INDEX = "index.parquet"


def _write_shard(path: Path, images: np.ndarray) -> None:
    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, images)

    write_atomic(path, save)


def generate(pipe: AuditPipeline, prompts: list[str], seeds: list[int], guidances: list[float], cfg: SampleConfig,
             out: Path, progress: Progress | None = None, shard_size: int = 1024,
             max_shards: int | None = None) -> pd.DataFrame:
    """Write every (prompt, seed, guidance) sample once; returns the index. `max_shards` stops early (tests)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_hash = pipe.model_hash()
    index = pd.read_parquet(out / INDEX) if (out / INDEX).exists() else pd.DataFrame()
    if not index.empty:
        seen = index[["model_hash", "sampler", "steps"]].drop_duplicates().to_dict("records")
        if seen != [{"model_hash": model_hash, "sampler": cfg.sampler, "steps": cfg.steps}]:
            raise CheckpointError(f"{out / INDEX} holds samples from {seen}; this run uses model {model_hash}, "
                                  f"{cfg.sampler} x{cfg.steps}: write to a new folder")
    done = set(zip(index.get("prompt_idx", []), index.get("seed", []), index.get("guidance", []), strict=True))
    # Guidance is the outer loop, so a shard's jobs are grouped by scale in the order they are sampled.
    jobs = [(g, p, s) for g, p, s in product(guidances, range(len(prompts)), seeds) if (p, s, g) not in done]
    emb = pipe.encode_text(sorted(set(prompts)))
    lookup = {t: i for i, t in enumerate(sorted(set(prompts)))}
    task = progress.add_task("generate", total=len(jobs) + len(done), completed=len(done)) if progress else None
    for shards_written, start in enumerate(range(0, len(jobs), shard_size)):
        if max_shards is not None and shards_written >= max_shards:
            break
        chunk = jobs[start: start + shard_size]
        images, evals = [], []
        for g in dict.fromkeys(j[0] for j in chunk):  # one sampler call per guidance scale in the shard
            part = [j for j in chunk if j[0] == g]
            cond = emb[torch.tensor([lookup[prompts[p]] for _, p, _ in part])]
            before = pipe.denoiser.evaluations
            images.append(sample(pipe, cond, [s for _, _, s in part], g, cfg.steps, cfg.sampler, cfg.batch_size))
            evals += [(pipe.denoiser.evaluations - before) // len(part)] * len(part)
        shard = f"shard-{index['shard'].nunique() if not index.empty else 0:05d}.npy"
        _write_shard(out / shard, np.concatenate(images))
        rows = pd.DataFrame({
            "prompt_idx": [p for _, p, _ in chunk], "prompt": [prompts[p] for _, p, _ in chunk],
            "seed": [s for _, _, s in chunk], "guidance": [float(g) for g, _, _ in chunk],
            "steps": cfg.steps, "sampler": cfg.sampler, "shard": shard, "offset": np.arange(len(chunk)),
            "model_hash": model_hash, "unet_evals": evals,
        })
        index = pd.concat([index, rows], ignore_index=True)
        write_atomic(out / INDEX, lambda tmp, idx=index: idx.to_parquet(tmp, index=False))
        if task is not None:
            progress.advance(task, len(chunk))
    return index


def load_samples(out: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """All generated images (uint8 N x H x W x 3) in index order, with the index."""
    out = Path(out)
    if not (out / INDEX).exists():
        raise CheckpointError(f"{out} holds no generated samples ({INDEX} is missing)")
    index = pd.read_parquet(out / INDEX)
    shards = {name: np.load(out / name, allow_pickle=False) for name in index["shard"].unique()}
    images = np.stack([shards[s][o] for s, o in zip(index["shard"], index["offset"], strict=True)])
    return images, index
