"""The copy test and its controls: families, family-disjoint splits, the two nulls, one definition."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from diffaudit.attacks.copies import (
    DELTA_GRID,
    calibrate_delta,
    copy_distance,
    match_generations,
    model_null,
    per_prompt_verdicts,
)
from diffaudit.attacks.extraction import ExtractionConfig, cliques, probe
from diffaudit.attacks.memorization import memorization_scores
from diffaudit.cli import app
from diffaudit.config import Preset
from diffaudit.data.families import codepoint_family, join_families, near_copies, split_leaks
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import DatasetError
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.progress import make_progress
from diffaudit.study.calibration import calibrate_copy_test

RNG = np.random.default_rng(7)


def _shift(image: np.ndarray, k: int) -> np.ndarray:
    """The image with every pixel moved by k levels: tiled distance exactly k/255 (away from the clip)."""
    return (image.astype(int) + k).astype(np.uint8)


def test_codepoint_families_join_variants_of_one_subject() -> None:
    health = {codepoint_family(c) for c in ("1F469-1F3FD-200D-2695-FE0F", "1F468-200D-2695-FE0F", "1F9D1-200D-2695")}
    assert len(health) == 1
    assert codepoint_family("1F600") != codepoint_family("1F601")


def test_families_join_near_copies_and_keep_distinct_images_apart() -> None:
    """Positive control: a near-copy under another key is joined (and chains); negative: unrelated images are not."""
    base = RNG.integers(40, 200, (3, 16, 16, 3), dtype=np.uint8)
    images = np.concatenate([base, _shift(base[:1], 20), _shift(base[:1], 40)])  # 0 ~ 3 ~ 4 (chain)
    labels = join_families(images, ["a", "b", "c", "d", "e"], threshold=0.1)
    assert labels[0] == labels[3] == labels[4]
    assert len({labels[0], labels[1], labels[2]}) == 3
    assert near_copies(images[3:4], images[:3], 0.1).tolist() == [True]
    assert near_copies(images[1:3], images[3:], 0.1).tolist() == [False, False]


def test_built_dataset_is_family_disjoint(tiny: Preset, tiny_data: ImageDataset) -> None:
    table = tiny_data.table
    splits_per_family = table.groupby("family")["split"].nunique()
    assert splits_per_family.max() == 1
    leaks = split_leaks(tiny_data.images, table, tiny.data.family_join)
    assert leaks.empty
    manifest = json.loads((tiny_data.root / "manifest.json").read_text())
    assert manifest["copy_delta"] == tiny.data.family_join and manifest["false_copy_rate"] == 0.0
    members = table[table["split"] == "member"]
    assert (members["family_count"] >= members["dup_count"]).all()


def test_data_check_catches_a_planted_nonmember_copy(tiny_data_dir: Path, tmp_path: Path) -> None:
    """Positive control for `data check`: a nonmember that is a pixel copy of a member; negative: the clean set."""
    runner = CliRunner()
    clean = runner.invoke(app, ["data", "check", str(tiny_data_dir), "--strict"])
    assert clean.exit_code == 0 and "family-disjoint" in clean.output
    leaky = tmp_path / "leaky"
    shutil.copytree(tiny_data_dir, leaky)
    rows = [json.loads(line) for line in (leaky / "metadata.jsonl").read_text().splitlines()]
    member = next(r for r in rows if r["split"] == "member")
    victim = next(r for r in rows if r["split"] == "nonmember")
    shutil.copy(leaky / member["file_name"], leaky / victim["file_name"])
    for r in rows:
        r.pop("family", None)  # a user's dataset: families come from the images alone
    (leaky / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    warned = runner.invoke(app, ["data", "check", str(leaky)])
    assert warned.exit_code == 0 and victim["id"] in warned.output and member["id"] in warned.output
    refused = runner.invoke(app, ["data", "check", str(leaky), "--strict"])
    assert isinstance(refused.exception, DatasetError) and victim["id"] in str(refused.exception)


def test_model_null_moves_delta_when_generations_loosen() -> None:
    """A model whose generations drift closer to never-seen images forces a lower delta; a far one keeps the cap."""
    # 120 captions: with no hit the upper 95% bound (3.0%) is within the 4% bound.
    own = {f"p{i}": RNG.integers(40, 190, (16, 16, 3), dtype=np.uint8) for i in range(120)}
    index = pd.DataFrame({"prompt": [p for p in own for _ in range(4)], "seed": list(range(4)) * len(own)})
    chosen = {}
    for k in (26, 13, 60):  # tiled distance 0.102, 0.051, 0.235 to the unseen image
        gens = np.stack([_shift(own[p], k) for p in index["prompt"]])
        null = model_null(gens, index, own)
        chosen[k] = calibrate_delta(null, cap=0.15, target=0.02, bound=0.04)
    assert chosen[60]["delta"] == 0.15 and chosen[60]["met"]
    assert chosen[26]["delta"] == 0.10 and chosen[13]["delta"] == 0.05
    assert [r["rate"] for r in model_null(np.stack([_shift(own[p], 13) for p in index["prompt"]]), index, own)
            if r["delta"] > 0.06] == [1.0] * sum(d > 0.06 for d in DELTA_GRID)


def test_calibration_reports_a_miss_when_no_delta_qualifies() -> None:
    null = [{"delta": d, "rate": 0.5, "ci_high": 0.6, "n": 300} for d in DELTA_GRID]
    chosen = calibrate_delta(null, cap=0.15, target=0.02, bound=0.04)
    assert not chosen["met"] and chosen["delta"] == min(DELTA_GRID)
    assert chosen["reason"] == "no delta of the grid keeps the model null within the target"
    few = [{"delta": d, "rate": 0.0, "ci_high": 0.37, "n": 8} for d in DELTA_GRID]
    assert "too few never-trained captions (8 < 91)" in calibrate_delta(few, 0.15, 0.02, 0.04)["reason"]


def _members() -> ImageDataset:
    images = RNG.integers(40, 200, (6, 16, 16, 3), dtype=np.uint8)
    images[5] = _shift(images[4], 20)  # a sibling of image 4 (0.078 away), trained under another caption
    table = pd.DataFrame({"id": [f"m{i}" for i in range(6)], "text": ["a", "b", "c", "d", "e", "f"],
                          "sha256": [f"s{i}" for i in range(6)], "split": "member",
                          "family": ["f0", "f1", "f2", "f3", "f4", "f4"], "dup_count": 1, "family_count": 1})
    return ImageDataset(Path("."), images, table)


def test_extraction_oracle_and_memorization_give_one_verdict() -> None:
    """One definition: the probe's confirmed pairs, the oracle and the memorization benchmark agree per prompt."""
    data = _members()
    gens = np.concatenate([np.stack([_shift(data.images[0], 2)] * 4),  # "a" copies its own image
                           np.stack([_shift(data.images[5], 1)] * 4),  # "e" copies its sibling (image 5)
                           RNG.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)])  # "b": nothing
    index = pd.DataFrame({"prompt": ["a"] * 4 + ["e"] * 4 + ["b"] * 4, "seed": list(range(4)) * 3})
    cfg = ExtractionConfig(delta=0.05)
    matches = match_generations(gens, index, data, cfg.delta)
    per_prompt, pairs = probe(matches, cliques(gens, index, cfg.edge_threshold), cfg)
    oracle = per_prompt_verdicts(matches, cfg.delta).set_index("prompt")
    bench = memorization_scores(gens, index, data, cfg.delta).set_index("prompt")
    extracted = per_prompt.set_index("prompt")["extracted"]
    assert extracted.to_dict() == oracle["memorized"].to_dict() == bench["memorized"].to_dict() == {
        "a": True, "e": False, "b": False}
    assert oracle.loc["e", "family_hit"] and bench.loc["e", "family_hit"]
    assert set(pairs.set_index("prompt")["kind"].items()) == {("a", "own"), ("e", "family")}
    assert copy_distance(gens[0], data.images[0]) < cfg.delta


def test_study_calibration_measures_both_nulls(tmp_path: Path, tiny: Preset, tiny_pipe: AuditPipeline,
                                               tiny_data: ImageDataset) -> None:
    calibration = calibrate_copy_test(tiny_pipe, tiny_data, tiny, tmp_path, make_progress(disable=True))
    n = (tiny_data.table["split"] == "nonmember").sum()
    assert calibration["null_prompts"] == n and calibration["delta"] in DELTA_GRID
    assert [r["delta"] for r in calibration["model_null_by_delta"]] == list(DELTA_GRID)
    assert calibration["image_null"][f"{calibration['delta']:g}"] == 0.0  # family-disjoint by construction
    assert calibration["unet_evaluations"] == n * tiny.extraction.samples_per_prompt * tiny.sample.steps
