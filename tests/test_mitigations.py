"""The mitigation registry: each arm comes from one registered mitigation, never changes the base in place, and
describes itself in plain words; caption randomization (added in one file) keeps every image's exposure."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from diffaudit.config import CaptionRandomizationConfig, Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.mitigations.base import Context
from diffaudit.mitigations.caption_randomization import randomized_captions
from diffaudit.mitigations.registry import MITIGATIONS, describe
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.progress import make_progress
from diffaudit.study.runner import Study, check_names


def test_caption_randomization_keeps_each_images_exposure_and_changes_captions(tiny_data: ImageDataset) -> None:
    cfg = CaptionRandomizationConfig(variants=4, replace_prob=0.2, insert_prob=0.5)
    out = randomized_captions(tiny_data, cfg)
    members, new = tiny_data.split("member"), out.split("member")
    assert len(new) == 4 * len(members)
    assert Counter(new.table["sha256"]) == Counter({k: 4 * v for k, v in Counter(members.table["sha256"]).items()})
    assert (out.split("nonmember").table["text"].tolist() == tiny_data.split("nonmember").table["text"].tolist())
    changed = np.mean([a != b for a, b in zip(np.tile(members.texts, 4), new.texts, strict=True)])
    assert 0.2 < changed < 1.0, f"{changed:.0%} of captions perturbed"
    assert randomized_captions(tiny_data, cfg).texts == out.texts, "seeded: a resumed study retrains the same data"
    none = randomized_captions(tiny_data, CaptionRandomizationConfig(variants=1, replace_prob=0.0, insert_prob=0.0))
    assert none.split("member").texts == members.texts, "negative control: no perturbation, the same captions"


def test_apply_never_changes_the_base_in_place(tmp_path: Path, tiny: Preset, tiny_data: ImageDataset,
                                              tiny_model_dir: Path) -> None:
    base = AuditPipeline.from_pretrained(tiny_model_dir)
    before = base.model_hash()
    ctx = Context(tiny, tiny_data, 0, tmp_path, base=lambda: base, retrain=lambda d, f: (base, 0.0))
    for kind in ("guidance", "dp"):
        mitigation = MITIGATIONS[kind]
        for variant in mitigation.variants(tiny):
            arm = mitigation.apply(variant, ctx.__class__(**{**ctx.__dict__, "folder": tmp_path / variant.name}))
            words = describe({"kind": kind, "arm": variant.name, "variant": variant.as_record(), **arm.record})
            assert words.title and words.what and variant.name not in words.title
    assert base.model_hash() == before, "no mitigation may change the base model it was handed"


def test_the_study_runs_the_configured_mitigations_only(tmp_path: Path, tiny: Preset, tiny_data_dir: Path) -> None:
    preset = tiny.model_copy(update={"study": tiny.study.model_copy(update={"mitigations": ("guidance",)})})
    study = Study(preset, tmp_path, None, progress=make_progress(disable=True))
    assert [name for name, _ in study.arms(0)] == ["base", "base-tiered", "guidance-3"]
    with pytest.raises(ConfigError, match="study.mitigations: unknown mitigation .prayer."):
        check_names(tiny.model_copy(update={"study": tiny.study.model_copy(
            update={"mitigations": ("guidance", "prayer")})}))
