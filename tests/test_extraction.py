import json
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.attacks.copies import match_generations, per_prompt_verdicts
from diffaudit.attacks.detect import DETECTORS
from diffaudit.attacks.extraction import ExtractionConfig, cliques, largest_clique, probe, summarize
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.measure.neighbours import TrainingIndex
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.study.extraction_audit import most_duplicated_prompts, run_extraction, run_tiered

RNG = np.random.default_rng(0)
TRAIN = RNG.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)


def _near(img: np.ndarray, n: int, noise: int) -> np.ndarray:
    jitter = RNG.integers(-noise, noise + 1, (n, *img.shape))
    return np.clip(img.astype(int) + jitter, 0, 255).astype(np.uint8)


def members() -> ImageDataset:
    """20 training images, one row each; image 3 is caption "a"'s, images 5 and 6 are one family with 5 trained
    under caption "c"."""
    table = pd.DataFrame({"id": [f"m{i}" for i in range(20)], "text": [f"t{i}" for i in range(20)],
                          "sha256": [f"s{i}" for i in range(20)], "split": "member",
                          "family": [f"f{i}" for i in range(20)], "dup_count": 1})
    table.loc[3, ["text", "dup_count"]] = ["a", 64]
    table.loc[5, "text"] = "c"
    table.loc[6, "family"] = "f5"
    return ImageDataset(Path("."), TRAIN, table)


def _scenario() -> tuple[np.ndarray, pd.DataFrame]:
    copied = _near(TRAIN[3], 6, 8)  # prompt "a": 6 of 10 generations copy its own training image 3
    gens_a = np.concatenate([copied, RNG.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)])
    gens_b = RNG.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)  # prompt "b": nothing memorized
    gens_c = np.concatenate([_near(TRAIN[6], 5, 8), RNG.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)])  # a sibling
    index = pd.DataFrame({"prompt": ["a"] * 10 + ["b"] * 10 + ["c"] * 10, "seed": list(range(10)) * 3})
    return np.concatenate([gens_a, gens_b, gens_c]), index


def test_clique_finds_the_copies() -> None:
    images, _ = _scenario()
    assert sorted(largest_clique(images[:10], 0.15)) == [0, 1, 2, 3, 4, 5]


def test_probe_counts_own_image_copies_and_labels_sibling_copies() -> None:
    images, index = _scenario()
    cfg = ExtractionConfig()
    data = members()
    matches = match_generations(images, index, data, cfg.delta)
    per_prompt, pairs = probe(matches, cliques(images, index, cfg.edge_threshold), cfg)
    assert per_prompt.set_index("prompt")["flagged"].to_dict() == {"a": True, "b": False, "c": True}
    assert per_prompt.set_index("prompt")["extracted"].to_dict() == {"a": True, "b": False, "c": False}
    assert set(pairs.loc[pairs["kind"] == "own", "train_idx"]) == {3}
    assert set(pairs.loc[pairs["kind"] == "family", "train_idx"]) == {6}
    per_prompt = per_prompt.merge(per_prompt_verdicts(matches, cfg.delta), on="prompt")
    summary = summarize(per_prompt, pairs, data.table, cfg)
    assert (summary["prompts_with_copy"], summary["extracted_images"], summary["attacked_prompts"]) == (1, 1, 3)
    assert (summary["family_prompts"], summary["family_images"], summary["oracle_family_hit_prompts"]) == (1, 1, 1)
    assert summary["recall"] == 1.0
    assert summary["precision"] == 0.5, "flagged: a (memorized) and c (a sibling copy, not memorized)"
    assert 0 < summary["ci_low"] < 1 / 3 < summary["ci_high"] < 1


def test_approximate_index_agrees_with_exact() -> None:
    queries = _near(TRAIN[[1, 5, 7]], 1, 4)[0]
    exact = TrainingIndex(TRAIN).search(queries)
    approx = TrainingIndex(TRAIN, exact_limit=0).search(queries)
    np.testing.assert_array_equal(exact[0], [1, 5, 7])
    np.testing.assert_array_equal(approx[0], exact[0])


def test_clique_size_scales_with_samples() -> None:
    cfg = ExtractionConfig()
    assert cfg.clique_size(500) == 10 and cfg.clique_size(16) == 3


def test_audit_end_to_end_writes_results(tmp_path: Path, tiny: Preset, tiny_pipe: AuditPipeline,
                                         tiny_data: ImageDataset) -> None:
    prompts = most_duplicated_prompts(tiny_data, 4)
    assert prompts["dup_count"].is_monotonic_decreasing and prompts["dup_count"].iloc[0] == 4
    summary = run_extraction(tiny_pipe, tiny_data, tmp_path, prompts, 3, 1.0, tiny.sample, ExtractionConfig())
    assert summary["attacked_prompts"] == 4
    assert summary["unet_evaluations"] == 4 * 3 * tiny.sample.steps
    assert json.loads((tmp_path / "summary.json").read_text())["model_hash"] == tiny_pipe.model_hash()
    assert len(pd.read_parquet(tmp_path / "per_prompt.parquet")) == 4


def test_tiered_audit_counts_detector_and_probe_cost(tmp_path: Path, tiny: Preset, tiny_pipe: AuditPipeline,
                                                     tiny_data: ImageDataset) -> None:
    prompts = most_duplicated_prompts(tiny_data, 6)
    full = run_extraction(tiny_pipe, tiny_data, tmp_path / "full", prompts, 3, 1.0, tiny.sample, ExtractionConfig())
    for detector in DETECTORS:  # each detector's declared cost is what the one UNet counter counts
        per_prompt = DETECTORS[detector]().queries_per_prompt
        summary = run_tiered(tiny_pipe, tiny_data, tmp_path / detector, prompts, 3, 1.0, tiny.sample,
                             ExtractionConfig(), detector, confirm_fraction=0.34, full_run=tmp_path / "full")
        assert summary["prompts_confirmed"] == 3
        assert summary["unet_evaluations"] == 6 * per_prompt + 3 * 3 * tiny.sample.steps
        assert summary["cost_ratio_vs_full"] == summary["unet_evaluations"] / full["unet_evaluations"]
        scores = pd.read_parquet(tmp_path / detector / "detector_scores.parquet")["detector_score"]
        assert scores.is_monotonic_decreasing and np.isfinite(scores).all()
