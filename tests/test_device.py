"""One device and dtype from the flag to every tensor, checked without a GPU (float64 stands in for a second
dtype), and the tolerances stated in the README: images within 2/255 across precisions, the same verdicts."""

from pathlib import Path

import numpy as np
import pytest
import torch
from device_guard import StrictDevice

from diffaudit.attacks.extraction import ExtractionConfig
from diffaudit.config import Preset, RuntimeConfig
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.model.device import host_randn, resolve_device, resolve_dtype
from diffaudit.model.generate import generate
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.sample import sample
from diffaudit.model.shards import load_samples
from diffaudit.model.train import train
from diffaudit.study.extraction_audit import most_duplicated_prompts, run_extraction
from diffaudit.study.mia_audit import run_mia

F64 = RuntimeConfig(device="cpu", dtype="float64")


def test_the_guard_catches_tensors_off_the_requested_dtype() -> None:
    """Negative control of the instrument: each rule fires on a planted slip, and seeded host draws pass."""
    with StrictDevice(torch.device("cpu"), torch.float64):
        with pytest.raises(AssertionError, match="randn made"):
            torch.randn(2, 3, device="cpu")
        with pytest.raises(AssertionError, match="mixes"):
            torch.ones(3, dtype=torch.float64, device="cpu") + torch.ones(3, dtype=torch.float32, device="cpu")
        with pytest.raises(AssertionError, match="without device"):
            torch.zeros(2, 3, dtype=torch.float64)
        host_randn((2, 3), seed=0)  # deliberate CPU float32 noise, moved across by the caller
        torch.zeros(2, 3, dtype=torch.float64, device="cpu")


def test_train_generate_extract_and_mia_make_every_tensor_on_the_requested_dtype(
        tmp_path: Path, tiny: Preset, tiny_data: ImageDataset, tiny_model_dir: Path) -> None:
    fresh = build_pipeline(tiny.model, tiny.data.resolution, runtime=F64)
    assert fresh.unet.dtype == torch.float64
    guard = StrictDevice(torch.device("cpu"), torch.float64)
    with guard:
        train(fresh, tiny_data, tiny.train.model_copy(update={"steps": 2}), tmp_path / "train")
    pipe = AuditPipeline.from_pretrained(tiny_model_dir, F64)
    prompts = most_duplicated_prompts(tiny_data, 3)
    with guard:
        rows = generate(pipe, prompts["prompt"].tolist(), [0, 1], [1.0, 3.0], tiny.sample, tmp_path / "g")
        run_extraction(pipe, tiny_data, tmp_path / "x", prompts, 3, 3.0, tiny.sample, ExtractionConfig(delta=1.0))
        run_mia(pipe, tiny_data, tmp_path / "m", ["loss", "pia", "secmi", "clid"], 3, tune_per_side=2)
    assert guard.checked > 1000 and len(rows) == 12


def test_the_same_seed_gives_the_same_image_across_precisions(tiny: Preset, tiny_model_dir: Path,
                                                             tiny_data: ImageDataset) -> None:
    """Tolerance for moving devices, checked across precisions here (a GPU run checks CUDA against CPU): noise
    comes from CPU generators, so float32 and float64 samples differ only by rounding, within 2/255."""
    low, high = (AuditPipeline.from_pretrained(tiny_model_dir, RuntimeConfig(device="cpu", dtype=d))
                 for d in ("float32", "float64"))
    prompts = tiny_data.table["text"].unique()[:4].tolist()
    images = [sample(p, p.encode_text(prompts * 3), list(range(12)), 3.0, tiny.sample.steps) for p in (low, high)]
    assert np.abs(images[0].astype(int) - images[1].astype(int)).max() <= 2


def test_runtime_names_are_checked() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="not supported|unknown device"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="float16 needs a GPU"):
        resolve_dtype("float16", torch.device("cpu"))


def test_generation_folders_key_on_dtype(tmp_path: Path, tiny: Preset, tiny_model_dir: Path) -> None:
    """Another dtype is another sample: a folder made in float32 refuses float64 samples instead of mixing them."""
    pipe = AuditPipeline.from_pretrained(tiny_model_dir)
    generate(pipe, ["cat emoji"], [0], [1.0], tiny.sample, tmp_path)
    with pytest.raises(Exception, match="pipeline_config"):
        generate(AuditPipeline.from_pretrained(tiny_model_dir, F64), ["cat emoji"], [1], [1.0], tiny.sample, tmp_path)
    assert len(load_samples(tmp_path)[1]) == 1


def test_half_precision_samples_and_scores_while_training_stays_float32(tmp_path: Path, tiny: Preset,
                                                                        tiny_data: ImageDataset,
                                                                        tiny_model_dir: Path) -> None:
    """bfloat16 (the CPU's half precision) for sampling and audits; training builds and saves float32 weights and
    hands the model back in bfloat16; membership scores are summed in float32 (CLiD's differences cancel in bf16)."""
    half = RuntimeConfig(device="cpu", dtype="bfloat16")
    fresh = build_pipeline(tiny.model, tiny.data.resolution, runtime=half)
    assert fresh.unet.dtype == torch.float32, "a fresh model is not rounded to half precision before training"
    trained = train(fresh, tiny_data, tiny.train.model_copy(update={"steps": 2}), tmp_path / "t")
    assert trained.unet.dtype == torch.float32 and trained.use(half).unet.dtype == torch.bfloat16
    saved = AuditPipeline.from_pretrained(tmp_path / "t" / "model")
    assert saved.unet.dtype == torch.float32
    pipe = AuditPipeline.from_pretrained(tiny_model_dir, half)
    summary = run_mia(pipe, tiny_data, tmp_path / "m", ["loss", "clid"], 3, tune_per_side=0)
    assert all(np.isfinite(a["all"]["auc"]) for a in summary["attacks"].values())
    assert sample(pipe, pipe.encode_text(["cat emoji"]), [0], 3.0, tiny.sample.steps).dtype == np.uint8
