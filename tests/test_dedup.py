from pathlib import Path

import numpy as np

from diffaudit.data.imagefolder import ImageDataset, load_imagefolder
from diffaudit.mitigations.dedup import DedupConfig, deduplicate, duplicate_groups, normalize


def _member_kinds(data: ImageDataset) -> dict[str, int]:
    members = data.table[data.table["split"] == "member"]
    return members.groupby("dup_kind").size().to_dict()


def test_normalization_ignores_case_punctuation_space() -> None:
    assert normalize("  Red HEART, emoji! ") == normalize("red heart emoji")


def test_exact_caption_dedup_leaves_same_image_different_caption(tmp_path: Path, tiny_data: ImageDataset) -> None:
    report = deduplicate(tiny_data, tmp_path / "d", ("exact", "normalized"), DedupConfig())
    after = load_imagefolder(tmp_path / "d")
    members = after.table[after.table["split"] == "member"]
    exact = members[members["dup_kind"] == "exact"]
    assert (exact.groupby("sha256").size() == 1).all(), "exact copies collapse to one row"
    image_kind = members[members["dup_kind"] == "image"]
    assert image_kind.groupby("sha256").size().max() > 1, "caption dedup cannot see same-image copies"
    caption_kind = members[members["dup_kind"] == "caption"]
    assert caption_kind["text"].is_unique, "same caption on different images: only one image survives"
    assert report["rows_after"] == len(after) < len(tiny_data)
    assert after.version != tiny_data.version
    assert len(after.split("nonmember")) == len(tiny_data.split("nonmember"))


def test_image_dedup_leaves_one_copy_of_every_image(tmp_path: Path, tiny_data: ImageDataset) -> None:
    deduplicate(tiny_data, tmp_path / "i", ("image",), DedupConfig())
    members = load_imagefolder(tmp_path / "i").split("member").table
    assert members["sha256"].is_unique
    assert set(members["sha256"]) == set(tiny_data.split("member").table["sha256"])
    assert (members["dup_count"] == 1).all()


def test_near_duplicate_captions_found_by_minhash_and_embedding(tiny_data: ImageDataset, tiny_pipe) -> None:
    texts = ["a red heart emoji", "red heart emoji", "a blue car", "a red heart emoji!"]
    data = ImageDataset(tiny_data.root, tiny_data.images[:4], tiny_data.table.iloc[:4].assign(text=texts))
    groups = duplicate_groups(data, "minhash", DedupConfig(minhash_threshold=0.5))
    assert groups[0] == groups[3] and groups[2] not in (groups[0], groups[1])
    emb = duplicate_groups(data, "embedding", DedupConfig(embedding_threshold=0.9), encode=tiny_pipe.encode_text)
    assert emb[0] == emb[1] == emb[3] != emb[2]
    assert np.unique(duplicate_groups(data, "exact", DedupConfig())).size == 4
