"""Calibrate the copy threshold on never-trained data, before any arm is scored.

The model null: a model that draws generic emoji can come within delta of an image it never saw. Its
generations for never-trained (family-disjoint) captions give the share of captions that "copy" their own
unseen image at each delta; the study uses the largest delta (up to Carlini's cap) that keeps this floor at
the configured target. The image null (never-trained images within delta of a member) is reported beside it.
"""

from pathlib import Path

import numpy as np

from diffaudit.attacks.copies import calibrate_delta, model_null
from diffaudit.attacks.memorization import caption_following, nonmember_prompts
from diffaudit.config import Preset, SampleConfig
from diffaudit.data.families import near_copies
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.io import write_json
from diffaudit.model.generate import generate
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.shards import load_samples
from diffaudit.progress import Progress


def calibrate_copy_test(pipe: AuditPipeline, data: ImageDataset, preset: Preset, samples: Path,
                        progress: Progress | None = None) -> dict:
    """Generate for never-trained captions, measure both nulls, and choose delta. Seeds 0..N-1 and guidance
    as the extraction probe uses them, so the null is the probe's own floor."""
    s = preset.calibration
    prompts, own = nonmember_prompts(data, s.null_prompts, seed=preset.data.seed)
    rows = generate(pipe, prompts["prompt"].tolist(), list(range(preset.extraction.samples_per_prompt)),
                    [preset.sample.guidance],
                    preset.sample, samples, progress)
    images, index = load_samples(samples, rows, side=data.images.shape[1])
    null = model_null(images, index, own)
    chosen = calibrate_delta(null, cap=s.delta, target=s.null_target, bound=s.null_bound)
    if not s.calibrate:
        fixed = model_null(images, index, own, (s.delta,))[0]
        met = fixed["rate"] <= s.null_target and fixed["ci_high"] <= s.null_bound
        chosen = {**chosen, "delta": s.delta, "model_null": fixed, "met": met,
                  "reason": "met" if met else "delta fixed by the config (calibration.calibrate = false)"}
    chosen["calibrated"] = s.calibrate
    held, members = data.split("nonmember").images, data.split("member").images
    image_null = {f"{d:g}": float(near_copies(held, members, d).mean()) for d in (chosen["delta"], s.delta)}
    return {**chosen, "model_null_by_delta": null, "image_null": image_null, "null_prompts": len(prompts),
            "samples_per_prompt": preset.extraction.samples_per_prompt, "guidance": preset.sample.guidance,
            "model_hash": pipe.model_hash(), "caption_following_nonmember": caption_following(images, index),
            "unet_evaluations": int(np.sum(index["unet_evals"]))}


def copy_threshold(pipe: AuditPipeline, data: ImageDataset, preset: Preset, folder: Path,
                   progress: Progress | None = None) -> tuple[float, dict | None]:
    """The one rule for the copy threshold outside a study (`extract`, `verify-forget`), the study's own calibration
    step applied to whatever data it is given: when the data has never-trained captions, calibrate on them against
    this model (`calibrate_copy_test`; with calibration.calibrate off the configured delta is kept and its null still
    measured), written to folder/calibration.json; otherwise the configured delta, unmeasured (None)."""
    if not (data.table["split"] == "nonmember").any():
        return preset.calibration.delta, None
    calibration = calibrate_copy_test(pipe, data, preset, folder / "null" / "samples", progress)
    write_json(folder / "calibration.json", calibration)
    return calibration["delta"], calibration


def setting_null(pipe: AuditPipeline, data: ImageDataset, preset: Preset, sampling: SampleConfig, guidance: float,
                 delta: float, samples: Path, progress: Progress | None = None) -> dict:
    """The model null of one sampling setting at the calibrated `delta`: the first `calibration.setting_null_prompts`
    of the calibration's never-trained captions, drawn as the probe draws them at that setting. Delta is not re-chosen
    (it is calibrated once, at the headline setting); this says whether the copy test is valid at this one."""
    s = preset.calibration
    prompts, own = nonmember_prompts(data, min(s.setting_null_prompts, s.null_prompts), seed=preset.data.seed)
    rows = generate(pipe, prompts["prompt"].tolist(), list(range(preset.extraction.samples_per_prompt)), [guidance],
                    sampling, samples, progress)
    images, index = load_samples(samples, rows, side=data.images.shape[1])
    null = model_null(images, index, own, (delta,))[0]
    return {**null, "guidance": guidance, "sampler": f"{sampling.sampler}-{sampling.steps}",
            "guidance_start": sampling.guidance_start, "unet_evaluations": int(np.sum(index["unet_evals"]))}
