"""One interface over the models diffaudit audits: its own pixel-space model or a Stable Diffusion folder.

Both are diffusers-layout folders (`model_index.json`, one sub-folder per component, safetensors
weights). Audits only use the verbs here, so they work unchanged on either.
"""

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from diffaudit import samplers
from diffaudit.config import MIN_RESOLUTION, ModelConfig, RuntimeConfig
from diffaudit.errors import CheckpointError
from diffaudit.io import atomic_dir
from diffaudit.model.device import at_least_float32, resolve, training_dtype
from diffaudit.model.ensemble import ShardEnsemble
from diffaudit.model.text import MiniLMEncoder

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
OUR_CLASS = "DiffauditPipeline"
SD_CLASS = "StableDiffusionPipeline"
# What a Stable Diffusion folder must declare for each component we load (model_index.json: [library, class]).
SD_COMPONENTS = {"unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
                 "text_encoder": ("transformers", "CLIPTextModel"), "tokenizer": ("transformers", "CLIPTokenizer")}
# Rows the VAE decodes at once: a 512 px Stable Diffusion decode holds ~1 GiB of activations per row in fp16.
DECODE_ROWS = 8


@dataclass
class EvaluationCount:
    evaluations: int = 0


# The counts open around the current call (`counted`): a context variable, not a class-wide total, so a block counts
# what it spent, whichever models it used, and nothing outside a block keeps a running number.
_open_counts: ContextVar[tuple[EvaluationCount, ...]] = ContextVar("diffaudit_open_counts", default=())


@contextmanager
def counted() -> Iterator[EvaluationCount]:
    """UNet evaluations spent inside the block by every model (and every pool worker that reports back)."""
    spent = EvaluationCount()
    token = _open_counts.set((*_open_counts.get(), spent))
    try:
        yield spent
    finally:
        _open_counts.reset(token)


def add_evaluations(n: int) -> None:
    """Count `n` evaluations in every open block: a denoiser call here, or a pool worker's report."""
    for count in _open_counts.get():
        count.evaluations += n


class CountingDenoiser:
    """The one place UNet evaluations are counted (per sample, per call), so cost reports cannot drift."""

    def __init__(self, unet: UNet2DConditionModel | ShardEnsemble):
        self.unet = unet
        self.evaluations = 0
        self.per_row = unet.members if isinstance(unet, ShardEnsemble) else 1  # a shard ensemble runs K UNets

    def __call__(self, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor) -> torch.Tensor:
        self.evaluations += x.shape[0] * self.per_row
        add_evaluations(x.shape[0] * self.per_row)
        return self.unet(x, t, encoder_hidden_states=cond).sample

    @contextmanager
    def counting(self) -> Iterator[EvaluationCount]:
        """Evaluations spent inside the block, read from this counter rather than by callers' subtraction."""
        spent = EvaluationCount()
        before = self.evaluations
        try:
            yield spent
        finally:
            spent.evaluations = self.evaluations - before


class TextEncoder(Protocol):
    """Captions to token-embedding sequences on the pipeline's device, in its dtype."""

    def __call__(self, prompts: list[str]) -> torch.Tensor: ...

    def to(self, device: torch.device, dtype: torch.dtype) -> None: ...


