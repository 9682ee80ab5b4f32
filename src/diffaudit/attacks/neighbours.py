"""Nearest training images for generated ones, with faiss: exact for small sets, HNSW above a size."""

import faiss
import numpy as np

from diffaudit.attacks.distance import as_unit, tiled_rms_distance

EXACT_LIMIT = 50_000  # below this many training vectors a flat (exact) index is fast enough


class TrainingIndex:
    """L2 index over flattened [0,1] training images; candidates are re-ranked by Carlini's tiled distance."""

    def __init__(self, images: np.ndarray, exact_limit: int = EXACT_LIMIT, hnsw_m: int = 32, ef_search: int = 128):
        self.images = images
        vectors = as_unit(images).reshape(len(images), -1)
        dim = vectors.shape[1]
        if len(vectors) <= exact_limit:
            self.index = faiss.IndexFlatL2(dim)
        else:
            self.index = faiss.IndexHNSWFlat(dim, hnsw_m)
            self.index.hnsw.efSearch = ef_search
        self.index.add(vectors)

    def candidates(self, images: np.ndarray, k: int) -> np.ndarray:
        """Per query, the k training images closest in plain L2 (tiled distance is re-ranked by the caller)."""
        queries = as_unit(images).reshape(len(images), -1)
        _, ids = self.index.search(queries, min(k, self.index.ntotal))
        return np.where(ids < 0, ids[:, :1], ids)

    def search(self, images: np.ndarray, candidates: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """For each query image: (index of the closest training image, its tiled RMS distance)."""
        ids = self.candidates(images, candidates)
        tiled = tiled_rms_distance(images[:, None], self.images[ids])
        best = tiled.argmin(1)
        rows = np.arange(len(images))
        return ids[rows, best], tiled[rows, best]

