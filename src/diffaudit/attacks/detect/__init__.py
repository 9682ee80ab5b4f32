"""Cheap per-prompt memorization detectors: `score(pipe, prompts) -> per-prompt scores` (higher = more
likely memorized), and `queries_per_prompt`, the UNet evaluations each prompt costs. Each is trusted only
with its controls (tests/test_detectors.py) and its measured ranking on a model it was not tuned on
(benchmarks/detectors.py)."""

from diffaudit.attacks.detect.sharpness import Sharpness
from diffaudit.attacks.detect.webster import SeedAgreement
from diffaudit.attacks.detect.wen import WenTextNorm

DETECTORS = {"wen": WenTextNorm, "agreement": SeedAgreement, "sharpness": Sharpness}