class CLIPEncoder:
    """Stable Diffusion's CLIP text encoder, with the same call signature as `MiniLMEncoder`."""

    def __init__(self, folder: Path):
        from transformers import CLIPTextModel, CLIPTokenizer

        self.tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        self.model = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True,
                                                   use_safetensors=True).eval().requires_grad_(False)
        self.dtype = torch.float32

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        """As `MiniLMEncoder.to`: CLIP stays float32; its output is cast to `dtype`."""
        self.model.to(device)
        self.dtype = dtype

    @torch.inference_mode()
    def __call__(self, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(prompts), batch_size):
            tok = self.tokenizer(prompts[i: i + batch_size], padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt")
            out.append(self.model(tok.input_ids.to(self.model.device)).last_hidden_state)
        return torch.cat(out).to(self.dtype)


@dataclass
class AuditPipeline:
    """A conditional denoiser plus what audits need around it: text encoding and pixel <-> latent maps."""

    unet: UNet2DConditionModel | ShardEnsemble
    scheduler: DDPMScheduler  # the training noise schedule; samplers are derived from its config
    encode_text: TextEncoder
    resolution: int  # pixel resolution of images the model generates
    vae: AutoencoderKL | None = None
    kind: str = "diffaudit"
    text_config: dict = field(default_factory=dict)
    declared_sampler: str | None = None  # the registered sampler of the scheduler class the folder declares
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    denoiser: CountingDenoiser = field(init=False)

    def __post_init__(self) -> None:
        self.denoiser = CountingDenoiser(self.unet)

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "AuditPipeline":
        """Move every network (UNet, VAE, text encoder) to one device and dtype; later tensors follow them."""
        self.device, self.dtype = torch.device(device), dtype
        if self.device.type == "cuda" and dtype == torch.float32:
            # float32 means float32: cuDNN otherwise runs convolutions in TF32 (10-bit mantissa) on Ampere and later
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        for net in (self.unet, self.vae):
            if net is not None:  # dtype only when it changes: diffusers warns on every cast
                net.to(self.device) if net.dtype == dtype else net.to(device=self.device, dtype=dtype)
        self.encode_text.to(self.device, dtype)
        return self

    def use(self, runtime: RuntimeConfig) -> "AuditPipeline":
        """`to` with the config's names ('auto', 'cuda:1', 'bfloat16'), checked against this machine."""
        return self.to(*resolve(runtime))

    def place(self, x: torch.Tensor) -> torch.Tensor:
        """A host tensor (seeded noise, data) on the pipeline's device, floating ones in its dtype."""
        return x.to(self.device, self.dtype) if x.is_floating_point() else x.to(self.device)

    def pixels_to_latents(self, images: np.ndarray) -> torch.Tensor:
        """uint8 N x H x W x 3 images straight to the UNet's space on the pipeline's device."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(self.device)
        return self.to_latents(x.to(self.dtype) / 255)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        return (self.unet.config.in_channels, size, size)

    def to_latents(self, images: torch.Tensor) -> torch.Tensor:
        """[0,1] images (N,3,H,W) -> the space the UNet denoises; a VAE encodes `DECODE_ROWS` at a time."""
        x = images * 2 - 1
        if self.vae is None:
            return x
        with torch.inference_mode():
            return torch.cat([self.vae.encode(part).latent_dist.mean * self.vae.config.scaling_factor
                              for part in x.split(DECODE_ROWS)])

    def to_uint8(self, latents: torch.Tensor) -> np.ndarray:
        """Latents to uint8 N x H x W x 3 on the host, rounded in at least float32 (bfloat16 has steps of 1.0 above
        128)."""
        images = self.to_images(latents)
        wide = images.to(at_least_float32(images.dtype))
        return (wide.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()

    def to_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_latents`, clamped to [0,1]; a VAE decodes `DECODE_ROWS` at a time to bound memory."""
        if self.vae is not None:
            with torch.inference_mode():
                latents = torch.cat([self.vae.decode(part / self.vae.config.scaling_factor).sample
                                     for part in latents.split(DECODE_ROWS)])
        return ((latents + 1) / 2).clamp(0, 1)

    def model_hash(self) -> str:
        """Hash of the UNet weights: ties every generated sample and result to the exact model."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.unet.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def config_hash(self) -> str:
        """Hash of everything besides the UNet weights that shapes a sample: noise schedule, resolution, text
        encoder settings. Generation folders key on it with `model_hash`, so an edited schedule is not mixed in."""
        record = {"kind": self.kind, "resolution": self.resolution, "text": self.text_config,
                  **({} if self.dtype == torch.float32 else {"dtype": str(self.dtype)}),
                  "scheduler": {k: v for k, v in self.scheduler.config.items() if not k.startswith("_")}}
        return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def save_pretrained(self, folder: Path) -> None:
        """Write a diffusers-style folder atomically (built beside the target, then renamed)."""
        if self.kind != "diffaudit":
            raise CheckpointError("only diffaudit's own models are saved; a Stable Diffusion folder is read-only here")
        with atomic_dir(Path(folder)) as tmp:
            self.unet.save_pretrained(tmp / "unet", safe_serialization=True)
            self.scheduler.save_pretrained(tmp / "scheduler")
            shards = {"shards": self.unet.members} if isinstance(self.unet, ShardEnsemble) else {}
            (tmp / "model_index.json").write_text(json.dumps({
                "_class_name": OUR_CLASS, "_diffusers_version": diffusers.__version__,
                "resolution": self.resolution, "text_encoder": self.text_config, **shards,
            }, indent=2))

    @classmethod
    def from_pretrained(cls, folder: Path, runtime: RuntimeConfig | None = None) -> "AuditPipeline":
        """Load diffaudit's own folder or a Stable Diffusion (diffusers layout) folder from a local path, onto the
        runtime's device and dtype (CPU float32 without one)."""
        pipe = cls._load(Path(folder))
        _check_finite(Path(folder), pipe)
        return pipe.use(runtime) if runtime is not None else pipe

    @classmethod
    def _load(cls, folder: Path) -> "AuditPipeline":
        index_path = folder / "model_index.json"
        if not index_path.is_file():
            raise CheckpointError(f"{folder} is not a model folder: model_index.json is missing")
        refuse_pickles(folder)
        try:
            index = json.loads(index_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{index_path} is not valid JSON ({exc}); restore it or re-save the model") from exc
        if not isinstance(index, dict):
            raise CheckpointError(f"{index_path} must hold a JSON object, not {type(index).__name__}")
        declared = _check_classes(index_path, index)
        try:
            if index.get("shards") is not None:
                _check_int(index_path, "shards", index["shards"], 2, 1024)
                unet = ShardEnsemble.from_pretrained(folder / "unet", index["shards"]).eval()
            else:
                unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True).eval()
            scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
            _check_unet(folder / "unet" / "config.json", unet)
            if index.get("_class_name") == OUR_CLASS:
                text, resolution = index["text_encoder"], index["resolution"]
                _check_int(index_path, "resolution", resolution, MIN_RESOLUTION, 4096)
                _check_int(index_path, "text_encoder.max_tokens", text["max_tokens"], 2, 512)
                if text.get("name") != MiniLMEncoder.name:
                    raise CheckpointError(f"{index_path}: text_encoder {text.get('name')!r} is not supported in a "
                                          f"{OUR_CLASS} folder (it uses {MiniLMEncoder.name!r})")
                _check_width(folder, unet, MiniLMEncoder.dim, "MiniLM")
                if resolution != unet.config.sample_size:  # the weights decide, never the stated resolution
                    raise CheckpointError(f"{index_path}: resolution {resolution} does not match the UNet's "
                                          f"sample_size {unet.config.sample_size}; correct model_index.json")
                return cls(unet, scheduler, MiniLMEncoder(text["max_tokens"]), resolution, text_config=text)
            vae = AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True).eval()
            encoder = CLIPEncoder(folder)
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError,
                json.JSONDecodeError) as exc:  # whatever diffusers raises while loading, as one line
            what = f"missing field {exc}" if isinstance(exc, KeyError) else (str(exc).splitlines() or [""])[0]
            raise CheckpointError(f"cannot load model folder {folder}: {type(exc).__name__}: {what}") from exc
        _check_sd(folder, unet, vae, encoder)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        return cls(unet, scheduler, encoder, unet.config.sample_size * factor, vae=vae, kind="stable-diffusion",
                   declared_sampler=declared)


