"""Data lineage (issue 17, first part): which content went into a model, answered from the model folder."""

import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.model.lineage import LINEAGE, read_lineage, rows_with


def test_training_records_every_member_row_and_nothing_else(tiny_model_dir: Path, tiny_data: ImageDataset) -> None:
    lineage = read_lineage(tiny_model_dir)
    members, others = tiny_data.split("member").table, tiny_data.table[tiny_data.table["split"] != "member"]
    assert list(lineage["id"]) == list(members["id"])
    assert set(lineage["sha256"]) == set(members["sha256"])
    outsider = next(sha for sha in others["sha256"] if sha not in set(members["sha256"]))
    assert rows_with(lineage, sha256=outsider).empty, "a never-trained picture is not in the lineage"
    caption = members["text"].iloc[0]
    assert set(rows_with(lineage, caption_contains=caption)["text"]) == {caption}


def test_lineage_command_answers_yes_no_and_names_a_missing_record(tiny_model_dir: Path, tiny_data_dir: Path,
                                                                  tiny_data: ImageDataset, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    member = tiny_data.split("member").table.iloc[0]
    held = tiny_data.split("nonmember").table.iloc[0]
    assert run_cli(monkeypatch, "lineage", str(tiny_model_dir), "--sha256", member["sha256"]) == 0
    assert member["id"] in capsys.readouterr().out
    assert run_cli(monkeypatch, "lineage", str(tiny_model_dir), "--id", held["id"]) == 1
    old = tmp_path / "old"  # a model from before lineage: answered from its dataset, checked by version
    shutil.copytree(tiny_model_dir, old)
    (old / LINEAGE).unlink()
    with pytest.raises(ConfigError, match="pass --data"):
        read_lineage(old)
    assert list(read_lineage(old, tiny_data_dir)["sha256"]) == list(read_lineage(tiny_model_dir)["sha256"])
