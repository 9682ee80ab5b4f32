from pathlib import Path

import numpy as np
import pytest

from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.mitigations.dp_audit import audit_statistic, dp_audit, epsilon_lower_bound
from diffaudit.mitigations.dp_finetune import DPConfig, dp_finetune
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.train import train


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


def test_dp_finetune_takes_a_model_straight_from_training(tmp_path: Path, tiny: Preset,
                                                          tiny_data: ImageDataset) -> None:
    """train() hands back a frozen UNet; the fine-tune must still find parameters to privatise."""
    pipe = train(build_pipeline(tiny.model, tiny.data.resolution), tiny_data, tiny.train, tmp_path / "train")
    before = pipe.model_hash()
    tuned, report = dp_finetune(pipe, tiny_data.split("calibration"), DPConfig(epsilon=8.0, steps=2, expected_batch=2,
                                                                               multiplicity=1), tmp_path / "dp")
    assert tuned.model_hash() != before and report["noise_multiplier"] > 0


def test_nonprivate_control_has_no_noise_and_no_budget(tmp_path: Path, tiny_model_dir: Path,
                                                       tiny_data: ImageDataset) -> None:
    _, report = dp_finetune(AuditPipeline.from_pretrained(tiny_model_dir), tiny_data.split("calibration"),
                            DPConfig(epsilon=float("inf"), steps=2, expected_batch=2, multiplicity=1), tmp_path)
    assert report["noise_multiplier"] == 0 and report["epsilon_spent"] == float("inf")


def test_epsilon_lower_bound_follows_the_dp_inequalities() -> None:
    assert epsilon_lower_bound(50, 100, 50, 100, 1e-5) == 0  # a test at chance rules nothing out
    perfect = epsilon_lower_bound(1000, 1000, 0, 1000, 1e-5)
    assert 5 < perfect < 8  # bounded by the sample size: ln(1000 / 3.7) ~ 5.6
    assert epsilon_lower_bound(100, 100, 0, 100, 1e-5) < perfect
    assert epsilon_lower_bound(90, 100, 10, 100, 1e-5) > 1  # TPR 0.9 at FPR 0.1 breaks eps = 1


def test_audit_statistic_measures_on_the_half_it_did_not_choose_on() -> None:
    """Positive: well-separated scores break eps = 1 on the measured half. Negative: identical distributions give
    a bound of 0, however the threshold was picked."""
    rng = np.random.default_rng(0)
    select_m, select_h = np.arange(300) < 150, np.arange(300) < 150
    separated = audit_statistic(rng.normal(3, 1, 300), rng.normal(0, 1, 300), select_m, select_h, 1e-5)
    assert separated["epsilon_lower_bound"] > 1 and separated["measured_members"] == 150
    alike = audit_statistic(rng.normal(0, 1, 300), rng.normal(0, 1, 300), select_m, select_h, 1e-5)
    assert alike["epsilon_lower_bound"] == 0


def test_dp_audit_negative_and_positive(tmp_path: Path, tiny_model_dir: Path, tiny_data: ImageDataset) -> None:
    """Before any fine-tune the base model cannot tell calibration from held-out images (empirical eps 0); the
    report carries every test with the theoretical eps beside it."""
    base = AuditPipeline.from_pretrained(tiny_model_dir)
    audit = dp_audit(base, base, tiny_data.split("calibration"), tiny_data.split("nonmember"), 8.0, 1e-5)
    assert audit["tests"]["loss drop from the fine-tune"]["epsilon_lower_bound"] == 0
    assert set(audit["tests"]) == {"base model loss (before)", "fine-tuned model loss", "loss drop from the fine-tune"}
    assert audit["theoretical_epsilon"] == 8.0 and not audit["violates_theory"]
    assert audit["chosen_test"] != "base model loss (before)" and audit["empirical_epsilon"] == 0
