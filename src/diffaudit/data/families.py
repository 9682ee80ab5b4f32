"""Near-duplicate families: images a copy test could not tell apart are one subject.

OpenMoji draws one subject in many variants (five skin tones, man/woman/person, hair styles) and some
unrelated glyphs render nearly alike at 16 px. A never-trained image whose sibling was trained on would
look "copied", so splits are made family-disjoint and leaks are counted per family as well as per image.
"""

import faiss
import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import DisjointSet

from diffaudit.attacks.copies import copy_distance
from diffaudit.attacks.distance import as_unit

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


def close_pairs(queries: np.ndarray, base: np.ndarray, threshold: float, chunk: int = 1024) -> np.ndarray:
    """All pairs (query i, base j) closer than `threshold` under the copy test's distance.

    Plain RMS never exceeds the tiled distance (a max over tiles is at least their mean), so an exact
    faiss range search on plain L2 finds every candidate and the tiled distance confirms it."""
    if len(queries) == 0 or len(base) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    vectors = as_unit(base).reshape(len(base), -1)
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    radius = threshold**2 * vectors.shape[1] * (1 + 1e-5)  # float32 rounding must not drop a boundary pair
    found = []
    for start in range(0, len(queries), chunk):
        lims, _, ids = index.range_search(as_unit(queries[start:start + chunk]).reshape(-1, vectors.shape[1]), radius)
        rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims).astype(np.int64))
        if len(rows) == 0:
            continue
        close = copy_distance(queries[rows], base[ids]) < threshold
        found.append(np.stack([rows[close], ids[close]], 1))
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), dtype=np.int64)


def join_families(images: np.ndarray, keys: list[str], threshold: float) -> np.ndarray:
    """Family label per image: connected components of 'same codepoint family' or 'closer than threshold'.

    Labels are the smallest member index of each component, so they do not depend on iteration order."""
    sets = DisjointSet(range(len(images)))
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        sets.merge(first.setdefault(key, i), i)
    for i, j in close_pairs(images, images, threshold):
        if i != j:
            sets.merge(int(i), int(j))
    return np.array([min(sets.subset(i)) for i in range(len(images))])


def near_copies(images: np.ndarray, others: np.ndarray, threshold: float) -> np.ndarray:
    """Per image, whether some image of `others` lies within `threshold`: the image null of a split."""
    hit = np.zeros(len(images), dtype=bool)
    hit[close_pairs(images, others, threshold)[:, 0]] = True
    return hit


def split_leaks(images: np.ndarray, table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Held-out rows (nonmember, calibration) that share a family with, or lie within `threshold` of, a member:
    one row per leak with an example member, so `data check` can name them."""
    member = (table["split"] == "member").to_numpy()
    held = np.flatnonzero(~member)
    member_idx = np.flatnonzero(member)
    pairs = close_pairs(images[held], images[member_idx], threshold)
    nearest = {int(held[i]): int(member_idx[j]) for i, j in pairs[::-1]}
    first_member = dict(zip(table["family"][member][::-1], member_idx[::-1], strict=True))  # lowest index wins
    for i in held:
        if i not in nearest and table["family"].iloc[i] in first_member:
            nearest[int(i)] = int(first_member[table["family"].iloc[i]])
    rows = [{"id": table["id"].iloc[i], "split": table["split"].iloc[i], "member_id": table["id"].iloc[j],
             "distance": float(copy_distance(images[i], images[j]))} for i, j in sorted(nearest.items())]
    return pd.DataFrame(rows, columns=["id", "split", "member_id", "distance"])
