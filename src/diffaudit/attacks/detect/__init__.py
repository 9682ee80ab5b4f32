"""Cheap per-prompt memorization detectors: `score(pipe, prompts) -> per-prompt scores` (higher = more
likely memorized), and `queries_per_prompt`, the UNet evaluations each prompt costs."""

from diffaudit.attacks.detect.webster import WebsterEdges
from diffaudit.attacks.detect.wen import WenTextNorm

DETECTORS = {"wen": WenTextNorm, "webster": WebsterEdges}
