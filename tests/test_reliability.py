"""Inputs checked at the door and resumes keyed by content: each defect found by trying to break the tool."""

import json
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffaudit.cli import main
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset, load_imagefolder
from diffaudit.errors import CheckpointError, DatasetError
from diffaudit.io import dumps, write_json
from diffaudit.model.generate import generate
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.shards import INDEX, load_samples
from diffaudit.model.train import train
from diffaudit.ownership import TEMP_PREFIXES, marker, remove_stale_temps

PROMPTS = ["grinning face emoji", "red heart emoji", "cat emoji"]


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["diffaudit", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("args, toml, named", [
    (["train", "{data}", "{tmp}/o", "--steps", "-3"], None, "train.steps"),
    (["train", "{data}", "{tmp}/o"], "[train]\nsteps = -5\n", "train.steps"),
    (["train", "{data}", "{tmp}/o"], "[train]\nbatch_size = 0\n", "train.batch_size"),
    (["generate", "{model}", "{tmp}/g", "--prompt", "cat emoji", "--steps", "-1"], None, "sample.steps"),
    (["generate", "{model}", "{tmp}/g", "--prompt", "cat emoji", "--guidance", "nan"], None, "guidance"),
    (["generate", "{model}", "{tmp}/g", "--prompts-file", "{tmp}/nope.txt"], None, "nope.txt does not exist"),
    (["extract", "{model}", "{data}", "{tmp}/e", "--top", "0"], None, "extraction.prompts_top"),
    (["extract", "{model}", "{data}", "{tmp}/e", "--samples", "1"], None, "extraction.samples_per_prompt"),
    (["extract", "{model}", "{data}", "{tmp}/e", "--detector", "oracle", "--tiered"], None, "triage.detector"),
    (["data", "check", "{data}", "--resolution", "0"], None, "data.resolution"),
    (["mia", "{model}", "{data}", "{tmp}/m", "--per-side", "0"], None, "membership.per_side"),
    (["mia", "{model}", "{data}", "{tmp}/m", "--attack", "lira-online"], None, "LiRA needs shadow models"),
    (["study", "--out", "{tmp}/s"], "[membership]\nattacks = ['loss', 'telepathy']\n", "telepathy"),
    (["train", "{data}", "{tmp}/o"], "[train]\nsteps = \"3\"\n", "train.steps"),
    (["train", "{data}", "{tmp}/o"], "[train]\nseed = 99999999999999999999\n", "train.seed"),
    (["train", "{data}", "{tmp}/o"], "[model]\nnorm_num_groups = 5\n", "norm_num_groups=5 must divide"),
    (["train", "{data}", "{tmp}/o"], "[model]\nblock_out_channels = [16]\n", "one entry per level"),
    (["generate", "{model}", "{tmp}/g", "--prompt", "cat emoji"], "[sample]\nsteps = true\n", "sample.steps"),
    (["generate", "{model}", "{tmp}/g", "--prompt", "cat\u0001emoji"], None, "control"),
    (["generate", "{model}", "{tmp}/g", "--prompts-file", "{tmp}"], None, "is a folder"),
    (["generate", "{model}", "{tmp}/g", "--prompt", "cat", "--seeds", "99999999999999999999"], None, "seeds"),
    (["train", "{data}", "{tmp}/afile"], None, "is not a folder"),
    (["data", "check", "{tmp}/[/x]"], None, "[/x] does not exist"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str], tiny_data_dir: Path,
                                                  tiny_model_dir: Path, args: list[str], toml: str | None,
                                                  named: str) -> None:
    (tmp_path / "afile").write_text("not a folder")
    fill = {"data": str(tiny_data_dir), "model": str(tiny_model_dir), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in args] + ["--preset", "tiny"] * (args[0] != "data")
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        argv += ["--config", str(tmp_path / "c.toml")]
    code, err = _cli(monkeypatch, capsys, *argv)
    assert code == 2 and named in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3, "one error, not a dump"
    assert not any(p.name in ("o", "g", "e", "m", "s") for p in tmp_path.iterdir()), "nothing written"
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_config_help_keeps_its_section_names(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["diffaudit", "train", "--help"])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main()
    out = capsys.readouterr().out
    assert "[data]" in out and "[study]" in out


def test_generation_resume_is_keyed_by_prompt_text(tmp_path: Path, tiny: Preset, tiny_pipe: AuditPipeline) -> None:
    out = tmp_path / "g"
    first = generate(tiny_pipe, PROMPTS, [0, 1], [1.0], tiny.sample, out, shard_size=4)
    images, _ = load_samples(out, first)
    # A reversed list is the same request: nothing new is sampled, and rows come back in the new order.
    again = generate(tiny_pipe, PROMPTS[::-1], [0, 1], [1.0], tiny.sample, out, shard_size=4)
    assert len(pd.read_parquet(out / INDEX)) == 6
    assert again["prompt"].tolist()[:2] == [PROMPTS[2]] * 2
    reversed_images, _ = load_samples(out, again)
    key = ["prompt", "seed"]
    np.testing.assert_array_equal(images[first.sort_values(key).index], reversed_images[again.sort_values(key).index])
    # Added prompts, seeds and scales extend the folder; every key exactly once.
    more = generate(tiny_pipe, [*PROMPTS, "dog emoji"], [0, 1, 2], [1.0, 3.0], tiny.sample, out, shard_size=4)
    index = pd.read_parquet(out / INDEX)
    assert len(more) == len(index) == 4 * 3 * 2 and not index.duplicated(["prompt", "seed", "guidance"]).any()
    alone = generate(tiny_pipe, ["dog emoji"], [2], [3.0], tiny.sample, tmp_path / "alone")
    np.testing.assert_array_equal(load_samples(out, more.query("prompt == 'dog emoji' and seed == 2 "
                                                               "and guidance == 3.0"))[0],
                                  load_samples(tmp_path / "alone", alone)[0])


def test_generation_refuses_other_settings_and_names_them(tmp_path: Path, tiny: Preset,
                                                          tiny_pipe: AuditPipeline) -> None:
    out = tmp_path / "g"
    generate(tiny_pipe, PROMPTS[:1], [0], [1.0], tiny.sample, out)
    with pytest.raises(CheckpointError, match=r"steps=\['3'\]; this run asks steps=5"):
        generate(tiny_pipe, PROMPTS[:1], [0], [1.0], tiny.sample.model_copy(update={"steps": 5}), out)
    with pytest.raises(CheckpointError, match="sampler="):
        generate(tiny_pipe, PROMPTS[:1], [0], [1.0], tiny.sample.model_copy(update={"sampler": "dpmsolver++"}), out)
    other = build_pipeline(tiny.model, tiny.data.resolution, seed=5)
    with pytest.raises(CheckpointError, match="model_hash="):
        generate(other, PROMPTS[:1], [0], [1.0], tiny.sample, out)


def test_a_shard_is_at_most_64_samples(tmp_path: Path, tiny: Preset, tiny_pipe: AuditPipeline) -> None:
    rows = generate(tiny_pipe, PROMPTS, list(range(30)), [1.0], tiny.sample, tmp_path / "g")
    assert rows.groupby("shard").size().max() == 64 and rows["shard"].nunique() == 2


@pytest.fixture()
def one_image(tmp_path: Path) -> Path:
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "a glyph"}) + "\n")
    return folder


