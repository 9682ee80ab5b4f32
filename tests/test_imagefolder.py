import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.errors import DatasetError


@pytest.fixture()
def folder(tmp_path: Path, tiny_data_dir: Path) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(tiny_data_dir, out)
    return out


def _rows(folder: Path) -> list[dict]:
    return [json.loads(ln) for ln in (folder / "metadata.jsonl").read_text().splitlines()]


def _write(folder: Path, rows: list[dict]) -> None:
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_loads_the_embedded_dataset(folder: Path) -> None:
    data = load_imagefolder(folder)
    assert len(data) == len(_rows(folder))
    assert data.split("nonmember").table["split"].eq("nonmember").all()


def test_corrupt_image_is_named(folder: Path) -> None:
    victim = _rows(folder)[3]
    (folder / victim["file_name"]).write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=f"id '{victim['id']}'.*corrupt"):
        load_imagefolder(folder)


def test_truncated_image_is_named(folder: Path) -> None:
    victim = _rows(folder)[5]
    path = folder / victim["file_name"]
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetError, match=f"id '{victim['id']}'.*corrupt or truncated"):
        load_imagefolder(folder)


def test_missing_image_file(folder: Path) -> None:
    victim = _rows(folder)[0]
    (folder / victim["file_name"]).unlink()
    with pytest.raises(DatasetError, match="missing"):
        load_imagefolder(folder)


@pytest.mark.parametrize("field, value, match", [
    ("text", "", "caption is missing or empty"),
    ("text", None, "caption is missing or empty"),
    ("split", "train", "unknown split 'train'"),
    ("file_name", "../../etc/passwd", "outside the dataset folder"),
])
def test_bad_rows_are_named(folder: Path, field: str, value: object, match: str) -> None:
    rows = _rows(folder)
    rows[2][field] = value
    _write(folder, rows)
    with pytest.raises(DatasetError, match=f"row 3 .*{match}"):
        load_imagefolder(folder)


def test_empty_and_missing_metadata(folder: Path) -> None:
    _write(folder, [])
    with pytest.raises(DatasetError, match="empty"):
        load_imagefolder(folder)
    (folder / "metadata.jsonl").unlink()
    with pytest.raises(DatasetError, match="no metadata file"):
        load_imagefolder(folder)


def test_csv_and_parquet_without_our_fields(folder: Path) -> None:
    rows = [{"file_name": r["file_name"], "text": r["text"]} for r in _rows(folder)]
    (folder / "metadata.jsonl").unlink()
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    data = load_imagefolder(folder, resolution=16)
    assert data.images.shape[1:] == (16, 16, 3)
    assert (data.table["split"] == "member").all()
    assert data.table["dup_count"].max() > 1, "duplicates are found from pixels when metadata lacks dup_count"
    (folder / "metadata.csv").unlink()
    pd.DataFrame(rows).to_parquet(folder / "metadata.parquet")
    assert len(load_imagefolder(folder)) == len(rows)
