"""What `diffaudit demo` (the mission's core) costs on this machine, and the committed arm models it reuses.

Target: the demo finishes in <= 30 minutes on 2 CPU cores (median of --repeat fresh runs, each alone on the
machine), from a fresh run folder with the committed models in models/ (the reference, the caption-dedup retrain,
the DP fine-tune). Each run is `diffaudit demo` as a user types it, in its own process; wall time is the process's.

Writes `benchmarks/results/demo.json` (every run's wall time and step table, the median and spread) and the
per-step medians into `src/diffaudit/study/step_costs.json`, which the study's whole-run progress reads for its
time left.

`--commit-models RUN` copies the retrained and fine-tuned arm models of a finished demo RUN into models/ (model
files and their manifests, no checkpoints), each with `committed.json` naming the inputs it was made from, so the
demo reuses them only when it would make the same models.

Usage: python benchmarks/demo.py [--out runs/bench-demo] [--repeat 2] [--preset core]
       python benchmarks/demo.py --commit-models runs/bench-demo/run-1
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from diffaudit.layout import RunLayout

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo.json"
COSTS = ROOT / "src" / "diffaudit" / "study" / "step_costs.json"
TARGET_MINUTES = 30.0


def steps(run: Path) -> dict[str, float]:
    """Seconds per step of a finished run, in the order the steps finished."""
    folder = RunLayout(run).steps
    files = sorted(folder.glob("**/*.cost.json"), key=lambda p: p.stat().st_mtime)
    return {f.relative_to(folder).as_posix().removesuffix(".cost.json"): json.loads(f.read_text())["seconds"]
            for f in files}


def commit() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def time_demo(run: Path, preset: str, reference: Path) -> float:
    if run.exists():
        raise SystemExit(f"{run} exists: the benchmark times a fresh demo")
    start = time.perf_counter()
    diffaudit = Path(sys.executable).parent / "diffaudit"  # the command a user types, from this venv
    subprocess.run([str(diffaudit), "demo", "--preset", preset, "--out", str(run), "--reference", str(reference)],
                   check=True)
    return time.perf_counter() - start


def benchmark(out: Path, preset: str, repeat: int, reference: Path, console: Console) -> None:
    runs = []
    for i in range(1, repeat + 1):
        run = out / f"run-{i}"
        wall = time_demo(run, preset, reference)
        runs.append({"run": str(run), "wall_seconds": round(wall, 1), "steps": steps(run)})
        console.print(f"run {i}: {wall / 60:.1f} min")
    walls = [r["wall_seconds"] for r in runs]
    names = list(runs[0]["steps"])
    medians = {n: round(statistics.median(r["steps"].get(n, 0.0) for r in runs), 1) for n in names}
    measured = {"preset": preset, "commit": commit(), "machine": f"{platform.machine()}, "
                f"{len(os.sched_getaffinity(0))} cores", "date": time.strftime("%Y-%m-%d"),
                "median_minutes": round(statistics.median(walls) / 60, 1),
                "spread_minutes": [round(min(walls) / 60, 1), round(max(walls) / 60, 1)],
                "target_minutes": TARGET_MINUTES, "runs": runs}
    RESULTS.write_text(json.dumps(measured, indent=2) + "\n")
    table = json.loads(COSTS.read_text()) if COSTS.exists() else {}
    clocked = {n: t for n, t in medians.items() if n != "prepare"}  # the clock counts the study's steps only
    table[preset] = {"measured": f"benchmarks/demo.py at {measured['commit']} on {measured['date']}, "
                                 f"median of {repeat}", "seconds": clocked}
    COSTS.write_text(json.dumps(table, indent=2) + "\n")
    show = Table(title=f"diffaudit demo --preset {preset}: seconds per step (median of {repeat})")
    for col in ("step", "median s", *(f"run {i}" for i in range(1, repeat + 1))):
        show.add_column(col, justify="left" if col == "step" else "right")
    for n in names:
        show.add_row(n, f"{medians[n]:.0f}", *(f"{r['steps'].get(n, 0.0):.0f}" for r in runs))
    console.print(show)
    console.print(f"demo wall time: median {measured['median_minutes']} min, range {measured['spread_minutes']} "
                  f"(target <= {TARGET_MINUTES:g}); written to {RESULTS.relative_to(ROOT)} and "
                  f"{COSTS.relative_to(ROOT)}")


def commit_models(run: Path, models: Path, console: Console) -> None:
    """Copy RUN's retrained (dedup) and fine-tuned (DP) arm models of its first seed into `models`: a retrain's model
    is `ARM/train/model` (mitigations.retrain_dedup), a fine-tune's `ARM/model` beside `ARM/dp_report.json`
    (mitigations.private_finetune)."""
    layout = RunLayout(run)
    record = json.loads(layout.record.read_text())
    preset, seed = record["config"]["name"], record["config"]["study"]["seeds"][0]
    inputs = {"base_model_hash": record["hashes"]["base_model"], "dataset_version": record["hashes"]["dataset"],
              "from_run": run.name, "copied_at_commit": commit()}
    copied = 0
    for arm in sorted(p for p in layout.seed(seed).iterdir() if p.is_dir()):
        retrained, finetuned = arm / "train" / "model", arm / "model"
        if (retrained / "training_manifest.json").exists():
            source, extra = retrained, []
        elif (arm / "dp_report.json").exists() and (finetuned / "model_index.json").exists():
            source, extra = finetuned, [arm / "dp_report.json"]
        else:
            continue
        target = models / f"{preset}-{arm.name}"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        for path in extra:
            shutil.copy(path, target)
        (target / "committed.json").write_text(json.dumps({**inputs, "arm": arm.name}, indent=2) + "\n")
        (target / "README.md").write_text(
            f"# Committed arm model: {arm.name} ({preset} preset, training seed {seed})\n\n"
            f"Made by `diffaudit demo --preset {preset}` from the base model `{inputs['base_model_hash']}` "
            f"(models/quick) and the dataset `{inputs['dataset_version']}`, and copied here at commit "
            f"{inputs['copied_at_commit']} by `python benchmarks/demo.py --commit-models RUN`. A study reuses it "
            "only when it would make the same model: a retrain whose training manifest names the same data, recipe "
            "and network, a fine-tune whose `dp_report.json` names the same settings and whose `committed.json` "
            f"names the same base model and dataset. Otherwise it trains its own (in `RUN/seed{seed}/{arm.name}/`). "
            "Weights are safetensors.\n")
        console.print(f"{arm.name}: {target}")
        copied += 1
    if not copied:
        raise SystemExit(f"{run} trained no arm model of its own (did it reuse committed ones?): nothing to commit")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/bench-demo"))
    parser.add_argument("--preset", default="core")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--reference", type=Path, default=Path("models/quick"))
    parser.add_argument("--commit-models", type=Path, help="A finished demo run whose arm models to commit.")
    args = parser.parse_args()
    console = Console()
    if args.commit_models:
        commit_models(args.commit_models, args.reference.parent, console)
    else:
        benchmark(args.out, args.preset, args.repeat, args.reference, console)


if __name__ == "__main__":
    main()
