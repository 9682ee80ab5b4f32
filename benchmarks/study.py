"""End-to-end cost of `diffaudit study`: wall time per step and for the whole run, and peak RSS, against the
issue's targets (quick preset, all arms: <= 30 min and <= 4 GiB on the 2-core machine).

Per-step times come from the run folder itself (each finished step leaves `steps/<seed>-<arm>.json`; the
base model's training time is in its manifest), so the script can time a fresh study or report on one that
was run with `diffaudit study`. Peak RSS is only known when this script runs the study in-process.
Usage: python benchmarks/study.py [--run runs/bench-quick] [--preset quick] [--report-only]
"""

import argparse
import json
import resource
import time
from pathlib import Path

from rich.console import Console

from diffaudit.config import load_preset
from diffaudit.progress import make_progress
from diffaudit.study.runner import run_study

TARGET_MINUTES, TARGET_GIB = 30.0, 4.0


def step_times(run: Path) -> list[tuple[str, float]]:
    """Seconds each finished step took, from consecutive step-file times (the first from run.json, written once
    the data and base model are ready). Valid for a run that was not resumed: a resume rewrites run.json."""
    files = sorted((run / "steps").glob("*.json"), key=lambda p: p.stat().st_mtime)
    start = (run / "run.json").stat().st_mtime
    out, last = [], start
    for f in files:
        out.append((f.stem, f.stat().st_mtime - last))
        last = f.stat().st_mtime
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=Path("runs/bench-quick"))
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--reference", type=Path, default=Path("models/quick"))
    parser.add_argument("--report-only", action="store_true", help="Time an existing run; do not run anything.")
    args = parser.parse_args()
    console = Console()
    peak = None
    if not args.report_only:
        start = time.perf_counter()
        with make_progress(console) as progress:
            run_study(load_preset(args.preset), args.run, args.reference, progress)
        console.print(f"wall time (this invocation): {(time.perf_counter() - start) / 60:.1f} min")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux
    steps = step_times(args.run)
    manifests = sorted(args.run.glob("seed*/base/model/training_manifest.json"))
    train = json.loads(manifests[0].read_text())["seconds"] if manifests else 0.0
    for name, seconds in steps:
        console.print(f"{name:32s} {seconds / 60:6.1f} min")
    total = (sum(s for _, s in steps) + train) / 60
    console.print(f"base-model training {train / 60:.1f} min (0 when the committed reference model was reused)")
    console.print(f"study total {total:.1f} min; target {TARGET_MINUTES:g} min; ratio {total / TARGET_MINUTES:.2f}")
    if peak is not None:
        console.print(f"peak RSS {peak:.2f} GiB; target {TARGET_GIB:g} GiB; ratio {peak / TARGET_GIB:.2f}")


if __name__ == "__main__":
    main()
