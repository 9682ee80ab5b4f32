"""Load and validate an imagefolder dataset (Hugging Face convention + diffaudit's fields).

Every problem is reported with the row and file that caused it, so a user can fix their data.
"""

import hashlib
import json
import stat
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from diffaudit.config import CARLINI_DELTA, MIN_RESOLUTION
from diffaudit.data.families import join_families
from diffaudit.errors import DatasetError

SPLITS = ("member", "nonmember", "calibration")
METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
MIN_SOURCE_SIDE = MIN_RESOLUTION  # smaller sources would be invented by upscaling, not audited
MAX_PIXELS = 64_000_000  # refuse decompression bombs well below Pillow's own 179 M-pixel error
MAX_CAPTION_CHARS = 2000  # far beyond any text encoder's context; longer is a broken metadata row
INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # 16/32-bit integer greyscale, scaled to 8 bits


def image_sha256(pixels: np.ndarray) -> str:
    """Content hash of decoded pixels, so identical images match whatever their file encoding."""
    return hashlib.sha256(f"{pixels.shape}".encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()


@dataclass(frozen=True)
class ImageDataset:
    """Decoded images (uint8 NxHxWx3) and one metadata row per image."""

    root: Path
    images: np.ndarray
    table: pd.DataFrame  # columns: id, text, split, sha256, dup_count, file_name, ...

    def __len__(self) -> int:
        return len(self.table)

    def split(self, name: str) -> "ImageDataset":
        return self.where((self.table["split"] == name).to_numpy())

    def where(self, mask: np.ndarray) -> "ImageDataset":
        """The rows where `mask` is true (same root: a subset, not a new dataset on disk)."""
        return ImageDataset(self.root, self.images[mask], self.table[mask].reset_index(drop=True))

    @property
    def texts(self) -> list[str]:
        return self.table["text"].tolist()

    @property
    def version(self) -> str:
        """Content hash of images + captions + splits: names a dataset version in run records."""
        h = hashlib.sha256()
        for row in self.table[["sha256", "text", "split"]].itertuples(index=False):
            h.update("\x1f".join(map(str, row)).encode() + b"\x1e")
        return h.hexdigest()[:16]


def _read_metadata(root: Path) -> tuple[pd.DataFrame, Path]:
    found = [root / n for n in METADATA_FILES if (root / n).exists()]
    if not found:
        raise DatasetError(f"{root} has no metadata file; expected one of {', '.join(METADATA_FILES)}")
    path = found[0]
    regular_file(path, f"metadata file {path}")
    try:
        if path.suffix == ".jsonl":
            # Split on newlines only: U+2028 and friends are legal inside a JSON string.
            lines = [(i, ln) for i, ln in enumerate(_utf8_lines(path), 1) if ln.strip()]
            records = []
            for i, ln in lines:
                try:
                    record = json.loads(ln)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{i}: not valid JSON ({exc.msg})") from exc
                if not isinstance(record, dict):
                    raise DatasetError(f"{path}:{i}: each line must be a JSON object")
                problem = caption_problem(record.get("text"))
                if problem:  # checked here too: some (e.g. lone surrogates) cannot even enter a table
                    row_id = record.get("id", Path(str(record.get("file_name"))).stem)
                    raise DatasetError(f"{path.name} row {i} (id {str(row_id)!r}): {problem}")
                records.append(record)
            table = pd.DataFrame.from_records(records)
        elif path.suffix == ".csv":
            _utf8_lines(path)
            table = pd.read_csv(path, dtype={"text": object}, keep_default_na=False)
        else:
            table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    return table, path


def regular_file(path: Path, label: str) -> None:
    """Refuse anything but a regular file (or a link to one) before opening it: a FIFO would block forever, a device
    never ends."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DatasetError(f"{label} is missing") from None
    except OSError as exc:
        raise DatasetError(f"{label} cannot be read ({exc.strerror})") from exc
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
                if stat.S_ISSOCK(mode) else "a device")
        raise DatasetError(f"{label} is {kind}, not a regular file")


def _utf8_lines(path: Path) -> list[str]:
    """The file's lines, decoded as UTF-8 (a leading byte-order mark allowed); a line that is not UTF-8 is named by
    its number, not by a byte offset."""
    lines = path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")
    out = []
    for i, raw in enumerate(lines, 1):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path.name} line {i}: not UTF-8 (byte {raw[exc.start]:#04x} at column "
                               f"{exc.start + 1}); save the file as UTF-8") from None
    return out


def caption_problem(text: object) -> str | None:
    """Why `text` cannot be a caption or prompt, or None: it must be non-empty printable UTF-8 on one line."""
    if not isinstance(text, str) or not text.strip():
        return f"caption is missing or empty ({text!r})"
    for i, ch in enumerate(text):
        if unicodedata.category(ch) in ("Cc", "Cs"):  # control characters; lone surrogates are not UTF-8
            return f"caption {text[:40]!r} has a control or invalid character {ch!r} at position {i}"
    if len(text) > MAX_CAPTION_CHARS:
        return f"caption is {len(text)} characters long; the limit is {MAX_CAPTION_CHARS}"
    return None


def _to_rgb(im: Image.Image, label: str, path: Path) -> Image.Image:
    """Every mode mapped to 8-bit RGB on purpose: a silent `convert("RGB")` clips 16-bit greyscale to white."""
    if im.mode in ("F", "I;16F") or im.mode.startswith("F;"):
        raise DatasetError(f"{label}: image {path} has floating-point pixels (mode {im.mode}); "
                           "save it as 8- or 16-bit integer PNG")
    if im.mode in INT_MODES:
        pixels = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
        if pixels.min(initial=0) < 0:
            raise DatasetError(f"{label}: image {path} has negative integer pixels (mode {im.mode})")
        grey = np.round(np.clip(pixels / peak, 0, 1) * 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # OpenMoji glyphs are drawn on white
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _decode(path: Path, label: str, resolution: int | None) -> tuple[np.ndarray, int]:
    """The image as uint8 RGB (centre-cropped and resized to `resolution`) and its source's smallest side."""
    regular_file(path, f"{label}: image file {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{im.width}x{im.height} pixels")
                im.verify()  # chunk checksums and the end marker: a cut file can still decode whole pixels
            with Image.open(path) as im:
                im.load()
                if min(im.size) < MIN_SOURCE_SIDE:
                    raise DatasetError(f"{label}: image {path} is {im.width}x{im.height}; the smallest side must be "
                                       f"at least {MIN_SOURCE_SIDE} pixels (smaller images are not upscaled)")
                rgb = _to_rgb(im, label, path)
    except FileNotFoundError as exc:
        raise DatasetError(f"{label}: image file {path} is missing") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(f"{label}: image {path} is too large to decode safely ({exc}); the limit is "
                           f"{MAX_PIXELS:,} pixels: downscale it first") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{label}: image {path} is corrupt or truncated ({exc})") from exc
    side = min(rgb.size)
    if resolution is not None and rgb.size != (resolution, resolution):
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side)).resize((resolution, resolution),
                                                                    Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8), side


