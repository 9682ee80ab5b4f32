"""Train the model under audit: DDPM loss, AdamW, EMA, seeded and resumable on CPU.

Every step's batch, caption dropout and noise are drawn from generators seeded by (seed, step),
so a run resumed from a checkpoint continues exactly as an uninterrupted one would.
"""

import json
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from diffaudit import faults
from diffaudit.config import TrainConfig
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import CheckpointError
from diffaudit.io import atomic_dir, write_json, write_text
from diffaudit.model.device import host_randn, on_host, training_dtype
from diffaudit.model.lineage import write_lineage
from diffaudit.model.pipeline import AuditPipeline, refuse_pickles
from diffaudit.ownership import owned, remove_stale_temps
from diffaudit.progress import Progress


def step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def dataset_tensors(pipe: AuditPipeline, data: ImageDataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latents, caption embeddings, unconditional embedding), computed once: the encoders are frozen."""
    texts = data.texts
    unique = sorted(set(texts))
    emb = pipe.encode_text(unique)
    lookup = {t: i for i, t in enumerate(unique)}
    cond = emb[[lookup[t] for t in texts]]
    return pipe.pixels_to_latents(data.images), cond, pipe.encode_text([""])


def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("step-*"))


def _save_checkpoint(out: Path, step: int, pipe: AuditPipeline, ema: EMAModel, opt: torch.optim.Optimizer,
                     lr_sched: torch.optim.lr_scheduler.LRScheduler, meta: dict, keep: int, seconds: float) -> None:
    with atomic_dir(out / "checkpoints" / f"step-{step:06d}") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in pipe.unet.state_dict().items()},
                  tmp / "unet.safetensors")
        save_file({f"p{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                  tmp / "ema.safetensors")
        # Tensors-only state loaded back with weights_only=True, which refuses arbitrary pickled objects.
        torch.save({"optimizer": opt.state_dict(), "lr_scheduler": lr_sched.state_dict()}, tmp / "optimizer.state")
        (tmp / "state.json").write_text(json.dumps({**meta, "step": step, "seconds": round(seconds, 2)}))
    for old in _checkpoints(out)[:-keep]:
        shutil.rmtree(old)


def _resume(out: Path, pipe: AuditPipeline, ema: EMAModel, opt: torch.optim.Optimizer,
            lr_sched: torch.optim.lr_scheduler.LRScheduler, meta: dict) -> tuple[int, float]:
    """Load the newest checkpoint; returns (its step, training seconds spent before it)."""
    ckpts = _checkpoints(out)
    if not ckpts:
        return 0, 0.0
    ckpt = ckpts[-1]
    refuse_pickles(ckpt)
    try:
        state = json.loads((ckpt / "state.json").read_text())
        if {k: state.get(k) for k in meta} != meta:
            raise CheckpointError(f"checkpoint {ckpt} was made with a different config or dataset; "
                                  "train into a new output folder or delete its checkpoints/")
        pipe.unet.load_state_dict(load_file(ckpt / "unet.safetensors"))
        shadow = load_file(ckpt / "ema.safetensors", device=str(pipe.device))
        ema.shadow_params = [shadow[f"p{i}"] for i in range(len(shadow))]
        ema.optimization_step = state["step"]
        opt_state = torch.load(ckpt / "optimizer.state", weights_only=True, map_location=pipe.device)
        opt.load_state_dict(opt_state["optimizer"])
        lr_sched.load_state_dict(opt_state["lr_scheduler"])
        return int(state["step"]), float(state.get("seconds", 0.0))
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:  # torch's own message suggests unsafe loading: do not repeat it
        why = "optimizer.state is not a tensors-only file (refused by the weights-only loader)"
        raise CheckpointError(f"checkpoint {ckpt} is unreadable ({why}); delete that folder to resume from an "
                              "earlier checkpoint, or train into a new output folder") from exc
    except Exception as exc:  # a tampered or truncated file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {ckpt} is unreadable ({type(exc).__name__}: {first[:200]}); "
                              f"delete that folder to resume from an earlier checkpoint, or train into a new "
                              "output folder") from exc


def _save_snapshot(out: Path, step: int, pipe: AuditPipeline, ema: EMAModel) -> None:
    """Save the EMA weights at `step` as a loadable model, then put the training weights back."""
    params = list(pipe.unet.parameters())
    ema.store(params)
    ema.copy_to(params)
    try:
        pipe.save_pretrained(out / "snapshots" / f"step-{step:06d}")
    finally:
        ema.restore(params)


def snapshot_models(out: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every snapshot `train` kept in `out`, oldest first."""
    return [(int(p.name.split("-")[1]), p) for p in sorted((Path(out) / "snapshots").glob("step-*"))]


