"""Nearest-neighbour matching of generated vectors against training vectors: diffaudit's faiss index
(HNSW above its exact limit) against brute-force numpy, with the index's top-1 recall against the exact answer.

Target (issue 4): 10^6 queries against 10^5 training vectors >= 20x faster than brute-force numpy at recall
>= 0.99. Brute force is timed on a random subset of the queries and scaled linearly (its cost is exactly
linear in the number of queries); both are measured in this one run. Vectors are 16x16x3 images, as in the
quick preset: training images are smooth random blobs, queries are noisy copies of training images (what
memorized generations look like) mixed with fresh blobs.
Usage: python benchmarks/neighbours.py [--train 100000] [--queries 1000000] [--brute-sample 2000]
"""

import argparse
import time

import numpy as np

from diffaudit.attacks.neighbours import TrainingIndex


def blobs(rng: np.random.Generator, n: int, side: int = 16) -> np.ndarray:
    """Low-frequency random images (uint8 N x side x side x 3), upsampled from 4x4 noise."""
    small = rng.random((n, 4, 4, 3), dtype=np.float32)
    return (np.repeat(np.repeat(small, side // 4, 1), side // 4, 2) * 255).astype(np.uint8)


def brute_force(train: np.ndarray, queries: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Exact L2 top-1 with numpy: |q|^2 - 2 q.t + |t|^2, in chunks of queries."""
    t = train.reshape(len(train), -1).astype(np.float32) / 255
    t_sq = (t**2).sum(1)
    out = []
    for start in range(0, len(queries), chunk):
        q = queries[start: start + chunk].reshape(-1, t.shape[1]).astype(np.float32) / 255
        out.append(np.argmin(t_sq[None] - 2 * q @ t.T, axis=1))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000_000)
    parser.add_argument("--brute-sample", type=int, default=2_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    train = blobs(rng, args.train)
    copies = rng.integers(0, args.train, args.queries // 2)
    noisy = [np.clip(train[c] + rng.normal(0, 8, (len(c), *train.shape[1:])).astype(np.float32), 0, 255)
             .astype(np.uint8) for c in np.array_split(copies, max(1, len(copies) // 50_000))]
    queries = np.concatenate([*noisy, blobs(rng, args.queries - len(copies))])
    start = time.perf_counter()
    index = TrainingIndex(train)
    build = time.perf_counter() - start
    start = time.perf_counter()
    found = np.concatenate([index.search(queries[i: i + 65536], candidates=1)[0]
                            for i in range(0, len(queries), 65536)])
    search = time.perf_counter() - start
    sample = rng.choice(len(queries), min(args.brute_sample, len(queries)), replace=False)
    start = time.perf_counter()
    exact = brute_force(train, queries[sample])
    brute = (time.perf_counter() - start) * len(queries) / len(sample)
    recall = float((found[sample] == exact).mean())
    print(f"{args.queries} queries x {args.train} training vectors (dim {train[0].size}), "
          f"index {type(index.index).__name__}")
    print(f"faiss: build {build:.1f} s + search {search:.1f} s; numpy brute force (from {len(sample)} queries, "
          f"scaled) {brute:.1f} s")
    print(f"speed-up {brute / (build + search):.1f}x (target >= 20x); top-1 recall {recall:.4f} (target >= 0.99)")


if __name__ == "__main__":
    main()
