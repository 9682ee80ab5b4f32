"""Audit a Stable Diffusion folder as a user would: `extract` and `mia` through the CLI, on a tiny randomly
initialised SD pipeline and a user's imagefolder of another size."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image


def _reference(folder: Path, side: int = 12) -> list[str]:
    """A user's imagefolder: 12 px pictures (the model draws 16 px), members and non-members, one caption each."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    rows, captions = [], []
    for i in range(16):
        name = f"images/{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / name)
        caption = f"picture {'abcdefghijklmnop'[i]} of a cat"
        captions.append(caption)
        rows.append({"file_name": name, "text": caption, "split": "member" if i < 8 else "nonmember"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return captions


def test_extract_and_mia_on_a_stable_diffusion_folder(tmp_path: Path, tiny_sd_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    captions = _reference(tmp_path / "ref")
    (tmp_path / "prompts.txt").write_text("\n".join(captions[:3]))
    common = ("--preset", "tiny", "--samples", "3", "--no-calibrate", "--delta", "0.5")
    assert run_cli(monkeypatch, "extract", str(tiny_sd_dir), str(tmp_path / "ref"), str(tmp_path / "x"),
                "--prompts-file", str(tmp_path / "prompts.txt"), *common) == 0
    out = capsys.readouterr().out
    assert "comparing at 16 px" in out and "12 px" in out, "the comparison size is stated"
    assert "16 training images are smaller than 16 px" in " ".join(out.split()), "upscaling the reference is not silent"
    summary = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert summary["compare_size"] == 16 and summary["generated_size"] == 16 and summary["attacked_prompts"] == 3

    assert run_cli(monkeypatch, "extract", str(tiny_sd_dir), str(tmp_path / "ref"), str(tmp_path / "x8"),
                "--prompts-file", str(tmp_path / "prompts.txt"), "--compare-size", "8", "--dtype", "float64",
                *common) == 0
    out = capsys.readouterr().out
    assert "comparing at 8 px" in out and "upscaled" not in out
    assert json.loads((tmp_path / "x8" / "summary.json").read_text())["compare_size"] == 8

    assert run_cli(monkeypatch, "mia", str(tiny_sd_dir), str(tmp_path / "ref"), str(tmp_path / "m"), "--preset", "tiny",
                "--attack", "loss", "--attack", "pia", "--per-side", "4", "--tune-per-side", "0") == 0
    scores = (tmp_path / "m" / "summary.json")
    assert set(json.loads(scores.read_text())["attacks"]) == {"loss", "pia"}
