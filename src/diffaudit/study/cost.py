"""What a study step cost: wall seconds, UNet evaluations (the one counter) and the process's peak RSS.

Kept beside each step's result (`steps/<name>.cost.json`), never inside it, so results stay comparable
between runs while `benchmarks/study.py` reads the costs.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diffaudit.model.pipeline import counted

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _peak_rss_gib() -> float | None:
    """VmHWM: the resident high-water mark since start or since the last `_reset_peak` (Linux only)."""
    try:
        line = next(ln for ln in _STATUS.read_text().splitlines() if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 2**20  # kB -> GiB


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


@contextmanager
def measured() -> Iterator[dict]:
    """Fill the yielded dict with the block's seconds, UNet evaluations and peak RSS once it ends."""
    cost: dict = {}
    reset = _reset_peak()
    start = time.perf_counter()
    with counted() as spent:
        try:
            yield cost
        finally:
            cost.update(seconds=round(time.perf_counter() - start, 2), unet_evaluations=spent.evaluations,
                        peak_rss_gib=_peak_rss_gib(), peak_is_per_step=reset)


def without_timings(value: object) -> object:
    """A result minus its wall-clock fields (any key naming seconds), which differ between any two runs:
    what two runs of the same study are compared on."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value
