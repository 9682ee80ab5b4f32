"""Where models run: one device and one dtype, chosen once (config `runtime`, CLI `--device/--dtype`).

The pipeline holds them (`AuditPipeline.to`); everything else reads them from the pipeline. Random draws stay on
CPU generators seeded per sample and are then moved across (`on_host`), so a seed gives the same noise on any
device and a sample does not depend on where, or in which batch, it was drawn.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import torch

from diffaudit.errors import ConfigError

if TYPE_CHECKING:
    from diffaudit.config import RuntimeConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}  # float64: the tests' CPU stand-in for a second dtype

HALF = (torch.float16, torch.bfloat16)  # for sampling and audits; training and DP fine-tuning run in float32

_host = ContextVar("host", default=False)


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else CPU; a device that is asked for but absent is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but this torch build sees no CUDA GPU "
                              f"(torch {torch.__version__}); use --device cpu or install a CUDA build")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
    elif device.type != "cpu":
        raise ConfigError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def resolve(runtime: "RuntimeConfig") -> tuple[torch.device, torch.dtype]:
    """The config's names ('auto', 'cuda:1', 'bfloat16') as a device and dtype, checked against this machine."""
    device = resolve_device(runtime.device)
    return device, resolve_dtype(runtime.dtype, device)


def training_dtype(dtype: torch.dtype) -> torch.dtype:
    """Training and DP fine-tuning run in float32 when audits run in half precision: half-precision AdamW loses
    updates, float16 gradients underflow without loss scaling, and clipping norms would be imprecise."""
    return torch.float32 if dtype in HALF else dtype


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """Where sums and differences of small numbers are taken (MIA scores, pixel rounding): half precision widened
    to float32, float32 and float64 kept."""
    return torch.promote_types(dtype, torch.float32)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; choose from {sorted(DTYPES)}")
    if name == "float16" and device.type == "cpu":
        raise ConfigError("float16 needs a GPU (CPU kernels for half precision are missing or slow); "
                          "use bfloat16 or float32 on CPU")
    return DTYPES[name]


@contextmanager
def on_host() -> Iterator[None]:
    """Mark tensors made in this block as deliberately on the CPU (seeded noise, data read from disk) before the
    caller moves them to the pipeline's device; the device guard in the tests checks everything else."""
    token = _host.set(True)
    try:
        yield
    finally:
        _host.reset(token)


def in_host_block() -> bool:
    return _host.get()


def host_randn(shape: tuple[int, ...] | torch.Size, seed: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal draws from a CPU generator (seeded here, or the caller's), float32 on the CPU."""
    with on_host():
        gen = generator if generator is not None else torch.Generator().manual_seed(int(seed or 0))
        return torch.randn(tuple(shape), generator=gen)
