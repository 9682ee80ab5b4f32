"""Near-duplicate families: images a copy test could not tell apart are one subject.

OpenMoji draws one subject in many variants (five skin tones, man/woman/person, hair styles) and some
unrelated glyphs render nearly alike at 16 px. A never-trained image whose sibling was trained on would
look "copied", so splits are made family-disjoint and leaks are counted per family as well as per image.
"""

import faiss
import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import DisjointSet

from diffaudit.measure.distance import as_unit, copy_distance, rms_distance
from diffaudit.measure.neighbours import TrainingIndex

NEIGHBOURS = 32  # faiss candidates per picture confirmed by the tiled distance
CONFIRM_BLOCK = 1024  # pictures confirmed at once: bounds the tiled distance's memory (1024 x 32 x H x W x 3)
DENSE_BLOCK = 64  # dense pictures range-searched at once
CONFIRM_PAIRS = 65_536  # candidate pairs of dense pictures confirmed at once
# Unicode modifiers that make a variant of one subject: skin tones, variation selector, zero-width joiner,
# gender signs, hair components (Unicode TR51 §2.4, §2.6, §2.3).
_DROPPED = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF", "FE0F", "200D", "2640", "2642", "1F9B0", "1F9B1", "1F9B2",
            "1F9B3"}
# Gendered bases of one person subject (TR51 gender-neutral forms): man/woman/person, boy/girl/child,
# old man/old woman/older person.
_PERSON = {"1F468": "P", "1F469": "P", "1F9D1": "P", "1F466": "C", "1F467": "C", "1F9D2": "C", "1F474": "O",
           "1F475": "O", "1F9D3": "O"}


