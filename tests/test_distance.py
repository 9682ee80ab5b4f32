import numpy as np
import pandas as pd

from diffaudit.attacks.metrics import clopper_pearson, rate_table
from diffaudit.measure.distance import rms_distance, tiled_rms_distance


def test_identical_images_are_at_zero() -> None:
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert rms_distance(img, img) == 0
    assert tiled_rms_distance(img, img) == 0


def test_tiling_catches_a_local_difference_that_rms_dilutes() -> None:
    a = np.full((16, 16, 3), 255, np.uint8)
    b = a.copy()
    b[:4, :4] = 0  # one tile of 16 completely different
    assert rms_distance(a, b) == np.float32(0.25)
    assert tiled_rms_distance(a, b) == 1.0


def test_distances_broadcast_over_pairs() -> None:
    gens = np.random.default_rng(1).integers(0, 256, (5, 1, 8, 8, 3), dtype=np.uint8)
    refs = np.random.default_rng(2).integers(0, 256, (1, 3, 8, 8, 3), dtype=np.uint8)
    d = tiled_rms_distance(gens, refs)
    assert d.shape == (5, 3)
    assert np.isclose(d[2, 1], tiled_rms_distance(gens[2, 0], refs[0, 1]))


def test_clopper_pearson_is_exact_and_covers_edges() -> None:
    low, high = clopper_pearson(0, 10)
    assert low == 0 and 0.30 < high < 0.31  # 1 - 0.025 ** (1/10)
    low, high = clopper_pearson(10, 10)
    assert high == 1 and 0.69 < low < 0.70
    table = rate_table(pd.DataFrame({"g": [1, 1, 2], "hit": [True, False, False]}), ["g"])
    assert table["rate"].tolist() == [0.5, 0.0]
