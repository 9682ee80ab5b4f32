"""Image distances used to decide whether a generation copies a training image."""

import numpy as np
from PIL import Image

from diffaudit.config import TILE_GRID


def as_unit(images: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x C -> float32 in [0,1]."""
    return images.astype(np.float32) / 255.0


def rms_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square pixel distance on [0,1] pixels, i.e. L2 / sqrt(dim); broadcasts over leading axes."""
    return np.sqrt(((as_unit(a) - as_unit(b)) ** 2).reshape(*np.broadcast_shapes(a.shape, b.shape)[:-3], -1)
                   .mean(-1))


def tiled_rms_distance(a: np.ndarray, b: np.ndarray, grid: int | None = None) -> np.ndarray:
    """Carlini et al. 2023 §4.2: split images into grid x grid tiles (4x4 by default) and take the largest
    per-tile RMS distance, so a match must hold everywhere and a shared flat background cannot make two
    images close."""
    diff = (as_unit(a) - as_unit(b)) ** 2
    *lead, h, w, c = diff.shape
    grid = grid or tile_grid(h)
    if h % grid or w % grid:
        raise ValueError(f"image size {h}x{w} is not divisible into a {grid}x{grid} tile grid")
    tiles = diff.reshape(*lead, grid, h // grid, grid, w // grid, c).mean(axis=(-4, -2, -1))
    return np.sqrt(tiles.reshape(*lead, -1).max(-1))


def resize_images(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 N x H x W x 3 to side x side: box-filter averaging when shrinking (Carlini et al. compare downsampled
    images), bicubic when growing; unchanged when already that size."""
    if images.shape[1:3] == (side, side):
        return images
    shrink = images.shape[1] >= side
    method = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return np.stack([np.asarray(Image.fromarray(im).resize((side, side), method)) for im in images])


def tile_grid(side: int) -> int:
    """Carlini tile 4x4; images whose side is not a multiple of 4 fall back to one tile (plain RMS)."""
    return TILE_GRID if side % TILE_GRID == 0 else 1


def copy_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The copy test's distance (attacks/copies): Carlini's tiled RMS on [0,1] pixels (max over 4x4 tiles);
    broadcasts over leading axes. Here, below the data layer, so near-duplicate families use the same one."""
    return tiled_rms_distance(a, b)