def _logged_step(line: str) -> float:
    """The step of a log line; a line cut short by a kill mid-write counts as not logged."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


def train(pipe: AuditPipeline, data: ImageDataset, cfg: TrainConfig, out: Path, progress: Progress | None = None,
          stop_after: int | None = None, snapshots: tuple[int, ...] = ()) -> AuditPipeline:
    """Train on `data` (its member rows), checkpointing into `out` (a model folder of ours); the EMA model goes to
    `out/model`.

    `snapshots` are steps whose EMA model is also kept, as `out/snapshots/step-NNNNNN`, for exposure curves
    (how membership becomes visible with training). `stop_after` ends the run early after that many steps (as a
    crash would), for resume tests.
    """
    with owned(Path(out), "model"):
        return _train(pipe, data, cfg, Path(out), progress, stop_after, snapshots)


def _train(pipe: AuditPipeline, data: ImageDataset, cfg: TrainConfig, out: Path, progress: Progress | None,
           stop_after: int | None, snapshots: tuple[int, ...]) -> AuditPipeline:
    members = data.split("member")
    if len(members) == 0:
        raise CheckpointError(f"dataset {data.root} has no member rows to train on")
    # A half-precision pipeline trains in float32 and is handed back in its dtype after saving float32.
    serve_dtype = pipe.dtype
    if training_dtype(serve_dtype) != serve_dtype:
        pipe.to(pipe.device, training_dtype(serve_dtype))
    x0, cond, uncond = dataset_tensors(pipe, members)
    unet = pipe.unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_sched = get_scheduler("constant_with_warmup", opt, num_warmup_steps=cfg.warmup_steps)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    meta = {"train_config": cfg.model_dump(), "dataset_version": data.version}
    remove_stale_temps(out)
    start, spent = _resume(out, pipe, ema, opt, lr_sched, meta)
    log_path = out / "train_log.jsonl"
    kept = [ln for ln in (log_path.read_text().splitlines() if log_path.exists() else [])
            if _logged_step(ln) <= start]
    write_text(log_path, "".join(ln + "\n" for ln in kept))
    n = len(x0)
    task = progress.add_task("train", total=cfg.steps, completed=start) if progress else None
    t0, running, last_loss = time.perf_counter(), [], None
    with log_path.open("a") as log:
        for step in range(start, cfg.steps):
            if stop_after is not None and step >= start + stop_after:
                return pipe
            rng = np.random.default_rng([cfg.seed, step])
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, step))
            idx = pipe.place(torch.from_numpy(rng.choice(n, cfg.batch_size, replace=n < cfg.batch_size)))
            drop = pipe.place(torch.from_numpy(rng.random(cfg.batch_size) < cfg.caption_dropout))
            c = torch.where(drop[:, None, None], uncond, cond[idx])
            noise = pipe.place(host_randn(x0[idx].shape, generator=gen))
            with on_host():
                t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
            t = pipe.place(t)
            noisy = pipe.scheduler.add_noise(x0[idx], noise, t)
            loss = torch.nn.functional.mse_loss(unet(noisy, t, encoder_hidden_states=c).sample, noise)
            loss.backward()
            opt.step()
            lr_sched.step()
            opt.zero_grad(set_to_none=True)
            ema.step(unet.parameters())
            running.append(loss.detach())
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                last_loss = float(np.mean(torch.stack(running).double().cpu().numpy()))  # one sync per log line
                log.write(json.dumps({"step": done, "loss": last_loss, "lr": lr_sched.get_last_lr()[0],
                                      "seconds": round(spent + time.perf_counter() - t0, 2)}) + "\n")
                log.flush()
                running = []
            if done in snapshots:
                _save_snapshot(out, done, pipe, ema)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                _save_checkpoint(out, done, pipe, ema, opt, lr_sched, meta, cfg.keep_checkpoints,
                                 spent + time.perf_counter() - t0)
            if task is not None:
                progress.update(task, advance=1, description="train" + (f" loss {last_loss:.4f}" if last_loss else ""))
            faults.point("train-step")
    ema.copy_to(unet.parameters())
    unet.eval().requires_grad_(False)
    pipe.save_pretrained(out / "model")
    write_lineage(out / "model", members)
    write_json(out / "model" / "training_manifest.json", {
        **meta, "model_hash": pipe.model_hash(), "steps": cfg.steps, "rows": n,
        "seconds": round(spent + time.perf_counter() - t0, 1), "weights": "EMA",  # summed over resumed parts
    })
    return pipe.to(pipe.device, serve_dtype)