def _check_finite(folder: Path, pipe: "AuditPipeline") -> None:
    """A model with NaN or infinite weights draws black squares without complaint: refuse it, naming the tensor."""
    for part, net in (("unet", pipe.unet), ("vae", pipe.vae)):
        for name, tensor in (net.state_dict().items() if net is not None else ()):
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise CheckpointError(f"{folder / part}: weight {name} holds NaN or infinite values; the model "
                                      "cannot draw (restore the weights or retrain)")


def _check_classes(path: Path, index: dict) -> str | None:
    """Refuse a pipeline or component class we would not load as declared (naming the supported ones); returns the
    sampler the declared scheduler maps to (None for our own folders, which declare none)."""
    name = index.get("_class_name")
    if name not in (OUR_CLASS, SD_CLASS):
        raise CheckpointError(f"{path}: _class_name {name!r} is not a pipeline diffaudit audits; supported: "
                              f"{OUR_CLASS} (diffaudit's own), {SD_CLASS} (a local Stable Diffusion folder)")
    if name == OUR_CLASS:
        return None
    for part, want in SD_COMPONENTS.items():
        if list(index.get(part) or []) != list(want):
            raise CheckpointError(f"{path}: {part} is declared as {index.get(part)!r}; diffaudit loads "
                                  f"{list(want)} for a {SD_CLASS}")
    sched = index.get("scheduler")
    name = sched[1] if isinstance(sched, list) and len(sched) == 2 else None
    found = samplers.declared(name) if isinstance(name, str) else None
    if found is None and name != DDPMScheduler.__name__:  # DDPM: the training schedule, no sampler of its own
        classes = sorted({DDPMScheduler.__name__, *(s.scheduler.__name__ for s in samplers.SAMPLERS.values())})
        raise CheckpointError(f"{path}: scheduler {sched!r} is not one diffaudit can read; supported: "
                              f"{', '.join(classes)}")
    return found


