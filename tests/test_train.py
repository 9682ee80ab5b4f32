import json
from pathlib import Path

import pytest

from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import CheckpointError
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.train import train


def _train(tiny: Preset, data: ImageDataset, out: Path, **kw: object) -> AuditPipeline:
    return train(build_pipeline(tiny.model, tiny.data.resolution), data, tiny.train, out, **kw)


def test_training_changes_weights_and_is_reproducible(tmp_path: Path, tiny: Preset, tiny_data: ImageDataset,
                                                     tiny_model_dir: Path) -> None:
    fresh = build_pipeline(tiny.model, tiny.data.resolution).model_hash()
    again = _train(tiny, tiny_data, tmp_path / "a").model_hash()
    reference = AuditPipeline.from_pretrained(tiny_model_dir).model_hash()
    assert again == reference != fresh
    log = [json.loads(ln) for ln in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, tiny.train.steps + 1))
    manifest = json.loads((tmp_path / "a" / "model" / "training_manifest.json").read_text())
    assert manifest["dataset_version"] == tiny_data.version and manifest["model_hash"] == again


def test_resume_after_crash_matches_uninterrupted(tmp_path: Path, tiny: Preset, tiny_data: ImageDataset,
                                                  tiny_model_dir: Path) -> None:
    _train(tiny, tiny_data, tmp_path / "r", stop_after=3)  # "crashes" after step 3; last checkpoint: step 2
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["step-000002"]
    assert not (tmp_path / "r" / "model").exists()
    resumed = _train(tiny, tiny_data, tmp_path / "r")
    assert resumed.model_hash() == AuditPipeline.from_pretrained(tiny_model_dir).model_hash()
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4], "the log keeps no entry twice after a resume"


def test_resume_refuses_a_different_config(tmp_path: Path, tiny: Preset, tiny_data: ImageDataset) -> None:
    _train(tiny, tiny_data, tmp_path / "c", stop_after=2)
    other = tiny.train.model_copy(update={"lr": 1.0})
    with pytest.raises(CheckpointError, match="different config"):
        train(build_pipeline(tiny.model, tiny.data.resolution), tiny_data, other, tmp_path / "c")
