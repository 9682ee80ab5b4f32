"""Shared tiny fixtures: an 8x8 OpenMoji dataset and a model trained for a few steps, built once.

The suite runs on two pytest-xdist workers (pyproject's addopts), one torch thread each: on two cores two
single-threaded processes finish sooner than one process with two threads. The costly session fixtures (data, model,
membership positive control, the tiny study) are built once per run, by whichever worker asks first, under a file
lock in the run's shared temporary folder; the other worker waits for them and reads the same folder."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; crash tests' subprocesses inherit it

import fcntl
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from diffaudit import faults
from diffaudit.config import PRESETS, Preset
from diffaudit.data.imagefolder import ImageDataset, load_imagefolder
from diffaudit.data.openmoji import build_openmoji
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.train import train
from diffaudit.ownership import mark, marker
from diffaudit.progress import make_progress

STUDY_ATTACKS = ["loss", "pia", "secmi", "clid"]  # the membership attacks the positive control runs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One test that needs the tiny study first (a worker starts building it at once), then every test that does not,
    the long Ray tests first (the other worker runs them meanwhile instead of waiting for the study), then the rest,
    the study's crash test first among them (the longest). The order is the same in every worker, as xdist requires."""
    def needs_study(item: pytest.Item) -> bool:
        return "tiny_study_dir" in getattr(item, "fixturenames", ())

    def rank(item: pytest.Item) -> tuple[int, int]:
        if item is first:
            return (0, 0)
        if needs_study(item):
            return (2, "test_study_killed" not in item.name)
        return (1, "test_scale.py" not in item.nodeid)

    first = next((i for i in items if needs_study(i)), None)
    items.sort(key=rank)


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`name`'s folder, built by `build` once for the whole test run (every xdist worker shares it)."""
    root = factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    out = root / f"shared-{name}"
    with (root / f"shared-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"shared-{name}.done").exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            build(out)
            (root / f"shared-{name}.done").touch()
    return out


@pytest.fixture(scope="session")
def tiny() -> Preset:
    return PRESETS["tiny"]


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory, tiny: Preset) -> Path:
    return built_once(tmp_path_factory, "data", lambda out: build_openmoji(out / "openmoji", tiny.data,
                                                                           make_progress(disable=True))) / "openmoji"


@pytest.fixture(scope="session")
def tiny_data(tiny_data_dir: Path) -> ImageDataset:
    return load_imagefolder(tiny_data_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny: Preset, tiny_data: ImageDataset) -> Path:
    return built_once(tmp_path_factory, "train", lambda out: train(
        build_pipeline(tiny.model, tiny.data.resolution), tiny_data, tiny.train, out)) / "model"


@pytest.fixture()
def tiny_pipe(tiny_model_dir: Path) -> AuditPipeline:
    return AuditPipeline.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The membership positive control at test scale, trained once (seconds): 24 images seen 300 times each.
    Its model (`out/train/model`) is also the memorization detectors' positive control."""
    from diffaudit.study.mia_controls import positive_control

    def control(out: Path) -> dict:
        return positive_control(PRESETS["tiny-overfit"], STUDY_ATTACKS, out, make_progress(disable=True))

    out = built_once(tmp_path_factory, "overfit", control)
    return control(out), out  # read back from the finished control


@pytest.fixture(scope="session")
def tiny_study_dir(tmp_path_factory: pytest.TempPathFactory, tiny: Preset, tiny_model_dir: Path,
                   overfit_run: tuple[dict, Path]) -> Path:
    """A finished tiny study. Its thresholds are loosened to 1.0 so an 8x8 model trained for a few steps
    still yields extracted pairs for the reports and viewer to show (every arm extracts every prompt)."""
    from diffaudit.study.runner import run_study

    def build(out: Path) -> None:
        seed_positive_control(out / "run", overfit_run[1])
        before = faults.calls()
        run_study(loose_study(tiny), out / "run", tiny_model_dir, make_progress(disable=True))
        # How many crash points an uninterrupted study passes: the fault tests draw their kill points below it.
        (out / "crash_points.txt").write_text(str(faults.calls() - before))

    return built_once(tmp_path_factory, "study", build) / "run"


def seed_positive_control(run: Path, control: Path) -> None:
    """Put the finished membership positive control (the `overfit_run` fixture: the tiny preset's control preset and
    attacks) where a tiny study looks for it, so the study reads it back instead of training it again. The run folder
    is marked as a study folder first, as the study itself would on its first write."""
    if marker(run) is None:
        run.mkdir(parents=True, exist_ok=True)
        mark(run, "study")
    shutil.copytree(control, run / "mia-controls" / "positive")


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """`diffaudit ARGS` in-process, as a user would call it; returns the exit status."""
    from diffaudit.cli import main

    monkeypatch.setattr(sys, "argv", ["diffaudit", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def loose_study(tiny: Preset) -> Preset:
    """The tiny preset with thresholds at 1.0 (see `tiny_study_dir`); its TOML form is `LOOSE_TOML`."""
    return tiny.model_copy(update={
        "calibration": tiny.calibration.model_copy(update={"delta": 1.0, "calibrate": False}),
        "extraction": tiny.extraction.model_copy(update={"edge_threshold": 1.0})})


LOOSE_TOML = "[calibration]\ndelta = 1.0\ncalibrate = false\n[extraction]\nedge_threshold = 1.0\n"


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised Stable Diffusion folder (diffusers layout, CLIP, VAE, 16 px) built here, offline."""
    import json

    import torch

    folder = tmp_path_factory.mktemp("sd")
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok_dir = folder / "tok"
    tok_dir.mkdir(parents=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2, projection_dim=32,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                        sample_size=16)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                                cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    scheduler = DDPMScheduler(steps_offset=1, clip_sample=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder / "sd", safe_serialization=True)
    return folder / "sd"
