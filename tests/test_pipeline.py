"""The pipeline interface: our folder round-trips, pickles are refused, and a Stable Diffusion folder
(tiny, random, built here: nothing is downloaded) loads and samples through the same code."""

import json
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


def _tiny_stable_diffusion(folder: Path) -> None:
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


def test_stable_diffusion_folder_loads_and_samples(tmp_path: Path) -> None:
    _tiny_stable_diffusion(tmp_path)
    pipe = AuditPipeline.from_pretrained(tmp_path / "sd")
    assert pipe.kind == "stable-diffusion" and pipe.resolution == 16
    cond = pipe.encode_text(["a cat", "a dog"])
    assert cond.shape == (2, 77, 32)
    images = sample(pipe, cond, [0, 1], guidance=3.0, steps=2)
    assert images.shape == (2, 16, 16, 3)
    latents = pipe.to_latents(torch.rand(2, 3, 16, 16))
    assert latents.shape == (2, 4, 8, 8)
    with pytest.raises(CheckpointError, match="read-only"):
        pipe.save_pretrained(tmp_path / "out")
