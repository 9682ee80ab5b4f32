import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import loose_study

from diffaudit.config import Preset
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.study import runner
from diffaudit.study.runner import run_study


def test_study_runs_every_arm_and_resumes(tiny_study_dir: Path, tiny: Preset, monkeypatch: pytest.MonkeyPatch,
                                          tiny_model_dir: Path) -> None:
    from diffaudit.progress import make_progress

    run = tiny_study_dir
    preset = loose_study(tiny)
    table = pd.read_parquet(run / "comparison.parquet")
    assert list(table["arm"]) == ["base", "guidance-3", "guidance-interval-3", "dedup-caption", "dedup-image",
                                  "dp-eps8", "caption-random", "embedding-noise", "random-words", "norm-minimised"]
    assert ((table["ci_low"] <= table["extraction_rate"]) & (table["extraction_rate"] <= table["ci_high"])).all()
    assert table["frechet_distance"].notna().all() and (table["heldout_loss"] > 0).all()
    assumptions = json.loads((run / "assumptions.json").read_text())
    assert any("calibration data, not the original training set" in a["statement"] for a in assumptions)
    results = json.loads((run / "results.json").read_text())
    dp = next(r for r in results["rows"] if r["arm"] == "dp-eps8")
    assert dp["dp"]["epsilon_spent"] <= 8.0 + 1e-6 and dp["dp"]["delta"] == dp["dp_audit"]["delta"] == 1e-5
    assert dp["dp_audit"]["theoretical_epsilon"] == 8.0
    assert results["dp_controls"]["0"]["dp"]["noise_multiplier"] == 0, "the audit's non-private control ran"
    controls = results["mia_controls"]
    assert controls["positive"]["preset"] == "tiny-overfit" and len(controls["positive"]["exposure"]) >= 4 * 4
    assert set(controls["negative"]["attacks"]) == set(tiny.membership.attacks)
    assert all(v["choice"]["tuned"] for v in next(r for r in results["rows"] if r["arm"] == "base")["mia"].values())
    assert results["calibration"]["delta"] == 1.0 and not results["calibration"]["calibrated"]
    assert any(a["item"] == "Copy threshold calibration" and "fixed by the config" in a["statement"]
               for a in assumptions)
    base = next(r for r in results["rows"] if r["arm"] == "base")
    assert base["delta"] == 1.0 and base["extracted_families"] <= base["extracted_images"]
    assert (run / "mlruns").is_dir()
    kept = load_imagefolder(run / "seed0" / "dedup-caption" / "data").table
    scored = pd.read_parquet(run / "seed0" / "dedup-caption" / "mia" / "scores.parquet")
    assert set(scored.loc[scored["label"] == 1, "sha256"]) <= set(kept.loc[kept["split"] == "member", "sha256"]), \
        "a dedup arm scores only the members it kept"
    record = json.loads((run / "run.json").read_text())
    assert record["hashes"]["base_model"] and record["versions"]["torch"]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished arm was recomputed")

    monkeypatch.setattr(runner, "run_extraction", refuse)
    monkeypatch.setattr(runner, "train", refuse)
    again = run_study(preset, run, tiny_model_dir, make_progress(disable=True))
    assert again.equals(table)
    names = _mlflow_run_names(run)
    deletions = [n for n in names if n.startswith("forget-")]  # one per verified model of the deletion request
    arms = sorted(f"seed0-{arm}" for arm in [*table["arm"], "base-tiered"])
    assert [n for n in names if n not in deletions] == arms, "a resumed study logs no arm twice"
    assert deletions and len(deletions) == len(set(deletions)), "nor any deletion record"

    def bare(name: str) -> None:
        raise AssertionError(f"bare {name} is not JSON")

    for path in [run / "results.json", *(run / "steps").glob("*.json")]:
        json.loads(path.read_text(), parse_constant=bare)


def _mlflow_run_names(run: Path) -> list[str]:
    import mlflow

    from diffaudit.tracking import mlflow_uri

    mlflow.set_tracking_uri(mlflow_uri(run))
    found = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return sorted(r.info.run_name for r in found)


def test_comparison_table_keeps_replicate_seeds_that_measure_extraction_only() -> None:
    """A replicate training seed measures extraction only (no quality, no membership): its row stays, quality blank."""
    from diffaudit.study.runner import comparison_table

    row = {"arm": "base", "seed": 0, "guidance": 1.0, "extraction_rate": 0.5, "extraction_ci": [0.3, 0.7],
           "prompts_with_copy": 4, "attacked_prompts": 8, "extracted_images": 3, "extracted_families": 3,
           "family_prompts": 0, "delta": 0.15, "extraction_unet_evals": 100}
    table = comparison_table([{**row, "heldout_loss": 0.1, "frechet_distance": 25.0, "utility_unet_evaluations": 50},
                              {**row, "seed": 1}])
    assert table["seed"].tolist() == [0, 1] and table["audit_unet_evals"].tolist() == [150, 100]
    assert table["frechet_distance"].isna().tolist() == [False, True]
