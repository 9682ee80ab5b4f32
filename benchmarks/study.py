"""What `diffaudit study` costs, step by step, against the study-speed targets.

Targets (quick preset, every arm the study has: base reused from models/, guidance sweep, two dedup retrains,
two DP fine-tunes, MIA, utility, tiered audit): wall time <= 3x one base training of the same preset on the
same machine and <= 45 min; peak RSS <= 4 GiB. Run it alone on the machine.

One base training is measured in the same run: each dedup arm retrains the model from scratch with the
preset's steps and batch size (on fewer rows, which costs the same per step), and its manifest records the
seconds. Per-step seconds, UNet evaluations and peak RSS come from `steps/<step>.cost.json`.

`--check-identical` runs the tiny study with this code and with the slow path (`--slow-ref`, the commit before
the speed changes, in a temporary git worktree) and asserts that their results are byte-identical apart from
wall-clock fields.

Usage: python benchmarks/study.py [--run runs/bench-quick] [--preset quick] [--report-only] [--check-identical]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from diffaudit.study.cost import without_timings

TARGET_MINUTES, TARGET_TRAININGS, TARGET_GIB = 45.0, 3.0, 4.0
SLOW_REF = "9f60c8a43425"  # main before the study-speed changes (issue 11)
ROOT = Path(__file__).resolve().parents[1]


def step_costs(run: Path) -> list[dict]:
    """One row per finished step, in the order the steps finished."""
    files = sorted((run / "steps").glob("*.cost.json"), key=lambda p: p.stat().st_mtime)
    return [{"step": f.name.removesuffix(".cost.json"), **json.loads(f.read_text())} for f in files]


def training_seconds(run: Path) -> list[float]:
    return [json.loads(m.read_text())["seconds"] for m in sorted(run.glob("seed*/dedup-*/train/model/"
                                                                          "training_manifest.json"))]


def report(run: Path, wall: float | None, console: Console) -> None:
    rows = step_costs(run)
    table = Table(title=f"diffaudit study cost per step ({run})")
    for col in ("step", "seconds", "minutes", "UNet evaluations", "peak RSS GiB"):
        table.add_column(col, justify="right" if col != "step" else "left")
    for r in rows:
        table.add_row(r["step"], f"{r['seconds']:.0f}", f"{r['seconds'] / 60:.1f}", f"{r['unet_evaluations']:,}",
                      "-" if r["peak_rss_gib"] is None else f"{r['peak_rss_gib']:.2f}")
    total = sum(r["seconds"] for r in rows)
    peak = max((r["peak_rss_gib"] or 0.0) for r in rows) if rows else 0.0
    table.add_row("total", f"{total:.0f}", f"{total / 60:.1f}", f"{sum(r['unet_evaluations'] for r in rows):,}",
                  f"{peak:.2f}")
    console.print(table)
    minutes = (wall if wall is not None else total) / 60
    console.print(f"study wall time {minutes:.1f} min (target {TARGET_MINUTES:g}); peak RSS {peak:.2f} GiB "
                  f"(target {TARGET_GIB:g})")
    trainings = training_seconds(run)
    if trainings:
        one = statistics.median(trainings)
        console.print(f"one base training of this preset, measured in this run: {one / 60:.1f} min (median of "
                      f"{len(trainings)} dedup retrains: {', '.join(f'{t:.0f} s' for t in trainings)}); "
                      f"study / training = {minutes * 60 / one:.2f} (target <= {TARGET_TRAININGS:g})")


def _tiny_study(src: Path, out: Path, reference: Path) -> dict:
    """Run the tiny study with the package at `src` in a fresh process; return its results."""
    code = ("import sys; from pathlib import Path; from diffaudit.config import load_preset; "
            "from diffaudit.progress import make_progress; from diffaudit.study.runner import run_study; "
            "run_study(load_preset('tiny'), Path(sys.argv[1]), Path(sys.argv[2]), make_progress(disable=True))")
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", code, str(out), str(reference)], env=env, check=True)
    return json.loads((out / "results.json").read_text())


def check_identical(slow_ref: str, console: Console) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tmp / "slow"), slow_ref],
                       check=True)
        try:
            # Both paths train the tiny base model themselves (no reference), from the same seed.
            fast = _tiny_study(ROOT / "src", tmp / "fast", tmp / "none")
            slow = _tiny_study(tmp / "slow" / "src", tmp / "slow-run", tmp / "none")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "slow")], check=True)
    same = without_timings(fast) == without_timings(slow)
    console.print(f"tiny study, this code vs {slow_ref}: results {'byte-identical' if same else 'DIFFER'} "
                  "(wall-clock fields excepted)")
    if not same:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=Path("runs/bench-quick"))
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--reference", type=Path, default=Path("models/quick"))
    parser.add_argument("--report-only", action="store_true", help="Report on an existing run; run nothing.")
    parser.add_argument("--check-identical", action="store_true", help="Tiny study: this code vs the slow path.")
    parser.add_argument("--slow-ref", default=SLOW_REF)
    args = parser.parse_args()
    console = Console()
    if args.check_identical:
        check_identical(args.slow_ref, console)
        return
    wall = None
    if not args.report_only:
        from diffaudit.config import load_preset
        from diffaudit.progress import make_progress
        from diffaudit.study.runner import run_study

        if args.run.exists():
            raise SystemExit(f"{args.run} exists: a benchmark times a fresh study (or pass --report-only)")
        start = time.perf_counter()
        with make_progress(console) as progress:
            run_study(load_preset(args.preset), args.run, args.reference, progress)
        wall = time.perf_counter() - start
    report(args.run, wall, console)


if __name__ == "__main__":
    main()