def test_sixteen_bit_greyscale_is_scaled_not_clipped(one_image: Path) -> None:
    ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257)  # 0 .. 65535 in steps of 257
    Image.fromarray(ramp).save(one_image / "a.png")
    got = load_imagefolder(one_image).images[0]
    np.testing.assert_array_equal(got[..., 0], np.arange(256, dtype=np.uint8).reshape(16, 16))
    assert (got[..., 0] == got[..., 2]).all()


def test_float_images_and_tiny_images_are_refused(one_image: Path) -> None:
    Image.fromarray(np.ones((16, 16), np.float32)).save(one_image / "a.tiff")
    (one_image / "metadata.jsonl").write_text(json.dumps({"file_name": "a.tiff", "text": "a glyph"}) + "\n")
    with pytest.raises(DatasetError, match="floating-point pixels"):
        load_imagefolder(one_image)
    Image.new("RGB", (1, 1)).save(one_image / "a.tiff")
    with pytest.raises(DatasetError, match=r"id 'a'.*is 1x1.*not upscaled"):
        load_imagefolder(one_image, resolution=16)


def test_transparent_pixels_become_white(one_image: Path) -> None:
    Image.new("RGBA", (16, 16), (255, 0, 0, 0)).save(one_image / "a.png")
    assert (load_imagefolder(one_image).images[0] == 255).all()


