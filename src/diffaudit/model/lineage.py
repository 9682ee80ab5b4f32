"""Which training content went into a model: the first piece of a verified deletion (issue 17).

`train` writes `lineage.parquet` beside the weights: one row per training row (id, caption, content hash of the
decoded pixels, near-duplicate family), so "was this picture in that model?" is answered from the model folder
alone, by content hash, whatever the file was called. A model trained before lineage existed is answered from its
dataset, when that dataset's version matches the one the training manifest names.
"""

import json
from pathlib import Path

import pandas as pd

from diffaudit.data.imagefolder import ImageDataset, load_imagefolder
from diffaudit.errors import ConfigError
from diffaudit.io import write_atomic

LINEAGE = "lineage.parquet"
COLUMNS = ["id", "text", "sha256", "family"]


def write_lineage(model_dir: Path, members: ImageDataset) -> Path:
    table = members.table.reindex(columns=COLUMNS)
    path = Path(model_dir) / LINEAGE
    write_atomic(path, lambda tmp: table.to_parquet(tmp, index=False))
    return path


def read_lineage(model_dir: Path, data: Path | None = None) -> pd.DataFrame:
    """The model's training rows, from its own lineage file or, for an older model, from `data` (checked against the
    dataset version its training manifest records)."""
    model_dir = Path(model_dir)
    if (model_dir / LINEAGE).exists():
        return pd.read_parquet(model_dir / LINEAGE)
    manifest = model_dir / "training_manifest.json"
    if not manifest.exists():
        raise ConfigError(f"{model_dir} has neither {LINEAGE} nor a training manifest: its training data is unknown")
    want = json.loads(manifest.read_text())["dataset_version"]
    if data is None:
        raise ConfigError(f"{model_dir} was trained before lineage was recorded; pass --data with its dataset "
                          f"(version {want})")
    dataset = load_imagefolder(data)
    if dataset.version != want:
        raise ConfigError(f"{data} is dataset version {dataset.version}, but {model_dir} was trained on {want}")
    return dataset.split("member").table.reindex(columns=COLUMNS)


def rows_with(lineage: pd.DataFrame, sha256: str | None = None, row_id: str | None = None,
              caption_contains: str | None = None) -> pd.DataFrame:
    """The training rows matching every given key: a content hash, a row id, a caption substring."""
    keep = pd.Series(True, index=lineage.index)
    if sha256 is not None:
        keep &= lineage["sha256"] == sha256.lower()
    if row_id is not None:
        keep &= lineage["id"] == row_id
    if caption_contains is not None:
        keep &= lineage["text"].str.contains(caption_contains, regex=False)
    return lineage[keep]
