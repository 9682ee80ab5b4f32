"""The command line end to end on the tiny preset, as a user would call it."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import LOOSE_TOML, run_cli

from diffaudit.config import PRESETS, Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.model.pipeline import AuditPipeline


def test_demo_resumes_a_study_and_writes_the_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], tiny_study_dir: Path,
                                                     tiny_model_dir: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_study_dir, run)
    config = tmp_path / "loose.toml"
    config.write_text(LOOSE_TOML)
    args = ("demo", "--preset", "tiny", "--out", str(run), "--reference", str(tiny_model_dir))
    assert run_cli(monkeypatch, *args, "--config", str(config)) == 0
    out = capsys.readouterr().out
    assert "extraction before/after each mitigation" in out and "memo:" in out
    last = out[out.index("Bottom line."):].rstrip().splitlines()
    assert last[-1].startswith("Read next:") and "memo.pdf" in last[-1] and last[-1].endswith("viewer.html"), \
        "the last lines: the bottom line, then where the memo is"
    for name in ("memo/memo.pdf", "memo/memo.typ", "technical_report.html", "viewer.html"):
        assert (run / "report" / name).stat().st_size > 0
    assert run_cli(monkeypatch, *args) == 2, "resuming under other thresholds must be refused"
    assert "calibration.delta" in capsys.readouterr().err


def test_memorization_by_duplication(tmp_path: Path, tiny: Preset, tiny_data: ImageDataset,
                                     tiny_pipe: AuditPipeline) -> None:
    from diffaudit.demo import memorization_by_duplication
    from diffaudit.progress import make_progress

    result = memorization_by_duplication(tiny_pipe, tiny_data, tiny, tmp_path, 2, 3, make_progress(disable=True))
    summary = json.loads((tmp_path / "memorization.json").read_text())
    assert {g["group"] for g in summary["by_group"]} == {"2-31", "singleton"}
    assert (result.per_prompt["dup_count"] == 1).sum() == 3, "three singleton captions as the control group"
    assert result.grid.stat().st_size > 0


def test_data_and_generate_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str], tiny_model_dir: Path) -> None:
    assert run_cli(monkeypatch, "data", "openmoji", str(tmp_path / "d"), "--preset", "tiny") == 0
    assert run_cli(monkeypatch, "data", "check", str(tmp_path / "d")) == 0
    assert "member" in capsys.readouterr().out
    assert run_cli(monkeypatch, "generate", str(tiny_model_dir), str(tmp_path / "g"), "--prompt", "cat emoji",
                "--seeds", "2", "--guidance", "1", "--guidance", "4", "--preset", "tiny") == 0
    assert "4 samples" in capsys.readouterr().out


def test_bad_input_exits_with_a_named_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d").mkdir()
    assert run_cli(monkeypatch, "data", "check", str(tmp_path / "d")) == 2
    assert "no metadata file" in capsys.readouterr().err
    assert run_cli(monkeypatch, "train", str(tmp_path / "d"), str(tmp_path / "o"), "--preset", "nope") == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_the_demo_runs_the_missions_core_unless_asked_for_the_whole_study() -> None:
    import inspect

    from diffaudit.cli import demo

    assert inspect.signature(demo).parameters["preset"].default == "core"
    core = PRESETS["core"]
    assert set(core.study.mitigations) == {"dedup", "guidance", "dp"} and core.membership.control_preset, \
        "the core: the probe, membership inference with its controls and the three fixes"


def test_extract_prints_undefined_rates_as_not_available(tmp_path: Path) -> None:
    """A probe with nothing flagged has no precision and no recall: the table says n/a instead of failing."""
    from diffaudit.cli import _print_extraction, console
    from diffaudit.study.results_record import AuditRow

    golden = json.loads((Path(__file__).parent / "golden" / "tiny-study-results.json").read_text())["rows"][0]
    row = AuditRow.model_validate(golden).model_copy(update={"probe_precision": None, "probe_recall": None})
    with console.capture() as shown:
        _print_extraction(row, 3, tmp_path)
    text = " ".join(shown.get().split())  # however wide the console wraps it
    assert "clique-filter precision n/a, probe recall n/a" in text and f"{row.attacked_prompts} prompts" in text
