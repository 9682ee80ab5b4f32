"""Training-set deduplication: by caption (exact, normalized, MinHash LSH, text embedding) or by image.

Carlini et al. 2023 found memorization follows duplicated *images*; caption dedup is what a data team
can cheaply run. Both arms write a new, content-hashed dataset version and a report of what was removed.
"""

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from datasketch import MinHash, MinHashLSH
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.io import write_json
from diffaudit.measure.distance import as_unit
from diffaudit.ownership import mark, remove_owned
from diffaudit.registry import Registry


@dataclass(frozen=True)
class DedupConfig:
    methods: tuple[str, ...] = ("exact", "normalized", "minhash", "embedding")
    minhash_threshold: float = 0.7  # Jaccard over word 1-2-grams; datasketch MinHashLSH
    minhash_perm: int = 128
    embedding_threshold: float = 0.95  # cosine between mean-pooled MiniLM caption embeddings
    image_threshold: float = 0.02  # RMS pixel distance below which two images count as one


def normalize(text: str) -> str:
    """Case, punctuation and whitespace do not make two captions different."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _groups(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Connected components of the 'is a duplicate of' graph: duplicates of duplicates are one group."""
    if not pairs:
        return np.arange(n)
    i, j = np.array(pairs).T
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _pairs_by_key(keys: list[str]) -> list[tuple[int, int]]:
    first: dict[str, int] = {}
    pairs = []
    for i, k in enumerate(keys):
        if k in first:
            pairs.append((first[k], i))
        else:
            first[k] = i
    return pairs


def _minhash_pairs(texts: list[str], threshold: float, num_perm: int) -> list[tuple[int, int]]:
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    pairs = []
    for i, text in enumerate(texts):
        words = normalize(text).split()
        shingles = set(words) | {" ".join(p) for p in pairwise(words)}
        mh = MinHash(num_perm=num_perm, seed=1)
        for s in shingles:
            mh.update(s.encode())
        pairs += [(int(j), i) for j in lsh.query(mh)]
        lsh.insert(str(i), mh)
    return pairs


def _range_pairs(vectors: np.ndarray, radius: float, inner_product: bool) -> list[tuple[int, int]]:
    """All pairs within `radius` (cosine >= radius, or squared L2 < radius) via a faiss range search."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1]) if inner_product else faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    lims, _, ids = index.range_search(vectors, radius)
    return [(int(ids[k]), q) for q in range(len(vectors)) for k in range(lims[q], lims[q + 1]) if ids[k] < q]


def _exact(data: ImageDataset, cfg: DedupConfig, encode: Callable | None) -> list[tuple[int, int]]:
    return _pairs_by_key(data.texts)


def _normalized(data: ImageDataset, cfg: DedupConfig, encode: Callable | None) -> list[tuple[int, int]]:
    return _pairs_by_key([normalize(t) for t in data.texts])


def _minhash(data: ImageDataset, cfg: DedupConfig, encode: Callable | None) -> list[tuple[int, int]]:
    return _minhash_pairs(data.texts, cfg.minhash_threshold, cfg.minhash_perm)


def _embedding(data: ImageDataset, cfg: DedupConfig, encode: Callable | None) -> list[tuple[int, int]]:
    if encode is None:
        raise ConfigError("embedding dedup needs a text encoder")
    emb = encode(data.texts).mean(1).cpu().float().numpy()
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return _range_pairs(emb, cfg.embedding_threshold, inner_product=True)


def _image(data: ImageDataset, cfg: DedupConfig, encode: Callable | None) -> list[tuple[int, int]]:
    flat = as_unit(data.images).reshape(len(data), -1)
    return _range_pairs(flat, cfg.image_threshold**2 * flat.shape[1], inner_product=False)


# Each method finds the pairs of rows it calls duplicates.
METHODS: Registry[Callable[[ImageDataset, DedupConfig, Callable | None], list[tuple[int, int]]]] = Registry(
    "dedup method", "dedup.methods",
    {"exact": _exact, "normalized": _normalized, "minhash": _minhash, "embedding": _embedding, "image": _image})


def duplicate_groups(data: ImageDataset, method: str, cfg: DedupConfig, encode: Callable | None = None) -> np.ndarray:
    """A group id per row of `data` (rows sharing an id are duplicates under `method`)."""
    return _groups(len(data), METHODS[method](data, cfg, encode))


def deduplicate(data: ImageDataset, out: Path, methods: tuple[str, ...], cfg: DedupConfig,
                encode: Callable | None = None) -> dict:
    """Keep the first row of every duplicate group among members (union over `methods`); write the new
    version to `out` as an imagefolder, atomically. Non-member and calibration rows are kept unchanged."""
    members = data.split("member")
    pairs: list[tuple[int, int]] = []
    found = {}
    for method in methods:
        groups = duplicate_groups(members, method, cfg, encode)
        found[method] = int(len(groups) - len(np.unique(groups)))
        pairs += _pairs_by_key([str(g) for g in groups])
    keep_member = ~pd.Series(_groups(len(members), pairs)).duplicated().to_numpy()
    is_member = (data.table["split"] == "member").to_numpy()
    keep = np.ones(len(data), bool)
    keep[np.flatnonzero(is_member)[~keep_member]] = False
    table = data.table[keep].reset_index(drop=True)
    removed = data.table.loc[~keep, ["id", "text", "sha256", "dup_kind", "dup_group"]]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        mark(tmp, "dataset")
        for name in table["file_name"]:
            shutil.copyfile(data.root / name, tmp / name)
        new_sha = table[table["split"] == "member"]["sha256"].value_counts()
        table["dup_count"] = [int(new_sha.get(s, 0)) for s in table["sha256"]]
        (tmp / "metadata.jsonl").write_text(table.to_json(orient="records", lines=True))
        report = {"source_version": data.version, "methods": list(methods), "config": asdict(cfg),
                  "rows_before": len(data), "rows_after": len(table), "member_rows_before": len(members),
                  "member_rows_removed": int((~keep).sum()),
                  "removable_by_method": found, "removed_by_kind": removed["dup_kind"].value_counts().to_dict()}
        write_json(tmp / "dedup_report.json", report)
        remove_owned(out, "dataset")
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report
