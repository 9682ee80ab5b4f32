import json
from pathlib import Path

import pytest

from diffaudit.config import Preset
from diffaudit.study import runner
from diffaudit.study.runner import run_study


def test_quick_study_runs_every_arm_and_resumes(tmp_path: Path, tiny: Preset, monkeypatch: pytest.MonkeyPatch,
                                                tiny_model_dir: Path) -> None:
    from diffaudit.progress import make_progress

    table = run_study(tiny, tmp_path / "run", tiny_model_dir, make_progress(disable=True))
    assert list(table["arm"]) == ["base", "guidance-3", "dedup-caption", "dedup-image", "dp-eps8"]
    assert ((table["ci_low"] <= table["extraction_rate"]) & (table["extraction_rate"] <= table["ci_high"])).all()
    assert table["frechet_distance"].notna().all() and (table["heldout_loss"] > 0).all()
    assumptions = json.loads((tmp_path / "run" / "assumptions.json").read_text())
    assert any("calibration data, not the original training set" in a["statement"] for a in assumptions)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    dp = next(r for r in results["rows"] if r["arm"] == "dp-eps8")
    assert dp["dp"]["epsilon_spent"] <= 8.0 + 1e-6
    assert (tmp_path / "run" / "mlruns").is_dir()
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["hashes"]["base_model"] and record["versions"]["torch"]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished arm was recomputed")

    monkeypatch.setattr(runner, "run_extraction", refuse)
    monkeypatch.setattr(runner, "train", refuse)
    again = run_study(tiny, tmp_path / "run", tiny_model_dir, make_progress(disable=True))
    assert again.equals(table)
