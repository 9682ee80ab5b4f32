"""Kill at a seeded random crash point, resume, and compare with the uninterrupted run (train, generate, study).

The crash is `DIFFAUDIT_CRASH_AT=N` in a real `diffaudit` process: it exits with status 137 at its N-th crash
point without running `finally` blocks, as `kill -9` would. CI tries one kill point per command; the slow-marked
draws try more.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import LOOSE_TOML, loose_study, seed_positive_control

from diffaudit import faults
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.model.generate import generate
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.shards import INDEX, KEY, load_samples
from diffaudit.model.train import train
from diffaudit.ownership import TEMP_PREFIXES
from diffaudit.progress import make_progress
from diffaudit.study.cost import without_timings

DRAWS = [0, *(pytest.param(d, marks=pytest.mark.slow) for d in range(1, 8))]
PROMPTS = ["grinning face emoji", "red heart emoji", "cat emoji"]


def _kill_point(total: int, test: str, draw: int) -> int:
    return int(np.random.default_rng([sum(map(ord, test)), draw]).integers(1, total + 1))


def _crash(at: int, *args: str) -> None:
    """Run `diffaudit ARGS` until its `at`-th crash point; it must die there."""
    env = {**os.environ, faults.ENV: str(at)}
    done = subprocess.run([sys.executable, "-c", "from diffaudit.cli import main; main()", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == faults.CRASH_STATUS, done.stderr[-2000:]
    assert f"injected crash at point {at} " in done.stderr


def _no_temps(folder: Path) -> None:
    assert not [p for p in folder.rglob(".*") if p.name.startswith(TEMP_PREFIXES)]


@pytest.mark.parametrize("draw", DRAWS)
def test_train_killed_anywhere_resumes_to_the_same_model(tmp_path: Path, tiny: Preset, tiny_data_dir: Path,
                                                         tiny_data: ImageDataset, draw: int) -> None:
    before = faults.calls()
    whole = train(build_pipeline(tiny.model, tiny.data.resolution), tiny_data, tiny.train, tmp_path / "whole")
    at = _kill_point(faults.calls() - before, "train", draw)
    _crash(at, "train", str(tiny_data_dir), str(tmp_path / "part"), "--preset", "tiny")
    resumed = train(build_pipeline(tiny.model, tiny.data.resolution), tiny_data, tiny.train, tmp_path / "part")
    assert resumed.model_hash() == whole.model_hash()
    log = [json.loads(ln)["step"] for ln in (tmp_path / "part" / "train_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, tiny.train.steps + 1))
    _no_temps(tmp_path / "part")


@pytest.mark.parametrize("draw", DRAWS)
def test_generate_killed_anywhere_resumes_without_loss_or_duplicates(tmp_path: Path, tiny: Preset,
                                                                     tiny_model_dir: Path, tiny_pipe: AuditPipeline,
                                                                     draw: int) -> None:
    seeds, scales = list(range(30)), [1.0, 3.0]  # 180 samples: three shards
    before = faults.calls()
    whole = generate(tiny_pipe, PROMPTS, seeds, scales, tiny.sample, tmp_path / "whole")
    at = _kill_point(faults.calls() - before, "generate", draw)
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS))
    _crash(at, "generate", str(tiny_model_dir), str(tmp_path / "part"), "--prompts-file", str(tmp_path / "prompts.txt"),
           "--seeds", "30", "--guidance", "1", "--guidance", "3", "--preset", "tiny")
    resumed = generate(tiny_pipe, PROMPTS, seeds, scales, tiny.sample, tmp_path / "part")
    index = pd.read_parquet(tmp_path / "part" / INDEX)
    assert len(index) == len(whole) == 180 and not index.duplicated(KEY).any()
    np.testing.assert_array_equal(load_samples(tmp_path / "whole", whole)[0],
                                  load_samples(tmp_path / "part", resumed)[0])
    _no_temps(tmp_path / "part")


@pytest.mark.parametrize("draw", DRAWS)
def test_study_killed_anywhere_resumes_to_the_same_results(tmp_path: Path, tiny: Preset, tiny_study_dir: Path,
                                                           tiny_model_dir: Path, overfit_run: tuple[dict, Path],
                                                           draw: int) -> None:
    from diffaudit.study.runner import run_study

    total = int((tiny_study_dir.parent / "crash_points.txt").read_text())
    (tmp_path / "loose.toml").write_text(LOOSE_TOML)
    run = tmp_path / "run"
    seed_positive_control(run, overfit_run[1])  # as the reference study had it
    _crash(_kill_point(total, "study", draw), "study", "--preset", "tiny", "--config", str(tmp_path / "loose.toml"),
           "--out", str(run), "--reference", str(tiny_model_dir))
    run_study(loose_study(tiny), run, tiny_model_dir, make_progress(disable=True))
    ours, reference = (json.loads((r / "results.json").read_text()) for r in (run, tiny_study_dir))
    assert without_timings(ours) == without_timings(reference)
    _no_temps(run)
