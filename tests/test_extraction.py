import json
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.attacks.extraction import ExtractionConfig, largest_clique, oracle, probe, summarize
from diffaudit.attacks.neighbours import TrainingIndex
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.study.extraction_audit import most_duplicated_prompts, run_extraction, run_tiered

RNG = np.random.default_rng(0)
TRAIN = RNG.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)


def _near(img: np.ndarray, n: int, noise: int) -> np.ndarray:
    jitter = RNG.integers(-noise, noise + 1, (n, *img.shape))
    return np.clip(img.astype(int) + jitter, 0, 255).astype(np.uint8)


def _scenario() -> tuple[np.ndarray, pd.DataFrame]:
    copied = _near(TRAIN[3], 6, 8)  # prompt "a": 6 of 10 generations copy training image 3
    gens_a = np.concatenate([copied, RNG.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)])
    gens_b = RNG.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)  # prompt "b": nothing memorized
    index = pd.DataFrame({"prompt": ["a"] * 10 + ["b"] * 10})
    return np.concatenate([gens_a, gens_b]), index


def test_clique_finds_the_copies() -> None:
    images, _ = _scenario()
    assert sorted(largest_clique(images[:10], 0.15)) == [0, 1, 2, 3, 4, 5]


def test_probe_flags_and_matches_only_the_memorized_prompt() -> None:
    images, index = _scenario()
    dup = np.ones(len(TRAIN), int)
    dup[3] = 64
    cfg = ExtractionConfig()
    per_prompt, pairs = probe(images, index, TRAIN, dup, cfg)
    assert per_prompt.set_index("prompt")["flagged"].to_dict() == {"a": True, "b": False}
    assert set(pairs["train_idx"]) == {3} and set(pairs["eidetic_k"]) == {64}
    per_prompt = per_prompt.merge(oracle(images, index, TRAIN, cfg.delta), on="prompt")
    summary = summarize(per_prompt, pairs, cfg)
    assert (summary["extracted_images"], summary["attacked_prompts"]) == (1, 2)
    assert summary["precision"] == summary["recall"] == 1.0
    assert 0 < summary["ci_low"] < 0.5 < summary["ci_high"] < 1


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
    for detector, per_prompt in (("wen", 2), ("webster", 8)):
        summary = run_tiered(tiny_pipe, tiny_data, tmp_path / detector, prompts, 3, 1.0, tiny.sample,
                             ExtractionConfig(), detector, confirm_fraction=0.34, full_run=tmp_path / "full")
        assert summary["prompts_confirmed"] == 3
        assert summary["unet_evaluations"] == 6 * per_prompt + 3 * 3 * tiny.sample.steps
        assert summary["cost_ratio_vs_full"] == summary["unet_evaluations"] / full["unet_evaluations"]
        scores = pd.read_parquet(tmp_path / detector / "detector_scores.parquet")["detector_score"]
        assert scores.is_monotonic_decreasing and np.isfinite(scores).all()
