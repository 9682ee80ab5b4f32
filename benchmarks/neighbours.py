"""Nearest-training-image search at audit scale, on real pictures: diffaudit's index against exact search.

Training set: every OpenMoji glyph rendered at 16 px, each with random shifts and scales (one render per seed)
until there are `--train` images (10^5 by default). Queries: the quick model's own generations, read from
the sample folders of earlier runs (`--runs`), duplicates removed. The truth is the exact nearest training image
by Carlini's tiled distance (max over 4x4 tiles of RMS), computed exhaustively for `--truth` queries.

The exact baseline is the fastest exact L2 search here: faiss `IndexFlatL2` and a torch matmul (both BLAS, all
threads) are timed on `--brute-sample` queries and the faster is kept. Exact L2 search is cheaper than exact tiled
search, so the baseline is if anything too fast. Both sides' per-query search time is scaled linearly to
`--queries` (10^6); the index's build time is counted once. A sweep over PCA width, probes and re-ranked
candidates is printed; the top-1 recall is the share of queries whose found tiled distance equals the truth's,
over all queries and over those with a training image within 2 delta (where a copy verdict can turn on it).
Usage: python benchmarks/neighbours.py [--runs 'runs/*'] [--train 100000] [--queries 1000000]
"""

import argparse
import glob
import os
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from PIL import Image

from diffaudit.config import CARLINI_DELTA
from diffaudit.data.openmoji import RENDER_SIZE, glyph_font, named_glyphs, render_large
from diffaudit.measure import neighbours
from diffaudit.measure.distance import as_unit, tiled_rms_distance
from diffaudit.measure.neighbours import TrainingIndex

SIDE = 16