def _check_unet(path: Path, unet: UNet2DConditionModel | ShardEnsemble) -> None:
    """The UNet config values we read, as typed numbers (a string '8' would fail deep inside sampling)."""
    config = unet.config
    _check_int(path, "sample_size", config.sample_size, 1, 4096)
    _check_int(path, "in_channels", config.in_channels, 1, 64)
    _check_int(path, "cross_attention_dim", config.cross_attention_dim, 1, 8192)


def _check_width(folder: Path, unet: UNet2DConditionModel | ShardEnsemble, width: int, encoder: str) -> None:
    if unet.config.cross_attention_dim != width:
        raise CheckpointError(f"{folder / 'unet' / 'config.json'}: cross_attention_dim "
                              f"{unet.config.cross_attention_dim} does not match the {encoder} text encoder's width "
                              f"{width}")


def _check_sd(folder: Path, unet: UNet2DConditionModel, vae: AutoencoderKL, encoder: "CLIPEncoder") -> None:
    """A Stable Diffusion folder's parts must fit together: the text encoder's width, the VAE's latent channels and
    a finite positive scale."""
    _check_width(folder, unet, encoder.model.config.hidden_size, "CLIP")
    if vae.config.latent_channels != unet.config.in_channels:
        raise CheckpointError(f"{folder / 'vae' / 'config.json'}: latent_channels {vae.config.latent_channels} does "
                              f"not match the UNet's in_channels {unet.config.in_channels}")
    scale = vae.config.scaling_factor
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < 1e3:
        raise CheckpointError(f"{folder / 'vae' / 'config.json'}: scaling_factor must be a positive number, not "
                              f"{scale!r}")


def _check_int(path: Path, name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CheckpointError(f"{path}: {name} must be an integer from {low} to {high}, not {value!r}")


def refuse_pickles(folder: Path) -> None:
    """Pickle checkpoints can run arbitrary code when loaded: refuse them and name the file."""
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix in PICKLE_SUFFIXES and path.is_file():
            raise CheckpointError(f"{path} is a pickle-format checkpoint, which can execute code when loaded; "
                                  "convert it to safetensors (diffusers: save_pretrained(safe_serialization=True))")


def build_pipeline(cfg: ModelConfig, resolution: int, seed: int = 0, runtime: RuntimeConfig | None = None
                   ) -> AuditPipeline:
    """A freshly initialised diffaudit model (seeded, so the same config gives the same weights)."""
    with torch.random.fork_rng():  # seed the initialisation without touching the caller's global RNG
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=resolution, in_channels=3, out_channels=3, block_out_channels=cfg.block_out_channels,
            down_block_types=cfg.down_block_types, up_block_types=cfg.up_block_types,
            layers_per_block=cfg.layers_per_block, cross_attention_dim=MiniLMEncoder.dim,
            attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups,
        )
    scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule)
    text_config = {"name": MiniLMEncoder.name, "max_tokens": cfg.max_text_tokens}
    pipe = AuditPipeline(unet, scheduler, MiniLMEncoder(cfg.max_text_tokens), resolution, text_config=text_config)
    if runtime is None:
        return pipe
    # A fresh model is for training: its weights are not rounded to half precision first.
    device, dtype = resolve(runtime)
    return pipe.to(device, training_dtype(dtype))
