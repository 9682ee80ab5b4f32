from pathlib import Path

import pytest

from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.mitigations.dp_finetune import DPConfig, dp_finetune
from diffaudit.model.pipeline import AuditPipeline


def test_dp_finetune_spends_the_budget_and_is_reproducible(tmp_path: Path, tiny_model_dir: Path,
                                                           tiny_data: ImageDataset) -> None:
    cfg = DPConfig(epsilon=4.0, steps=3, expected_batch=2, multiplicity=2)
    calibration = tiny_data.split("calibration")
    base = AuditPipeline.from_pretrained(tiny_model_dir)
    before = base.model_hash()
    pipe, report = dp_finetune(base, calibration, cfg, tmp_path / "a")
    assert pipe.model_hash() != before
    assert 3.5 < report["epsilon_spent"] <= 4.0 + 1e-6
    assert report["delta"] == 1 / (10 * len(calibration)) and report["noise_multiplier"] > 0
    assert "calibration split only" in report["scope"]
    again, _ = dp_finetune(AuditPipeline.from_pretrained(tiny_model_dir), calibration, cfg, tmp_path / "b")
    assert again.model_hash() == pipe.model_hash()
    assert AuditPipeline.from_pretrained(tmp_path / "a" / "model").model_hash() == pipe.model_hash()


def test_smaller_epsilon_means_more_noise(tmp_path: Path, tiny_model_dir: Path, tiny_data: ImageDataset) -> None:
    sigmas = []
    for eps in (1.0, 8.0):
        _, report = dp_finetune(AuditPipeline.from_pretrained(tiny_model_dir), tiny_data.split("calibration"),
                                DPConfig(epsilon=eps, steps=2, expected_batch=2, multiplicity=1), tmp_path / f"{eps}")
        sigmas.append(report["noise_multiplier"])
    assert sigmas[0] > sigmas[1]


def test_bad_dp_config(tmp_path: Path, tiny_pipe: AuditPipeline, tiny_data: ImageDataset) -> None:
    with pytest.raises(ConfigError, match="unknown accountant"):
        dp_finetune(tiny_pipe, tiny_data.split("calibration"), DPConfig(accountant="gdpx"), tmp_path)
