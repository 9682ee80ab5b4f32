"""Committed arm models (beside the reference) are reused only when made from the same inputs: the retrain's data
and recipe, the DP fine-tune's settings, base model and dataset; anything else is trained again."""

import json
import shutil
from pathlib import Path

import pytest

from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.mitigations import private_finetune
from diffaudit.mitigations.base import Context
from diffaudit.mitigations.registry import MITIGATIONS
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.prepare import library, trained_in_library
from diffaudit.progress import make_progress
from diffaudit.study.runner import Study


def test_a_retrain_reuses_a_committed_model_trained_from_the_same_inputs(tmp_path: Path, tiny: Preset,
                                                                          tiny_data: ImageDataset,
                                                                          tiny_model_dir: Path) -> None:
    models = tmp_path / "models"
    for name in ("reference", "arm"):
        shutil.copytree(tiny_model_dir, models / name)
    (models / "notes").mkdir()  # not a model: never listed
    assert library(models / "reference") == (models / "arm",)
    study = Study(tiny, tmp_path / "run", models / "reference", make_progress(disable=True))
    pipe, seconds = study.retrain(tiny_data, tmp_path / "run" / "arm", tiny.train.seed)
    assert not (tmp_path / "run" / "arm").exists(), "nothing trained: the committed model was reused"
    assert pipe.model_hash() == AuditPipeline.from_pretrained(models / "arm").model_hash()
    assert seconds == json.loads((models / "arm" / "training_manifest.json").read_text())["seconds"]
    other_seed = tiny.train.model_copy(update={"seed": tiny.train.seed + 1})
    assert trained_in_library(study.library, tiny, other_seed, tiny_data) is None, "another recipe is trained again"
    fewer = tiny_data.where(tiny_data.table.index.to_numpy() > 0)
    assert trained_in_library(study.library, tiny, tiny.train, fewer) is None, "other data is trained again"
    wider = tiny.model_copy(update={"model": tiny.model.model_copy(update={"attention_head_dim": 8})})
    assert trained_in_library(study.library, wider, tiny.train, tiny_data) is None, "another network is trained again"


def test_a_dp_arm_reuses_a_committed_finetune_only_of_its_own_base(tmp_path: Path, tiny: Preset,
                                                                    tiny_data: ImageDataset, tiny_model_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base = AuditPipeline.from_pretrained(tiny_model_dir)
    dp = MITIGATIONS["dp"]
    variant = dp.variants(tiny)[0]

    def context(folder: Path, models: tuple[Path, ...] = ()) -> Context:
        return Context(tiny, tiny_data, 0, folder, base=lambda: base, retrain=lambda d, f: (base, 0.0),
                       library=models)

    made = dp.apply(variant, context(tmp_path / "made"))
    committed = tmp_path / "models" / "dp"
    shutil.copytree(tmp_path / "made" / "model", committed)
    shutil.copy(tmp_path / "made" / "dp_report.json", committed)
    inputs = {"base_model_hash": base.model_hash(), "dataset_version": tiny_data.version}
    (committed / "committed.json").write_text(json.dumps(inputs))

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("fine-tuned again")

    audited = []
    audit = private_finetune.dp_audit
    monkeypatch.setattr(private_finetune, "dp_finetune", never)
    monkeypatch.setattr(private_finetune, "dp_audit", lambda base, pipe, *a: audited.append(pipe) or audit(
        base, pipe, *a))
    reused = dp.apply(variant, context(tmp_path / "reused", (committed,)))
    assert reused.pipe.model_hash() == made.pipe.model_hash()
    assert reused.record["dp"] == made.record["dp"]
    assert [p.model_hash() for p in audited] == [made.pipe.model_hash()], "the reused fine-tune is audited here"
    assert reused.record["dp_audit"] == made.record["dp_audit"]
    longer = tiny.model_copy(update={"dp": tiny.dp.model_copy(update={"steps": tiny.dp.steps + 1})})
    with pytest.raises(AssertionError, match="fine-tuned again"):
        dp.apply(dp.variants(longer)[0], Context(longer, tiny_data, 0, tmp_path / "longer", base=lambda: base,
                                                 retrain=lambda d, f: (base, 0.0), library=(committed,)))
    for changed in ({"base_model_hash": "another base"}, {"dataset_version": "another dataset"}):
        (committed / "committed.json").write_text(json.dumps({**inputs, **changed}))
        with pytest.raises(AssertionError, match="fine-tuned again"):
            dp.apply(variant, context(tmp_path / "other", (committed,)))
