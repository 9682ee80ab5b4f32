"""Where generations are kept: shard files of pictures and the index naming each (prompt, seed, guidance). Only
reading lives here, so a report can show samples without importing what draws them."""

from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.errors import CheckpointError
from diffaudit.measure.distance import resize_images

INDEX = "index.parquet"
KEY = ["prompt", "seed", "guidance"]


def load_samples(out: Path, rows: pd.DataFrame | None = None, side: int | None = None
                 ) -> tuple[np.ndarray, pd.DataFrame]:
    """Generated images (uint8 N x H x W x 3) with their index rows: those of `rows` (e.g. what `generate`
    returned) in that order, or every sample in the folder. Shards are memory-mapped, read once each. `side`
    resizes them to the size at which they are compared with training images (`resize_images`)."""
    out = Path(out)
    if not (out / INDEX).exists():
        raise CheckpointError(f"{out} holds no generated samples ({INDEX} is missing)")
    index = (pd.read_parquet(out / INDEX) if rows is None else rows).reset_index(drop=True)
    if index.empty:
        raise CheckpointError(f"{out} holds none of the requested samples")
    shards = {name: np.load(out / name, mmap_mode="r", allow_pickle=False) for name in index["shard"].unique()}
    images = np.empty((len(index), *next(iter(shards.values())).shape[1:]), dtype=np.uint8)
    for name, group in index.groupby("shard", sort=False):
        images[group.index.to_numpy()] = shards[name][group["offset"].to_numpy()]
    return (images if side is None else resize_images(images, side)), index