def half_of_families(family: pd.Series, rng: np.random.Generator) -> np.ndarray:
    """Mask of the rows whose near-duplicate family is in a random half of the families (whole families only, so
    no sibling lands on both sides)."""
    names = family.unique()
    return family.isin(set(rng.permutation(names)[: len(names) // 2])).to_numpy()


def codepoint_family(code: str) -> str:
    """'1F469-1F3FD-200D-2695-FE0F' (woman health worker, medium skin tone) -> 'P-2695' (health worker)."""
    parts = [_PERSON.get(p, p) for p in code.upper().split("-") if p not in _DROPPED]
    return "-".join(parts) or code.upper()


def distinct(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first image of each distinct picture, per image the position of its picture among those), so
    identical images are compared once: 100,000 rows of one picture cost one comparison, not 10^10."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def close_pairs(queries: np.ndarray, base: np.ndarray, threshold: float, k: int = NEIGHBOURS) -> np.ndarray:
    """Pairs (query i, base j) closer than `threshold` under the copy test's distance. Candidates are each query's
    `k` nearest base images in plain L2 (faiss, as `attacks.neighbours` searches), confirmed by the tiled distance;
    plain RMS never exceeds the tiled distance (a max over tiles is at least their mean), so a query whose `k`
    candidates are all within `threshold` in RMS may have more, and is searched exhaustively (every base image
    within `threshold` in RMS). Memory grows with len(queries) * k and with the close candidates of such dense
    queries, never with all pairs. Pass distinct pictures (`distinct`): identical copies would fill the k places."""
    if len(queries) == 0 or len(base) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    index = TrainingIndex(base)
    found, dense = [], []
    for start in range(0, len(queries), CONFIRM_BLOCK):
        block = queries[start:start + CONFIRM_BLOCK]
        ids = index.candidates(block, k)
        candidates = base[ids]  # gathered once for both distances
        rows, cols = np.nonzero(copy_distance(block[:, None], candidates) < threshold)
        found.append(np.stack([rows + start, ids[rows, cols]], 1))
        if ids.shape[1] < len(base):
            dense.extend(start + np.flatnonzero(rms_distance(block[:, None], candidates).max(1) < threshold))
    if dense:
        found.append(_exhaustive(queries, np.array(dense), base, threshold))
    return np.unique(np.concatenate(found), axis=0).astype(np.int64)


def _exhaustive(queries: np.ndarray, which: np.ndarray, base: np.ndarray, threshold: float) -> np.ndarray:
    """Every confirmed pair for the queries `which`: a faiss range search (exact L2) for candidates, confirmed in
    blocks of at most CONFIRM_PAIRS pairs."""
    vectors = as_unit(base).reshape(len(base), -1)
    flat = faiss.IndexFlatL2(vectors.shape[1])
    flat.add(vectors)
    radius = threshold**2 * vectors.shape[1] * (1 + 1e-5)  # float32 rounding must not drop a boundary pair
    found = []
    for start in range(0, len(which), DENSE_BLOCK):
        rows = which[start:start + DENSE_BLOCK]
        lims, _, ids = flat.range_search(as_unit(queries[rows]).reshape(len(rows), -1), radius)
        query = np.repeat(rows, np.diff(lims).astype(np.int64))
        for at in range(0, len(ids), CONFIRM_PAIRS):
            q, b = query[at:at + CONFIRM_PAIRS], ids[at:at + CONFIRM_PAIRS]
            close = copy_distance(queries[q], base[b]) < threshold
            found.append(np.stack([q[close], b[close]], 1))
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


def join_families(images: np.ndarray, keys: list[str], threshold: float) -> np.ndarray:
    """Family label per image: connected components of 'same key' (codepoint family, or identical pixels) or
    'closer than threshold'.

    Labels are the smallest member index of each component, so they do not depend on iteration order."""
    sets = DisjointSet(range(len(images)))
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        sets.merge(first.setdefault(key, i), i)
    pictures, of = distinct(images)
    for i, picture in enumerate(of):
        sets.merge(int(pictures[picture]), i)
    for a, b in close_pairs(images[pictures], images[pictures], threshold):
        if a != b:
            sets.merge(int(pictures[a]), int(pictures[b]))
    roots = np.array([sets[i] for i in range(len(images))])
    return pd.Series(np.arange(len(images))).groupby(roots).transform("min").to_numpy()


def near_copies(images: np.ndarray, others: np.ndarray, threshold: float) -> np.ndarray:
    """Per image, whether some image of `others` lies within `threshold`: the image null of a split."""
    pictures, of = distinct(images)
    hit = np.zeros(len(pictures), dtype=bool)
    hit[close_pairs(images[pictures], others[distinct(others)[0]], threshold)[:, 0]] = True
    return hit[of]


def split_leaks(images: np.ndarray, table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Held-out rows (nonmember, calibration) that share a family with, or lie within `threshold` of, a member:
    one row per leak with an example member, so `data check` can name them."""
    member = (table["split"] == "member").to_numpy()
    held = np.flatnonzero(~member)
    member_idx = np.flatnonzero(member)
    held_pictures, held_of = distinct(images[held])
    member_pictures = member_idx[distinct(images[member_idx])[0]]
    pairs = close_pairs(images[held[held_pictures]], images[member_pictures], threshold)
    near = {int(i): int(member_pictures[j]) for i, j in pairs[::-1]}  # per held picture, its first close member
    nearest = {int(h): near[int(p)] for h, p in zip(held, held_of, strict=True) if int(p) in near}
    first_member = dict(zip(table["family"][member][::-1], member_idx[::-1], strict=True))  # lowest index wins
    for i in held:
        if i not in nearest and table["family"].iloc[i] in first_member:
            nearest[int(i)] = int(first_member[table["family"].iloc[i]])
    rows = [{"id": table["id"].iloc[i], "split": table["split"].iloc[i], "member_id": table["id"].iloc[j],
             "distance": float(copy_distance(images[i], images[j]))} for i, j in sorted(nearest.items())]
    return pd.DataFrame(rows, columns=["id", "split", "member_id", "distance"])
