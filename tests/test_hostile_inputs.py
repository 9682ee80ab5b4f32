"""Hostile inputs found by a red-team pass: each gets one line naming the file, field or row, never a hang, a
traceback or a run that silently draws nonsense."""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from diffaudit.config import load_preset
from diffaudit.data.families import join_families, near_copies, split_leaks
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.errors import CheckpointError, ConfigError, DatasetError
from diffaudit.model.pipeline import AuditPipeline


def _folder(root: Path, rows: list[dict], pixels: np.ndarray | None = None) -> Path:
    """An imagefolder whose rows all point at one 16 px picture (unless a row names its own file)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    picture = pixels if pixels is not None else np.full((16, 16, 3), 200, np.uint8)
    Image.fromarray(picture).save(root / "images" / "one.png")
    lines = [json.dumps({"file_name": "images/one.png", "text": f"caption {i}", **row}) for i, row in enumerate(rows)]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_a_fifo_never_hangs_the_loader(tmp_path: Path) -> None:
    data = _folder(tmp_path / "d", [{}])
    os.mkfifo(data / "images" / "pipe.png")
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "images/pipe.png", "text": "a pipe"}) + "\n")
    with pytest.raises(DatasetError, match=r"row 1 .*pipe.png is a FIFO, not a regular file"):
        load_imagefolder(data)
    (data / "metadata.jsonl").unlink()
    os.mkfifo(data / "metadata.jsonl")
    with pytest.raises(DatasetError, match="metadata file .* is a FIFO"):
        load_imagefolder(data)


def test_metadata_errors_name_the_row(tmp_path: Path) -> None:
    data = _folder(tmp_path / "ids", [{"id": "a"}, {}, {"id": "c"}])
    with pytest.raises(DatasetError, match="metadata.jsonl row 2: no id, while other rows have one"):
        load_imagefolder(data)
    data = _folder(tmp_path / "dup", [{"id": "a"}, {"id": "b"}, {"id": "a"}])
    with pytest.raises(DatasetError, match="row 3: id 'a' is already used by row 1"):
        load_imagefolder(data)
    data = _folder(tmp_path / "bytes", [{}, {}])
    raw = (data / "metadata.jsonl").read_bytes().replace(b"caption 1", b"caption \xff")
    (data / "metadata.jsonl").write_bytes(raw)
    with pytest.raises(DatasetError, match="metadata.jsonl line 2: not UTF-8 \\(byte 0xff at column"):
        load_imagefolder(data)
    (data / "metadata.csv").write_bytes(b"file_name,text\nimages/one.png,ok\nimages/one.png,bad \xfe\n")
    (data / "metadata.jsonl").unlink()
    with pytest.raises(DatasetError, match="metadata.csv line 3: not UTF-8"):
        load_imagefolder(data)


def test_rows_of_one_picture_are_one_family_compared_once(tmp_path: Path) -> None:
    rows = [{"id": str(i), "split": "member" if i % 2 else "nonmember"} for i in range(3000)]
    data = load_imagefolder(_folder(tmp_path / "d", rows))
    assert data.table["family"].nunique() == 1
    leaks = split_leaks(data.images, data.table, 0.1)
    assert len(leaks) == 1500 and (leaks["distance"] == 0).all()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=40), st.floats(0.01, 0.5))
def test_families_join_what_is_close_whatever_repeats(pictures: list[int], threshold: float) -> None:
    """Repeated pictures never split a family and never change which pictures are joined (candidates are searched
    among distinct pictures)."""
    rng = np.random.default_rng(sum(pictures))
    palette = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    images = palette[pictures]
    labels = join_families(images, [str(i) for i in range(len(images))], threshold)
    present = sorted(set(pictures))
    once = dict(zip(present, join_families(palette[present], [str(i) for i in present], threshold), strict=True))
    for i, a in enumerate(pictures):
        for j, b in enumerate(pictures):
            assert (labels[i] == labels[j]) == (once[a] == once[b])


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.joinpath("scheduler", "scheduler_config.json").write_text(json.dumps(
        {**json.loads(m.joinpath("scheduler", "scheduler_config.json").read_text()), "beta_schedule": "evil"})),
     "cannot load model folder .*NotImplementedError"),
    (lambda m: m.joinpath("unet", "config.json").write_text(json.dumps(
        {**json.loads(m.joinpath("unet", "config.json").read_text()), "sample_size": "8"})),
     "config.json: sample_size must be an integer"),
    (lambda m: m.joinpath("model_index.json").write_text(json.dumps(
        {**json.loads(m.joinpath("model_index.json").read_text()), "_class_name": "KandinskyPipeline"})),
     "_class_name 'KandinskyPipeline' is not a pipeline diffaudit audits"),
    (lambda m: m.joinpath("model_index.json").write_text(json.dumps(
        {**json.loads(m.joinpath("model_index.json").read_text()),
         "text_encoder": {"name": "clip", "max_tokens": 16}})),
     "text_encoder 'clip' is not supported"),
])
def test_a_broken_model_config_is_one_line(tiny_model_dir: Path, tmp_path: Path, edit: Callable[[Path], None],
                                           match: str) -> None:
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    edit(model)
    with pytest.raises(CheckpointError, match=match) as info:
        AuditPipeline.from_pretrained(model)
    assert "\n" not in str(info.value)


def test_a_stable_diffusion_folder_declares_what_we_load(tiny_sd_dir: Path, tmp_path: Path) -> None:
    assert AuditPipeline.from_pretrained(tiny_sd_dir).declared_sampler is None  # DDPM: the training schedule only
    for part, value, match in [("scheduler", ["diffusers", "EulerDiscreteScheduler"], None),
                               ("scheduler", ["diffusers", "KarrasVeScheduler"], "not one diffaudit can read"),
                               ("vae", ["diffusers", "VQModel"], "vae is declared as")]:
        model = tmp_path / part / value[1]
        shutil.copytree(tiny_sd_dir, model)
        index = json.loads((model / "model_index.json").read_text())
        (model / "model_index.json").write_text(json.dumps({**index, part: value}))
        if match is None:
            assert AuditPipeline.from_pretrained(model).declared_sampler == "euler"
            continue
        with pytest.raises(CheckpointError, match=match):
            AuditPipeline.from_pretrained(model)


def test_an_unknown_block_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="down_block_types"):
        load_preset("tiny", overrides={"model": {"down_block_types": ["EvilBlock2D", "CrossAttnDownBlock2D"]}})


def test_a_request_too_big_for_this_machine_is_refused_before_it_is_built(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(monkeypatch, "generate", str(tiny_model_dir), str(tmp_path / "g"), "--prompt", "cat emoji",
                   "--seeds", "4294967295", "--preset", "tiny") == 2
    err = capsys.readouterr().err
    assert "generating 4,294,967,295 samples" in err and "needs about" in err and "Traceback" not in err
    assert not (tmp_path / "g").exists()


def test_decoys_nearer_in_plain_distance_never_hide_a_near_copy() -> None:
    """40 pictures nearer than the real near-copy in plain RMS, each far in one tile: the near-copy is still found
    (a query whose candidates are all within the threshold in RMS is searched exhaustively)."""
    query = np.zeros((1, 16, 16, 3), np.uint8)
    near = np.full((1, 16, 16, 3), 25, np.uint8)  # tiled RMS 0.1 everywhere
    decoys = np.zeros((40, 16, 16, 3), np.uint8)
    for i in range(40):
        decoys[i, :4, :4] = 70 + i % 10  # one tile far (tiled RMS ~0.3), the picture near in plain RMS
        decoys[i, 15, 15, 0] = i
    members = np.concatenate([decoys, near])
    assert near_copies(query, members, 0.15).all()
    images = np.concatenate([query, members])
    assert (join_families(images, [str(i) for i in range(len(images))], 0.15)[[0, -1]] == 0).all()
