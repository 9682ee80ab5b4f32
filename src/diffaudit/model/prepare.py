"""The data and the model a run audits: the embedded default built once, and the committed reference model reused
when it was trained by this recipe on exactly this data (else trained here, resuming from checkpoints).

The folders beside the reference (`library`) may hold committed models of the study's arms: a retrained arm is
reused under the same rule as the reference (its training manifest names the data and recipe), so a first run need
not spend CPU-hours retraining what someone already trained from the same inputs."""

import json
from pathlib import Path

from diffaudit.config import ModelConfig, Preset, TrainConfig
from diffaudit.data.build import build_dataset
from diffaudit.data.imagefolder import ImageDataset, load_imagefolder
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.train import train
from diffaudit.progress import Progress


def prepare_data(preset: Preset, out: Path, progress: Progress) -> ImageDataset:
    if not (out / "metadata.jsonl").exists():
        build_dataset(out, preset.data, progress)
    return load_imagefolder(out)


def trained_record(folder: Path | None, train_cfg: TrainConfig, data: ImageDataset) -> dict | None:
    """The training manifest of `folder` when it holds a model trained with `train_cfg` on exactly `data`."""
    manifest = folder / "training_manifest.json" if folder else None
    if manifest is None or not manifest.exists():
        return None
    record = json.loads(manifest.read_text())
    matches = record["dataset_version"] == data.version and record["train_config"] == train_cfg.model_dump()
    return record if matches else None


def same_architecture(folder: Path, model: ModelConfig, resolution: int) -> bool:
    """Whether the model saved in `folder` is the network `model` at `resolution` would build (its UNet, noise
    schedule and text length as saved), so a `[model]` override never reuses a model of another shape."""
    unet = json.loads((folder / "unet" / "config.json").read_text())
    schedule = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    index = json.loads((folder / "model_index.json").read_text())
    saved = {**{k: unet.get(k) for k in ("block_out_channels", "down_block_types", "up_block_types",
                                         "layers_per_block", "attention_head_dim", "norm_num_groups")},
             "num_train_timesteps": schedule.get("num_train_timesteps"), "beta_schedule": schedule.get("beta_schedule"),
             "max_text_tokens": index.get("text_encoder", {}).get("max_tokens"), "resolution": unet.get("sample_size")}
    return saved == {**model.model_dump(mode="json"), "resolution": resolution}


def trained_by(folder: Path | None, preset: Preset, train_cfg: TrainConfig, data: ImageDataset) -> bool:
    """Whether `folder` holds `preset`'s network trained with `train_cfg` on exactly `data`: the one reuse rule."""
    return (trained_record(folder, train_cfg, data) is not None
            and same_architecture(folder, preset.model, preset.data.resolution))


def trained_folder(preset: Preset, data: ImageDataset, out: Path, reference: Path | None) -> Path | None:
    """The model folder `prepare_model` uses: the reference when it matches, else the one trained in `out`."""
    return next((f for f in (reference, out / "model") if trained_by(f, preset, preset.train, data)), None)


def library(reference: Path | None) -> tuple[Path, ...]:
    """The model folders committed beside `reference` (each with a `model_index.json`), itself excluded."""
    if reference is None or not reference.parent.is_dir():
        return ()
    return tuple(sorted(f for f in reference.parent.iterdir()
                        if f.is_dir() and f.resolve() != reference.resolve() and (f / "model_index.json").exists()))


def trained_in_library(models: tuple[Path, ...], preset: Preset, train_cfg: TrainConfig,
                       data: ImageDataset) -> Path | None:
    """The first committed model of `preset`'s architecture trained with `train_cfg` on exactly `data`, if any."""
    return next((f for f in models if trained_by(f, preset, train_cfg, data)), None)


def prepare_model(preset: Preset, data: ImageDataset, out: Path, reference: Path | None,
                  progress: Progress, say: bool = True) -> AuditPipeline:
    """Use the committed reference model when it was trained by this preset on this exact dataset;
    otherwise train (resuming from checkpoints in `out`). `say`: name the model used on the console."""
    folder = trained_folder(preset, data, out, reference)
    if folder is not None:
        record = trained_record(folder, preset.train, data)
        if say:
            progress.console.print(f"model: {folder} (dataset {data.version}, hash {record['model_hash']})")
        return AuditPipeline.from_pretrained(folder, preset.runtime)
    pipe = build_pipeline(preset.model, preset.data.resolution, seed=preset.train.seed, runtime=preset.runtime)
    return train(pipe, data, preset.train, out, progress).use(preset.runtime)  # trained in float32
