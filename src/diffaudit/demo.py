"""The quick study on the embedded default: data -> model -> generations -> memorization by duplication.

Each step's output is kept in the run folder and reused when the run is repeated or resumed.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.attacks.memorization import caption_following, memorization_scores, target_prompts
from diffaudit.attacks.metrics import rate_table
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.figures import sample_grid
from diffaudit.io import write_json
from diffaudit.model.generate import generate
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.shards import load_samples
from diffaudit.progress import Progress
from diffaudit.study.calibration import calibrate_copy_test
from diffaudit.study.extraction_audit import dup_bucket


@dataclass
class DemoResult:
    per_prompt: pd.DataFrame
    headline: pd.DataFrame  # dup>=32 / 2-31 / singleton
    rates: pd.DataFrame  # per duplication bucket, with family counts and family/other hits
    grid: Path
    calibration: dict  # delta and the model null it was chosen against
    following: dict  # caption-following ratio on the singleton captions


def memorization_by_duplication(pipe: AuditPipeline, data: ImageDataset, preset: Preset, out: Path,
                                samples_per_prompt: int, n_singletons: int, progress: Progress,
                                null_samples: Path | None = None) -> DemoResult:
    """Calibrate delta on never-trained captions, then generate `samples_per_prompt` images for each target caption
    and measure copies of its own training image, per exact copy count (family count beside it). `null_samples`
    may name a study's calibration samples of the same model: content-keyed, they are reused, not redrawn."""
    preset = preset.model_copy(update={"extraction": preset.extraction.model_copy(
        update={"samples_per_prompt": samples_per_prompt})})
    calibration = calibrate_copy_test(pipe, data, preset, null_samples or out / "null_samples", progress)
    delta = calibration["delta"]
    targets = target_prompts(data, n_singletons, seed=preset.data.seed)
    gen_dir = out / "samples"
    rows = generate(pipe, targets["prompt"].tolist(), list(range(samples_per_prompt)), [preset.sample.guidance],
                    preset.sample, gen_dir, progress)
    images, index = load_samples(gen_dir, rows, side=data.images.shape[1])
    per_prompt = memorization_scores(images, index, data, delta).merge(targets, on="prompt")
    per_prompt["dup_bucket"] = dup_bucket(per_prompt["dup_count"])
    rates = rate_table(per_prompt, ["dup_bucket"], hit="memorized").merge(
        per_prompt.groupby("dup_bucket").agg(family_count=("family_count", "median"), families=("family", "nunique"),
                                             family_hits=("family_hit", "sum"), other_hits=("other_hit", "sum"))
        .reset_index(), on="dup_bucket")
    headline = rate_table(per_prompt.assign(group=np.select(
        [per_prompt["dup_count"] >= 32, per_prompt["dup_count"] == 1], ["dup>=32", "singleton"], "2-31")), ["group"],
        hit="memorized")
    singles = per_prompt["dup_count"] == 1
    following = caption_following(images[index["prompt"].isin(per_prompt.loc[singles, "prompt"]).to_numpy()],
                                  index[index["prompt"].isin(per_prompt.loc[singles, "prompt"])].reset_index(drop=True))
    per_prompt.to_parquet(out / "memorization.parquet", index=False)
    write_json(out / "memorization.json", {
        "delta": delta, "calibration": calibration, "distance": "tiled RMS over [0,1] pixels (attacks.copies)",
        "samples_per_prompt": samples_per_prompt, "sampler": preset.sample.sampler, "steps": preset.sample.steps,
        "guidance": preset.sample.guidance, "seeds": f"0..{samples_per_prompt - 1}", "model_hash": pipe.model_hash(),
        "dataset_version": data.version, "preset": preset.model_dump(), "caption_following_singletons": following,
        "by_group": headline.to_dict("records"), "by_dup": rates.to_dict("records"),
    })
    members = data.table[data.table["split"] == "member"]
    refs = {t: data.images[g.index[0]] for t, g in members.groupby("text")}
    shown = (per_prompt.sort_values("dup_count", ascending=False).groupby("dup_count").head(2)["prompt"].tolist())
    grid = sample_grid(images, index, refs, shown, out / "samples_grid.png")
    return DemoResult(per_prompt, headline, rates, grid, calibration, following)
