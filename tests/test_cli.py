"""The command line end to end on the tiny preset, as a user would call it."""

import json
import sys
from pathlib import Path

import pytest

from diffaudit.cli import main


def _run(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["diffaudit", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_demo_runs_every_step_and_reuses_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = ("demo", "--preset", "tiny", "--out", str(tmp_path / "run"), "--samples-per-prompt", "2",
            "--singletons", "3", "--reference", str(tmp_path / "none"))
    assert _run(monkeypatch, *args) == 0
    summary = json.loads((tmp_path / "run" / "memorization.json").read_text())
    assert {g["group"] for g in summary["by_group"]} == {"2-31", "singleton"}
    assert (tmp_path / "run" / "samples_grid.png").stat().st_size > 0
    assert "Generations within RMS" in capsys.readouterr().out
    assert _run(monkeypatch, *args) == 0, "a second run reuses the data, model and samples"
    assert "model: " in capsys.readouterr().out


def test_data_and_generate_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str], tiny_model_dir: Path) -> None:
    assert _run(monkeypatch, "data", "openmoji", str(tmp_path / "d"), "--preset", "tiny") == 0
    assert _run(monkeypatch, "data", "check", str(tmp_path / "d")) == 0
    assert "member" in capsys.readouterr().out
    assert _run(monkeypatch, "generate", str(tiny_model_dir), str(tmp_path / "g"), "--prompt", "cat emoji",
                "--seeds", "2", "--guidance", "1", "--guidance", "4", "--preset", "tiny") == 0
    assert "4 samples" in capsys.readouterr().out


def test_bad_input_exits_with_a_named_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d").mkdir()
    assert _run(monkeypatch, "data", "check", str(tmp_path / "d")) == 2
    assert "no metadata file" in capsys.readouterr().err
    assert _run(monkeypatch, "train", str(tmp_path / "d"), str(tmp_path / "o"), "--preset", "nope") == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
