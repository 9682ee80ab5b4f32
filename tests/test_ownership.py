"""Output folders: what is not ours is never overwritten, swept or deleted; two writers never share one folder."""

import fcntl
import hashlib
import os
from pathlib import Path

import pytest
from conftest import run_cli

from diffaudit.errors import ConfigError
from diffaudit.ownership import LOCK, MARKER, marker, owned, remove_stale_temps


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links not followed) with its content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def theirs(tmp_path: Path) -> Path:
    """A user's folder that happens to hold names our writers use or sweep."""
    folder = tmp_path / "theirs"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "shard-00000.npy").write_bytes(b"not samples")
    (folder / ".tmp.draft").write_text("a draft")
    (folder / "sub" / ".ckpt.keep").mkdir()
    return folder


def test_commands_refuse_a_folder_they_did_not_write(theirs: Path, tiny_model_dir: Path, tiny_data_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(theirs)
    commands = [["generate", str(tiny_model_dir), str(theirs), "--prompt", "cat emoji", "--seeds", "1"],
                ["train", str(tiny_data_dir), str(theirs)],
                ["study", "--out", str(theirs)],
                ["data", "openmoji", str(theirs), "--force"],
                ["extract", str(tiny_model_dir), str(tiny_data_dir), str(theirs)]]
    for args in commands:
        assert run_cli(monkeypatch, *args, "--preset", "tiny") == 2, args
        err = capsys.readouterr().err
        assert ("was not written by diffaudit" in err or "it is left as it is" in err) and "Traceback" not in err, args
    assert _snapshot(theirs) == before and not (theirs / MARKER).exists()
    (theirs / "manifest.json").write_text("{}")  # names a dataset folder holds are no licence to delete it
    (theirs / "metadata.jsonl").write_text("")
    (theirs / "LICENSE.md").write_text("")
    assert run_cli(monkeypatch, "data", "openmoji", str(theirs), "--force", "--preset", "tiny") == 2
    assert "it is left as it is" in capsys.readouterr().err and (theirs / "notes.txt").exists()


def test_no_command_writes_inside_what_it_reads(tmp_path: Path, tiny_model_dir: Path, tiny_data_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(tiny_model_dir)
    assert run_cli(monkeypatch, "generate", str(tiny_model_dir), str(tiny_model_dir / "samples"), "--prompt",
                   "cat emoji", "--seeds", "1", "--preset", "tiny") == 2
    assert "lies inside the model" in capsys.readouterr().err
    assert run_cli(monkeypatch, "train", str(tiny_data_dir), str(tiny_data_dir), "--preset", "tiny") == 2
    assert "lies inside the dataset" in capsys.readouterr().err
    assert _snapshot(tiny_model_dir) == before and not (tiny_model_dir / "samples").exists()
    plain = tmp_path / "file"
    plain.write_text("x")
    assert run_cli(monkeypatch, "data", "openmoji", str(plain), "--force", "--preset", "tiny") == 2
    assert "it is left as it is" in capsys.readouterr().err and plain.read_text() == "x"


def test_a_folder_of_another_kind_is_refused_and_ours_is_adopted(tmp_path: Path) -> None:
    with owned(tmp_path / "run", "study"):
        (tmp_path / "run" / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match="is a diffaudit study folder, not a samples folder"), \
            owned(tmp_path / "run", "samples"):
        pass
    old = tmp_path / "old-run"  # written before the markers: carries our manifest, so it is adopted
    (old / "steps").mkdir(parents=True)
    (old / "data").mkdir()
    (old / "data" / "metadata.jsonl").write_text("")
    (old / "run.json").write_text("{}")
    with owned(old, "study") as fid:
        assert marker(old) == {"kind": "study", "id": fid}


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with owned(out, "samples"):
        with owned(out, "samples"):  # the same process, nested: allowed
            (out / "index.parquet").write_bytes(b"")
        fd = os.open(out / LOCK, os.O_RDWR)  # another writer's open file: flock excludes it
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(out / LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(ConfigError, match="being written by another diffaudit command"), owned(out, "samples"):
            pass
    finally:
        os.close(fd)


def test_a_refused_request_leaves_no_trace(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper"
    with pytest.raises(ValueError), owned(out, "samples"):
        raise ValueError("bad request")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()  # a user's empty folder stays empty
    with pytest.raises(ValueError), owned(tmp_path / "empty", "samples"):
        raise ValueError("bad request")
    assert not list((tmp_path / "empty").iterdir())


def test_planted_markers_and_locks_are_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    for name in (MARKER, LOCK):
        out = tmp_path / name.strip(".")
        out.mkdir()
        (out / name).symlink_to(victim)
        with pytest.raises(ConfigError, match="as a link or folder"), owned(out, "samples"):
            pass
    assert victim.read_text() == "mine"


def test_a_model_writer_enters_a_deletion_folder_only_inside_the_deletion(tmp_path: Path) -> None:
    out = tmp_path / "forget"
    with owned(out, "forget"):
        (out / "request.json").write_text("{}")
        with owned(out, "model"):  # the deletion's own retrain
            pass
    with pytest.raises(ConfigError, match="is a diffaudit forget folder, not a model folder"), owned(out, "model"):
        pass


def test_the_sweep_removes_only_its_own_temps_and_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with owned(tmp_path / "out", "samples") as fid:
        out = tmp_path / "out"
        (out / f".tmp.{fid}.index.parquet.x").write_text("half")
        (out / "deep").mkdir()
        (out / "deep" / f".tmp.{fid}.shard").mkdir()
        (out / ".tmp.0123456789ab.other").write_text("another folder's")
        (outside / f".tmp.{fid}.bait").write_text("not under out")
        (out / "link").symlink_to(outside, target_is_directory=True)
        removed = remove_stale_temps(out)
    assert sorted(p.name for p in removed) == [f".tmp.{fid}.index.parquet.x", f".tmp.{fid}.shard"]
    assert (out / ".tmp.0123456789ab.other").exists() and (outside / f".tmp.{fid}.bait").exists()
