import json
from collections import Counter
from pathlib import Path

import pytest

from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.data.openmoji import build_openmoji, caption_name, named_glyphs
from diffaudit.errors import DatasetError
from diffaudit.progress import make_progress


def test_splits_are_disjoint_and_sized(tiny: Preset, tiny_data: ImageDataset) -> None:
    table = tiny_data.table
    unique = table.drop_duplicates("sha256")
    assert Counter(unique["split"]) == {"member": tiny.data.n_member, "nonmember": tiny.data.n_nonmember,
                                        "calibration": tiny.data.n_calibration}
    assert unique["sha256"].is_unique, "an image must not appear in two splits"
    assert table["id"].is_unique


def test_planted_duplication_matches_plan(tiny: Preset, tiny_data: ImageDataset) -> None:
    members = tiny_data.table[tiny_data.table["split"] == "member"]
    exact = members[members["dup_kind"] == "exact"]
    copies = sorted(exact.groupby("sha256").size())
    assert copies == sorted(c for c in tiny.data.exact_counts for _ in range(tiny.data.exact_per_count))
    assert (exact.groupby("sha256")["text"].nunique() == 1).all()
    image = members[members["dup_kind"] == "image"]
    assert (image.groupby("sha256")["text"].nunique() > 1).all(), "same image must carry different captions"
    caption = members[members["dup_kind"] == "caption"]
    assert (caption.groupby("dup_group")["sha256"].nunique() == caption.groupby("dup_group").size()).all()
    assert (caption.groupby("dup_group")["text"].nunique() == 1).all(), "same caption, different images"
    assert (members.groupby("sha256")["dup_count"].first() == members.groupby("sha256").size()).all()
    assert (tiny_data.table[tiny_data.table["split"] != "member"]["dup_count"] == 0).all()


def test_manifest_license_and_captions(tiny_data_dir: Path, tiny_data: ImageDataset) -> None:
    manifest = json.loads((tiny_data_dir / "manifest.json").read_text())
    assert manifest["rows"] == len(tiny_data)
    assert {g["kind"] for g in manifest["groups"].values()} == {"exact", "image", "caption"}
    assert "CC BY-SA 4.0" in (tiny_data_dir / "LICENSE.md").read_text()
    assert all(t.strip() and "_" not in t for t in tiny_data.texts)
    assert tiny_data.images.shape[1:] == (8, 8, 3)
    assert tiny_data.images.std() > 10, "rendered glyphs must not be blank"


def test_caption_names_read_naturally() -> None:
    assert caption_name(":man_health_worker_medium_skin_tone:") == "man health worker, medium skin tone"
    assert caption_name(":grinning_face:") == "grinning face"
    assert len(named_glyphs()) > 3500


def test_build_is_deterministic(tmp_path: Path, tiny: Preset, tiny_data: ImageDataset) -> None:
    again = build_openmoji(tmp_path / "again", tiny.data, make_progress(disable=True))
    rows = [json.loads(ln) for ln in (again / "metadata.jsonl").read_text().splitlines()]
    assert [r["sha256"] for r in rows] == tiny_data.table["sha256"].tolist()
    assert not list(tmp_path.glob(".again.*")), "no temporary folder may be left behind"


def test_refuses_to_overwrite(tiny_data_dir: Path, tiny: Preset) -> None:
    before = (tiny_data_dir / "metadata.jsonl").read_bytes()
    with pytest.raises(DatasetError, match="already exists"):
        build_openmoji(tiny_data_dir, tiny.data, make_progress(disable=True))
    assert (tiny_data_dir / "metadata.jsonl").read_bytes() == before
