"""The quick study on the embedded default: data -> model -> generations -> memorization by duplication.

Each step's output is kept in the run folder and reused when the run is repeated or resumed.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.attacks.memorization import DELTA, memorization_scores, target_prompts
from diffaudit.attacks.metrics import rate_table
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset, load_imagefolder
from diffaudit.data.openmoji import build_openmoji
from diffaudit.io import write_json
from diffaudit.model.generate import generate, load_samples
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.train import train
from diffaudit.progress import Progress
from diffaudit.report.figures import sample_grid


@dataclass
class DemoResult:
    per_prompt: pd.DataFrame
    headline: pd.DataFrame  # dup>=32 / 2-31 / singleton
    rates: pd.DataFrame  # per (dup_kind, dup_count)
    grid: Path


def prepare_data(preset: Preset, out: Path, progress: Progress) -> ImageDataset:
    if not (out / "metadata.jsonl").exists():
        build_openmoji(out, preset.data, progress)
    return load_imagefolder(out)


def prepare_model(preset: Preset, data: ImageDataset, out: Path, reference: Path | None,
                  progress: Progress) -> AuditPipeline:
    """Use the committed reference model when it was trained by this preset on this exact dataset;
    otherwise train (resuming from checkpoints in `out`)."""
    for folder in (reference, out / "model"):
        manifest = folder / "training_manifest.json" if folder else None
        if manifest and manifest.exists():
            record = json.loads(manifest.read_text())
            if record["dataset_version"] == data.version and record["train_config"] == preset.train.model_dump():
                progress.console.print(f"model: {folder} (dataset {data.version}, hash {record['model_hash']})")
                return AuditPipeline.from_pretrained(folder)
    pipe = build_pipeline(preset.model, preset.data.resolution, seed=preset.train.seed)
    return train(pipe, data, preset.train, out, progress)


def memorization_by_duplication(pipe: AuditPipeline, data: ImageDataset, preset: Preset, out: Path,
                                samples_per_prompt: int, n_singletons: int, progress: Progress) -> DemoResult:
    """Generate `samples_per_prompt` images for each target caption and measure copies of its training image."""
    targets = target_prompts(data, n_singletons, seed=preset.data.seed)
    gen_dir = out / "samples"
    rows = generate(pipe, targets["prompt"].tolist(), list(range(samples_per_prompt)), [preset.sample.guidance],
                    preset.sample, gen_dir, progress)
    images, index = load_samples(gen_dir, rows)
    per_prompt = memorization_scores(images, index, data).merge(targets, on="prompt")
    rates = rate_table(per_prompt, ["dup_kind", "dup_count"])
    headline = rate_table(per_prompt.assign(group=np.select(
        [per_prompt["dup_count"] >= 32, per_prompt["dup_count"] == 1], ["dup>=32", "singleton"], "2-31")), ["group"])
    per_prompt.to_parquet(out / "memorization.parquet", index=False)
    write_json(out / "memorization.json", {
        "delta": DELTA, "distance": "RMS over [0,1] pixels", "samples_per_prompt": samples_per_prompt,
        "sampler": preset.sample.sampler, "steps": preset.sample.steps, "guidance": preset.sample.guidance,
        "seeds": f"0..{samples_per_prompt - 1}", "model_hash": pipe.model_hash(), "dataset_version": data.version,
        "preset": preset.model_dump(), "by_group": headline.to_dict("records"), "by_dup": rates.to_dict("records"),
    })
    members = data.table[data.table["split"] == "member"]
    refs = {t: data.images[g.index[0]] for t, g in members.groupby("text")}
    shown = (per_prompt.sort_values("dup_count", ascending=False).groupby("dup_count").head(2)["prompt"].tolist())
    grid = sample_grid(images, index, refs, shown, out / "samples_grid.png")
    return DemoResult(per_prompt, headline, rates, grid)
