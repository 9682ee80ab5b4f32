"""Cheap per-prompt memorization detectors: `score(pipe, prompts) -> per-prompt scores` (higher = more
likely memorized), and `queries_per_prompt`, the UNet evaluations each prompt costs. Each is trusted only
with its controls (tests/test_detectors.py) and its measured ranking on a model it was not tuned on
(benchmarks/detectors.py).

`score_prompts` runs a detector in blocks of PROMPT_BLOCK prompts, here or on Ray workers (`backend`). At the
registered detectors' default settings a block is whole UNet batches (64 prompts x 4 generations), so blocking
changes no score; other seed counts or batch sizes can split a batch at a block's edge (float rounding only).
"""

from typing import Protocol

import numpy as np

from diffaudit.attacks.detect.sharpness import Sharpness
from diffaudit.attacks.detect.webster import SeedAgreement
from diffaudit.attacks.detect.wen import WenTextNorm
from diffaudit.backend import mapped
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.registry import Registry

DETECTORS: Registry[type["Detector"]] = Registry("detector", "triage.detector", {
    "wen": WenTextNorm, "agreement": SeedAgreement, "sharpness": Sharpness})

PROMPT_BLOCK = 64


class Detector(Protocol):
    queries_per_prompt: int

    def score(self, pipe: AuditPipeline, prompts: list[str]) -> np.ndarray: ...


def _score_block(pipe: AuditPipeline, detector: Detector, prompts: list[str]) -> tuple[np.ndarray, int]:
    with pipe.denoiser.counting() as spent:
        scores = detector.score(pipe, prompts)
    return scores, spent.evaluations


def score_prompts(detector: Detector, pipe: AuditPipeline, prompts: list[str]) -> tuple[np.ndarray, int]:
    """Per-prompt scores and the UNet evaluations they cost (counted where they ran)."""
    blocks = [(detector, prompts[i: i + PROMPT_BLOCK]) for i in range(0, len(prompts), PROMPT_BLOCK)]
    done = list(mapped(pipe, _score_block, blocks))
    return (np.concatenate([s for s, _ in done]) if done else np.empty(0)), sum(e for _, e in done)
