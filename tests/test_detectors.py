"""Memorization detectors with controls: each must rank an overfit model's training captions above never-trained
ones (positive control) and must not separate the same captions on an untrained model (negative control).

At test scale (8 px, 24 images seen 300 times) the overfit model has learnt its captions but does not draw pixel
copies (own-image tiled distance 0.36-0.64 at guidance 1, measured): the copy-level check of the detectors is
benchmarks/detectors.py, on the quick model's duplicated captions against the full probe's oracle."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from diffaudit.attacks.detect import DETECTORS
from diffaudit.attacks.detect.first_step import sd_matched_step
from diffaudit.config import PRESETS
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.model.pipeline import AuditPipeline, build_pipeline

POSITIVE_AUC = 0.8  # the memorized captions must stand out clearly
CHANCE_BAND = 0.25  # on the untrained model: |AUC - 0.5| within this (24 + 32 captions; chance sd ~0.08)


def captions(out: Path) -> tuple[list[str], list[str]]:
    table = load_imagefolder(out / "data").table
    members = table.loc[table["split"] == "member", "text"].drop_duplicates().tolist()
    return members, table.loc[table["split"] == "nonmember", "text"].drop_duplicates().tolist()[:32]


def auc(pipe: AuditPipeline, name: str, members: list[str], others: list[str]) -> float:
    scores = DETECTORS[name]().score(pipe, members + others)
    assert np.isfinite(scores).all()
    return float(roc_auc_score([1] * len(members) + [0] * len(others), scores))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_fires_on_memorized_captions_and_not_on_an_untrained_model(
        name: str, overfit_run: tuple[dict, Path]) -> None:
    _, out = overfit_run
    members, others = captions(out)
    trained = AuditPipeline.from_pretrained(out / "train" / "model")
    preset = PRESETS["tiny-overfit"]
    untrained = build_pipeline(preset.model, preset.data.resolution, seed=1)
    assert auc(trained, name, members, others) >= POSITIVE_AUC
    assert abs(auc(untrained, name, members, others) - 0.5) <= CHANCE_BAND


def test_one_step_detectors_read_the_noise_level_of_stable_diffusions_first_step(overfit_run: tuple[dict, Path]
                                                                               ) -> None:
    """Webster's x_0 at t = 999 on a cosine schedule divides by 1/sqrt(alpha-bar) ~ 20,000: pure noise. The step is
    matched by noise level instead (SD's alpha-bar at its first step is 0.0047)."""
    pipe = AuditPipeline.from_pretrained(overfit_run[1] / "train" / "model")
    t = sd_matched_step(pipe)
    assert t < 999 and 0.002 < float(pipe.scheduler.alphas_cumprod[t]) < 0.01