def jittered_renders(n: int, seed: int = 0) -> np.ndarray:
    """n renders of OpenMoji glyphs, cycling through all glyphs; each a random shift (±15%) and scale (70-100%)."""
    rng = np.random.default_rng(seed)
    font = glyph_font()
    big = [render_large(glyph, font) for glyph in named_glyphs()]
    out = np.empty((n, SIDE, SIDE, 3), np.uint8)
    for i in range(n):
        img = big[i % len(big)]
        scale = rng.uniform(0.7, 1.0)
        size = int(RENDER_SIZE * scale)
        dx, dy = (rng.uniform(-0.15, 0.15, 2) * RENDER_SIZE).astype(int)
        canvas = Image.new("RGB", (RENDER_SIZE, RENDER_SIZE), (255, 255, 255))
        canvas.paste(img.resize((size, size), Image.Resampling.BOX),
                     ((RENDER_SIZE - size) // 2 + dx, (RENDER_SIZE - size) // 2 + dy))
        out[i] = np.asarray(canvas.resize((SIDE, SIDE), Image.Resampling.BOX))
    return out


def generations(pattern: str) -> np.ndarray:
    """Every 16 px generation saved under the runs matching `pattern`, each distinct picture once."""
    shards = [np.load(f) for f in sorted(glob.glob(f"{pattern}/**/samples/shard-*.npy", recursive=True))]
    images = np.concatenate([s for s in shards if s.shape[1:] == (SIDE, SIDE, 3)])
    return np.unique(images.reshape(len(images), -1), axis=0).reshape(-1, SIDE, SIDE, 3)


def tile_vectors(images: np.ndarray) -> torch.Tensor:
    """N x 16 tiles x 48 values: each 4x4 tile's pixels, so tiled distances are 16 matmuls."""
    x = torch.from_numpy(as_unit(images)).reshape(len(images), 4, 4, 4, 4, 3)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(len(images), 16, 48)


def exact_tiled(train: np.ndarray, queries: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Per query, the smallest tiled RMS distance to any training image, by exhaustive search. The matmul form
    ranks every training image in float64 (float32 cancellation on white tiles is ~1e-6); the winner's distance is
    then recomputed by `tiled_rms_distance`, the function the index's re-rank uses, so equal answers compare equal."""
    t = tile_vectors(train).double()
    t_sq = (t**2).sum(-1)  # N x 16
    best = []
    for start in range(0, len(queries), chunk):
        q = tile_vectors(queries[start: start + chunk]).double()
        d = (q**2).sum(-1)[:, None] + t_sq[None] - 2 * torch.einsum("qsd,nsd->qns", q, t)
        best.append(d.amax(-1).argmin(1))
    ids = torch.cat(best).numpy()
    return tiled_rms_distance(queries, train[ids])


def exact_l2_seconds(train: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """Seconds per query of the exact L2 top-1 by faiss IndexFlatL2 and by a torch matmul, on these queries."""
    t, q = as_unit(train).reshape(len(train), -1), as_unit(queries).reshape(len(queries), -1)
    flat = faiss.IndexFlatL2(t.shape[1])
    flat.add(t)
    start = time.perf_counter()
    flat.search(q, 1)
    timings = {"faiss IndexFlatL2": (time.perf_counter() - start) / len(q)}
    tt, qt = torch.from_numpy(t), torch.from_numpy(q)
    t_sq = (tt**2).sum(1)
    start = time.perf_counter()
    for i in range(0, len(qt), 1024):
        (t_sq[None] - 2 * qt[i: i + 1024] @ tt.T).argmin(1)
    timings["torch matmul"] = (time.perf_counter() - start) / len(q)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs/*", help="glob of run folders holding the model's generations")
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000_000, help="size the timings are scaled to")
    parser.add_argument("--truth", type=int, default=2_000, help="queries whose exact tiled neighbour is computed")
    parser.add_argument("--brute-sample", type=int, default=4_000)
    parser.add_argument("--real", type=int, help="use this many of the generations (default: all)")
    parser.add_argument("--cache", type=Path, default=Path("runs/neighbour-renders.npy"))
    args = parser.parse_args()
    if args.cache.exists() and len(np.load(args.cache, mmap_mode="r")) == args.train:
        train = np.load(args.cache)
    else:
        train = jittered_renders(args.train)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.cache, train)
    queries = generations(args.runs)
    rng = np.random.default_rng(0)
    if args.real is not None:
        queries = queries[rng.choice(len(queries), min(args.real, len(queries)), replace=False)]
    truth_rows = rng.choice(len(queries), min(args.truth, len(queries)), replace=False)
    truth = exact_tiled(train, queries[truth_rows])
    print(f"{len(train)} training renders x {len(queries)} distinct generations (dim {train[0].size}); "
          f"{os.cpu_count()} CPUs, faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads, torch "
          f"{torch.get_num_threads()} threads; timings scaled to {args.queries:,} queries")
    brute = exact_l2_seconds(train, queries[rng.choice(len(queries), min(args.brute_sample, len(queries)), False)])
    best_name = min(brute, key=brute.get)
    base = brute[best_name] * args.queries
    for name, per_query in brute.items():
        print(f"exact L2, {name}: {per_query * args.queries:,.0f} s at full size")
    print(f"baseline: {best_name}, {base:,.0f} s\n")
    near = truth < 2 * CARLINI_DELTA
    print(f"{int(near.sum())} of the {len(truth)} truth queries have a training image within 2 delta = "
          f"{2 * CARLINI_DELTA:g} (the ones a copy verdict can depend on)\n")
    print("| candidates, re-ranked | build + search s (full size) | speed-up | top-1 recall, all | top-1 recall, "
          "within 2 delta | same copy verdict at delta |")
    print("|---|---|---|---|---|---|")
    exact = TrainingIndex(train, exact_limit=len(train))
    for rerank in (8, 16, 32):  # exact L2 candidates: how far the L2 proxy alone takes the tiled re-rank
        found = exact.search(queries[truth_rows], candidates=rerank)[1]
        row(f"exact L2 (flat), {rerank}", found, truth, near, f"{base:,.0f} | 1.0×")
    start = time.perf_counter()
    index = TrainingIndex(train, exact_limit=0)
    build = time.perf_counter() - start
    for probes in (8, 16, 32):
        index.ivf.nprobe = probes
        for rerank in (8, 16, 32):
            start = time.perf_counter()
            for i in range(0, len(queries), 65536):
                index.search(queries[i: i + 65536], candidates=rerank)
            search = (time.perf_counter() - start) / len(queries) * args.queries
            found = index.search(queries[truth_rows], candidates=rerank)[1]
            chosen = (probes, rerank) == (neighbours.IVF_PROBES, neighbours.RERANK)
            row(f"PCA{neighbours.PCA_DIMS} + IVF, {probes} probes, {rerank}{' (default)' if chosen else ''}", found,
                truth, near, f"{build:.1f} + {search:,.0f} | {base / (build + search):.1f}×")


def row(name: str, found: np.ndarray, truth: np.ndarray, near: np.ndarray, timing: str) -> None:
    hit = found <= truth + 1e-6
    same = np.mean((found < CARLINI_DELTA) == (truth < CARLINI_DELTA))
    print(f"| {name} | {timing} | {hit.mean():.4f} | {hit[near].mean():.4f} | {same:.4f} |", flush=True)


if __name__ == "__main__":
    main()
