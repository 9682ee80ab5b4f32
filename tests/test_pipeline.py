"""The pipeline interface: our folder round-trips, pickles are refused, and a Stable Diffusion folder
(tiny, random, built here: nothing is downloaded) loads and samples through the same code."""

from pathlib import Path

import numpy as np
import pytest
import torch

from diffaudit.errors import CheckpointError
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import sample


def test_round_trip_keeps_weights(tmp_path: Path, tiny_pipe: AuditPipeline) -> None:
    tiny_pipe.save_pretrained(tmp_path / "copy")
    again = AuditPipeline.from_pretrained(tmp_path / "copy")
    assert again.model_hash() == tiny_pipe.model_hash()
    assert again.resolution == tiny_pipe.resolution
    assert (tmp_path / "copy" / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_pickle_checkpoint_is_refused(tmp_path: Path, tiny_pipe: AuditPipeline) -> None:
    tiny_pipe.save_pretrained(tmp_path / "m")
    torch.save(tiny_pipe.unet.state_dict(), tmp_path / "m" / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model\.bin is a pickle"):
        AuditPipeline.from_pretrained(tmp_path / "m")


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="model_index.json is missing"):
        AuditPipeline.from_pretrained(tmp_path)


def test_guidance_changes_samples_and_seeds_ignore_batching(tiny_pipe: AuditPipeline) -> None:
    cond = tiny_pipe.encode_text(["grinning face emoji"] * 4)
    together = sample(tiny_pipe, cond, [0, 1, 2, 3], guidance=1.0, steps=3, batch_size=4)
    apart = sample(tiny_pipe, cond, [0, 1, 2, 3], guidance=1.0, steps=3, batch_size=1)
    np.testing.assert_array_equal(together, apart)
    guided = sample(tiny_pipe, cond, [0, 1, 2, 3], guidance=5.0, steps=3, sampler="dpmsolver++")
    assert guided.shape == (4, 8, 8, 3) and guided.dtype == np.uint8
    assert not np.array_equal(guided, together)


def test_unet_evaluations_are_counted(tiny_pipe: AuditPipeline) -> None:
    cond = tiny_pipe.encode_text(["a"] * 3)
    before = tiny_pipe.denoiser.evaluations
    sample(tiny_pipe, cond, [0, 1, 2], guidance=1.0, steps=4)
    assert tiny_pipe.denoiser.evaluations - before == 3 * 4
    sample(tiny_pipe, cond, [0, 1, 2], guidance=3.0, steps=4)
    assert tiny_pipe.denoiser.evaluations - before == 3 * 4 + 2 * 3 * 4


def test_stable_diffusion_folder_loads_and_samples(tmp_path: Path, tiny_sd_dir: Path) -> None:
    pipe = AuditPipeline.from_pretrained(tiny_sd_dir)
    assert pipe.kind == "stable-diffusion" and pipe.resolution == 16
    cond = pipe.encode_text(["a cat", "a dog"])
    assert cond.shape == (2, 77, 32)
    images = sample(pipe, cond, [0, 1], guidance=3.0, steps=2)
    assert images.shape == (2, 16, 16, 3)
    latents = pipe.to_latents(torch.rand(2, 3, 16, 16))
    assert latents.shape == (2, 4, 8, 8)
    with pytest.raises(CheckpointError, match="read-only"):
        pipe.save_pretrained(tmp_path / "out")


def test_delayed_guidance_leaves_the_first_steps_unguided(tiny_pipe: AuditPipeline) -> None:
    """Jain et al.'s interval: the first share of steps at `early_guidance` (0: unconditional), then the scale."""
    cond = tiny_pipe.encode_text(["grinning face emoji"] * 2)
    plain = sample(tiny_pipe, cond, [0, 1], guidance=5.0, steps=4)
    same = sample(tiny_pipe, cond, [0, 1], guidance=5.0, steps=4, guidance_start=0.5, early_guidance=5.0)
    np.testing.assert_array_equal(plain, same)  # the early scale equal to the late one: plain guidance
    before = tiny_pipe.denoiser.evaluations
    delayed = sample(tiny_pipe, cond, [0, 1], guidance=5.0, steps=4, guidance_start=0.5)
    assert tiny_pipe.denoiser.evaluations - before == 2 * (2 * 1 + 2 * 2), "unconditional steps cost one pass each"
    assert not np.array_equal(delayed, plain)


def test_every_registered_sampler_draws_a_seeded_picture(tiny_pipe: AuditPipeline) -> None:
    from diffaudit.samplers import SAMPLERS

    cond = tiny_pipe.encode_text(["cat emoji"] * 2)
    for name in SAMPLERS:
        first, again = (sample(tiny_pipe, cond, [0, 1], guidance=3.0, steps=3, sampler=name) for _ in range(2))
        assert first.shape == again.shape and torch.equal(torch.as_tensor(first), torch.as_tensor(again)), name
        assert torch.isfinite(torch.as_tensor(first).float()).all(), name


def test_the_sampler_registry_is_the_one_list(tmp_path: Path) -> None:
    from diffaudit.config import load_preset
    from diffaudit.errors import ConfigError
    from diffaudit.samplers import SAMPLERS

    for name in SAMPLERS:
        assert load_preset("tiny", overrides={"sample": {"sampler": name}}).sample.sampler == name
    with pytest.raises(ConfigError, match="choose from ddim"):
        load_preset("tiny", overrides={"study": {"samplers": [{"name": "heun", "steps": 3}]}})


def test_a_model_is_checked_before_it_draws(tiny_model_dir: Path, tmp_path: Path) -> None:
    """NaN weights or a stated resolution the UNet does not have are refused, naming the file (not drawn black)."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    nan, wrong = tmp_path / "nan", tmp_path / "wrong"
    for folder in (nan, wrong):
        shutil.copytree(tiny_model_dir, folder)
    weights = next((nan / "unet").glob("*.safetensors"))
    tensors = load_file(weights)
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match=f"weight {first} holds NaN"):
        AuditPipeline.from_pretrained(nan)
    index = json.loads((wrong / "model_index.json").read_text())
    (wrong / "model_index.json").write_text(json.dumps({**index, "resolution": 64}))
    with pytest.raises(CheckpointError, match="resolution 64 does not match the UNet's sample_size 8"):
        AuditPipeline.from_pretrained(wrong)