def test_decompression_bomb_is_refused_by_name(one_image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("L", (9000, 8000)).save(one_image / "a.png")  # 72 M pixels, a few kB on disk
    with pytest.raises(DatasetError, match=r"id 'a'.*too large to decode safely"):
        load_imagefolder(one_image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own bomb warning is an error too
    Image.new("L", (64, 64)).save(one_image / "a.png")
    with pytest.raises(DatasetError, match="too large to decode safely"):
        load_imagefolder(one_image)


@pytest.mark.parametrize("caption, named", [("tab\there", "control"), ("\ud800 lone", "invalid"),
                                            ("x" * 2001, "limit")])
def test_bad_captions_are_named(one_image: Path, caption: str, named: str) -> None:
    Image.new("RGB", (16, 16)).save(one_image / "a.png")
    (one_image / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": caption}) + "\n")
    with pytest.raises(DatasetError, match=f"row 1 .id 'a'.*{named}"):
        load_imagefolder(one_image)


def test_malformed_model_folder_is_a_one_line_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="model_index.json is not valid JSON"):
        AuditPipeline.from_pretrained(broken)
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "DiffauditPipeline"}))
    with pytest.raises(CheckpointError, match="missing field 'text_encoder'"):
        AuditPipeline.from_pretrained(broken)


class _Hostile:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


@pytest.mark.parametrize("content", [b"\x00garbage", pickle.dumps({"optimizer": _Hostile()})])
def test_corrupt_or_hostile_optimizer_state_is_refused(tmp_path: Path, tiny: Preset, tiny_data: ImageDataset,
                                                       capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    train(build_pipeline(tiny.model, tiny.data.resolution), tiny_data, tiny.train, tmp_path, stop_after=2)
    state = next((tmp_path / "checkpoints").glob("step-*")) / "optimizer.state"
    state.write_bytes(content)
    with pytest.raises(CheckpointError, match="is unreadable") as info:
        train(build_pipeline(tiny.model, tiny.data.resolution), tiny_data, tiny.train, tmp_path)
    assert "weights_only" not in str(info.value) and "pwned" not in capsys.readouterr().out


def test_stale_temps_are_cleaned_and_durations_summed(tmp_path: Path, tiny: Preset, tiny_data: ImageDataset) -> None:
    train(build_pipeline(tiny.model, tiny.data.resolution), tiny_data, tiny.train, tmp_path, stop_after=3)
    ckpt = next((tmp_path / "checkpoints").glob("step-*"))
    state = json.loads((ckpt / "state.json").read_text())
    state["seconds"] = 1000.0  # as if the first part had taken 1,000 s
    (ckpt / "state.json").write_text(json.dumps(state))
    fid = marker(tmp_path)["id"]
    (tmp_path / "checkpoints" / f".ckpt.{fid}.abandoned").mkdir()
    (tmp_path / f".tmp.{fid}.train_log.jsonl.x").write_text("half")
    (tmp_path / ".tmp.notes").write_text("a user's file that only looks like a temp")
    train(build_pipeline(tiny.model, tiny.data.resolution), tiny_data, tiny.train, tmp_path)
    assert [p.name for p in tmp_path.rglob(".*") if p.name.startswith(TEMP_PREFIXES)] == [".tmp.notes"]
    manifest = json.loads((tmp_path / "model" / "training_manifest.json").read_text())
    assert 1000.0 < manifest["seconds"] < 1100.0
    assert remove_stale_temps(tmp_path / "missing") == []


def test_json_is_strict(tmp_path: Path) -> None:
    write_json(tmp_path / "r.json", {"auc": float("nan"), "tpr": np.float32(0.5), "n": np.int64(3),
                                     "ci": (float("-inf"), 1.0), "path": tmp_path})

    def refuse(name: str) -> None:
        raise AssertionError(f"bare {name} in JSON")

    data = json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)
    assert data == {"auc": None, "tpr": 0.5, "n": 3, "ci": [None, 1.0], "path": str(tmp_path)}
    assert dumps([math.nan]) == "[null]"


