"""`diffaudit data check` at 10^5 rows: time and peak memory, and the families' recall against exact search.

Two folders of `--rows` rows each (half member, half nonmember, so the split-leak search runs too):
- one picture: every row names the same 16 px PNG (the hostile case that once took 304 s and 21.7 GB at 2,000 rows);
- distinct pictures: OpenMoji renders with random shifts and scales (benchmarks/neighbours.py), one PNG per row.
Each `data check` runs in its own process, alone; peak memory is that process's high-water resident set (VmHWM).
Recall: on `--recall` distinct renders, the close pairs diffaudit's families are built from (faiss candidates
confirmed by the tiled distance) against every pair within the threshold (an exhaustive range search), and whether
the two give the same families.
Usage: python benchmarks/data_check.py [--rows 100000] [--recall 10000] [--repeat 2] [--out runs/bench-data-check]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from PIL import Image
from scipy.cluster.hierarchy import DisjointSet

from diffaudit.config import PRESETS
from diffaudit.data.families import close_pairs, distinct
from diffaudit.measure.distance import as_unit, copy_distance

sys.path.insert(0, str(Path(__file__).parent))
from neighbours import jittered_renders

THRESHOLD = PRESETS["quick"].data.family_join


def write_folder(out: Path, pictures: np.ndarray, rows: int) -> None:
    """`rows` rows cycling through `pictures` (one PNG each), alternately member and nonmember; a folder written by an
    earlier run with as many pictures and rows is kept."""
    meta = out / "metadata.jsonl"
    if meta.exists() and len(list((out / "images").iterdir())) == len(pictures) and \
            sum(1 for _ in meta.open()) == rows:
        return
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(out / "images" / f"{i:06d}.png")
    with (out / "metadata.jsonl").open("w") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"r{i}", "file_name": f"images/{i % len(pictures):06d}.png",
                                "text": f"picture {i}", "split": "member" if i % 2 else "nonmember"}) + "\n")


# The child reports its own peak (VmHWM: its memory map's high-water mark, new at exec). wait4's ru_maxrss would not
# do: on Linux it starts from the parent's resident size at fork, and this parent holds 10^5 renders.
PEAK = ("import atexit, sys; atexit.register(lambda: print('VmHWM', open('/proc/self/status').read()"
        ".split('VmHWM:')[1].split()[0], file=sys.stderr)); from diffaudit.cli import main; main()")


def check(folder: Path, repeat: int) -> dict:
    """`diffaudit data check FOLDER` in fresh processes, `repeat` times: median and spread of wall seconds, the
    largest peak resident memory, exit status."""
    runs = [_check_once(folder) for _ in range(repeat)]
    seconds = sorted(r["seconds"] for r in runs)
    return {**runs[-1], "seconds": float(np.median(seconds)), "seconds_min_max": [seconds[0], seconds[-1]],
            "peak_gib": max(r["peak_gib"] for r in runs), "repeats": repeat}


def _check_once(folder: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, "data", "check", str(folder)], capture_output=True, text=True)
    peak_kib = int(done.stderr.split("VmHWM")[-1].split()[0])
    return {"seconds": round(time.perf_counter() - start, 1), "peak_gib": round(peak_kib / 2**20, 3),
            "status": done.returncode, "last_line": done.stdout.strip().splitlines()[-1][:200]}


def exact_pairs(images: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """Every pair within `threshold` (tiled distance), from an exhaustive L2 range search (L2 RMS never exceeds the
    tiled distance, so no pair is missed)."""
    vectors = as_unit(images).reshape(len(images), -1)
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    lims, _, ids = index.range_search(vectors, threshold**2 * vectors.shape[1] * (1 + 1e-5))
    rows = np.repeat(np.arange(len(images)), np.diff(lims).astype(np.int64))
    close = copy_distance(images[rows], images[ids]) < threshold
    return {(int(a), int(b)) for a, b in zip(rows[close], ids[close], strict=True) if a != b}


def components(n: int, pairs: set[tuple[int, int]]) -> set[frozenset[int]]:
    sets = DisjointSet(range(n))
    for a, b in pairs:
        sets.merge(a, b)
    return {frozenset(s) for s in sets.subsets()}


def recall(n: int) -> dict:
    images = jittered_renders(n, seed=1)
    images = images[distinct(images)[0]]
    truth = exact_pairs(images, THRESHOLD)
    ours = {(int(a), int(b)) for a, b in close_pairs(images, images, THRESHOLD) if a != b}
    found = len(truth & ours)
    return {"pictures": len(images), "exact_pairs": len(truth), "found_pairs": found,
            "pair_recall": round(found / max(len(truth), 1), 4), "false_pairs": len(ours - truth),
            "same_families": components(len(images), truth) == components(len(images), ours),
            "families_exact": len(components(len(images), truth)),
            "families_ours": len(components(len(images), ours))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--recall", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-data-check"))
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    results = {"rows": args.rows, "threshold": THRESHOLD, "cpus": os.cpu_count(), "recall": recall(args.recall)}
    print(json.dumps(results["recall"]), flush=True)
    one, many = args.out / "one-picture", args.out / "distinct"
    write_folder(one, jittered_renders(1), args.rows)
    results["one_picture"] = check(one, args.repeat)
    print("one picture:", json.dumps(results["one_picture"]), flush=True)
    write_folder(many, jittered_renders(args.rows, seed=2), args.rows)
    results["distinct"] = check(many, args.repeat)
    print("distinct:", json.dumps(results["distinct"]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