def load_imagefolder(root: Path, resolution: int | None = None, family_join: float = CARLINI_DELTA) -> ImageDataset:
    """Read `root/metadata.{jsonl,csv,parquet}` and its images; validate every row.

    Without a `split` column every row is a training member; missing `id`, `sha256`, `dup_count` and
    `family` are derived (dup_count = how many member rows share the image's pixels; family = connected
    components of images within `family_join`). `family_count` is always the member rows of the family.
    """
    root = Path(root)
    if resolution is not None and not MIN_RESOLUTION <= resolution <= 1024:
        raise DatasetError(f"resolution {resolution} is out of range: choose {MIN_RESOLUTION} to 1024 pixels")
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    table, meta_path = _read_metadata(root)
    if table.empty:
        raise DatasetError(f"{meta_path} lists no images: the dataset is empty")
    for col in ("file_name", "text"):
        if col not in table.columns:
            raise DatasetError(f"{meta_path} has no {col!r} column (columns: {list(table.columns)})")
    if "id" not in table.columns:
        table["id"] = [Path(str(f)).stem for f in table["file_name"]]
    missing = np.flatnonzero(table["id"].isna().to_numpy())
    if len(missing):
        raise DatasetError(f"{meta_path.name} row {missing[0] + 1}: no id, while other rows have one; give every row "
                           f"an id or none ({len(missing)} rows lack one)")
    if "split" not in table.columns:
        table["split"] = "member"
    table["id"] = table["id"].astype(str)
    dup = np.flatnonzero(table["id"].duplicated().to_numpy())
    if len(dup):
        first = int(np.flatnonzero((table["id"] == table["id"].iloc[dup[0]]).to_numpy())[0])
        raise DatasetError(f"{meta_path.name} row {dup[0] + 1}: id {table['id'].iloc[dup[0]]!r} is already used by row "
                           f"{first + 1} ({len(dup)} duplicate ids); each row needs a unique id")
    images, sides = [], []
    decoded: dict[Path, tuple[np.ndarray, int]] = {}  # rows that share a file decode it once
    resolved_root = root.resolve()
    for i, row in enumerate(table.itertuples(index=False)):
        label = f"{meta_path.name} row {i + 1} (id {row.id!r})"
        problem = caption_problem(row.text)
        if problem:
            raise DatasetError(f"{label}: {problem}")
        if row.split not in SPLITS:
            raise DatasetError(f"{label}: unknown split {row.split!r}; expected one of {SPLITS}")
        path = (root / str(row.file_name)).resolve()
        if not path.is_relative_to(resolved_root):
            raise DatasetError(f"{label}: file_name {row.file_name!r} points outside the dataset folder {root}")
        if path not in decoded:
            decoded[path] = _decode(path, label, resolution)
        image, side = decoded[path]
        images.append(image)
        sides.append(side)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DatasetError(f"{root}: images have different sizes {sorted(shapes)[:4]}; pass a resolution to resize")
    stack = np.stack(images)
    computed = [image_sha256(im) for im in stack]
    table["sha256"] = computed  # always recompute: a stale hash in metadata must not drive dedup or audits
    table["source_side"] = sides  # below the loaded resolution means the image was upscaled to be compared
    if "dup_count" not in table.columns:
        members = table["sha256"][table["split"] == "member"].value_counts()
        table["dup_count"] = [int(members.get(s, 0)) for s in table["sha256"]]
    else:
        counts = pd.to_numeric(table["dup_count"], errors="coerce")
        bad = np.flatnonzero(counts.isna() | (counts < 0) | (counts % 1 != 0))
        if len(bad):
            raise DatasetError(f"{meta_path.name} row {bad[0] + 1} (id {table['id'].iloc[bad[0]]!r}): dup_count "
                               f"{table['dup_count'].iloc[bad[0]]!r} is not a non-negative integer")
        table["dup_count"] = counts.astype(int)
    if "dup_kind" not in table.columns:  # only diffaudit's own datasets plant duplicates on purpose
        table["dup_kind"] = "unlabelled"
    if "family" not in table.columns:  # a user's data: near-duplicate families by image distance alone
        labels = join_families(stack, table["sha256"].tolist(), family_join)
        table["family"] = table["id"].to_numpy()[labels]
    table["family"] = table["family"].astype(str)
    member_rows = table["family"][table["split"] == "member"].value_counts()
    table["family_count"] = [int(member_rows.get(f, 0)) if s == "member" else 0
                             for f, s in zip(table["family"], table["split"], strict=True)]
    return ImageDataset(root, stack, table.reset_index(drop=True))