def test_an_edited_noise_schedule_is_not_mixed_in(tmp_path: Path, tiny: Preset, tiny_model_dir: Path) -> None:
    import shutil

    edited = tmp_path / "m"
    shutil.copytree(tiny_model_dir, edited)
    config = json.loads((edited / "scheduler" / "scheduler_config.json").read_text())
    (edited / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "beta_schedule": "linear"}))
    generate(AuditPipeline.from_pretrained(tiny_model_dir), PROMPTS[:1], [0], [1.0], tiny.sample, tmp_path / "g")
    with pytest.raises(CheckpointError, match="pipeline_config="):
        generate(AuditPipeline.from_pretrained(edited), PROMPTS[:1], [0, 1], [1.0], tiny.sample, tmp_path / "g")


def test_model_index_values_are_checked(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(tiny_model_dir, broken)
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps({**index, "resolution": -5}))
    with pytest.raises(CheckpointError, match="resolution must be an integer from 8"):
        AuditPipeline.from_pretrained(broken)


def test_corrupt_checkpoint_state_is_named(tmp_path: Path, tiny: Preset, tiny_data: ImageDataset) -> None:
    train(build_pipeline(tiny.model, tiny.data.resolution), tiny_data, tiny.train, tmp_path, stop_after=2)
    state = next((tmp_path / "checkpoints").glob("step-*")) / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "seconds": "abc"}))
    with pytest.raises(CheckpointError, match="is unreadable"):
        train(build_pipeline(tiny.model, tiny.data.resolution), tiny_data, tiny.train, tmp_path)


def test_user_metadata_edge_cases(one_image: Path) -> None:
    Image.new("RGB", (16, 16)).save(one_image / "a.png")
    row = {"file_name": "a.png", "text": "line\u2028separator is legal JSON"}
    (one_image / "metadata.jsonl").write_text("\ufeff" + json.dumps(row, ensure_ascii=False) + "\n")
    data = load_imagefolder(one_image)
    assert data.texts == [row["text"]] and data.table["dup_kind"].tolist() == ["unlabelled"]
    (one_image / "metadata.jsonl").write_text(json.dumps({**row, "dup_count": "lots"}) + "\n")
    with pytest.raises(DatasetError, match="dup_count 'lots' is not a non-negative integer"):
        load_imagefolder(one_image)


def test_prompts_file_with_byte_order_mark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], tiny_model_dir: Path) -> None:
    (tmp_path / "p.txt").write_text("\ufeffcat emoji\n", encoding="utf-8")
    code, _ = _cli(monkeypatch, capsys, "generate", str(tiny_model_dir), str(tmp_path / "g"), "--prompts-file",
                   str(tmp_path / "p.txt"), "--seeds", "1", "--preset", "tiny")
    assert code == 0 and pd.read_parquet(tmp_path / "g" / INDEX)["prompt"].tolist() == ["cat emoji"]
