"""A torch function mode that fails when a tensor is made or mixed off the requested device and dtype.

Without a GPU the device cannot differ, so the tests ask for float64 on the CPU: a code path that forgot the
pipeline's dtype makes float32 tensors, and this mode names the function that did.
"""

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from diffaudit.model.device import in_host_block

# Functions that create tensors from sizes or data: their floating outputs must be on the requested device/dtype.
FACTORIES = {"randn", "rand", "zeros", "ones", "empty", "full", "tensor", "as_tensor", "from_numpy", "normal",
             "randn_like", "rand_like", "zeros_like", "ones_like", "empty_like", "full_like"}

# Factories from sizes alone: outside `on_host`, they must name their device (CPU tests cannot see a wrong one).
SIZED = {"randn", "rand", "zeros", "ones", "empty", "full", "normal", "randint", "arange", "linspace"}


class StrictDevice(TorchFunctionMode):
    """Three rules, outside `device.on_host` blocks: (1) no op mixes floating tensors (of one or more dimensions) of
    different dtypes or devices, which torch would silently promote or fail on later on a GPU; (2) a factory's
    floating output of two or more dimensions (images, noise, embeddings; schedules are 1-D) is on `device` in
    `dtype`; (3) a factory from sizes names its device. Moves to the host for numpy (`.cpu()`) are allowed."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.device, self.dtype = torch.device(device), dtype
        self.checked = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if in_host_block():
            return func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        floats = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.is_floating_point()
                  and t.dim() >= 1]
        if name not in {"cpu", "to", "numpy", "copy_", "__set__", "__get__"}:
            kinds = {(t.dtype, t.device.type) for t in floats}
            if len(kinds) > 1:
                raise AssertionError(f"{name} mixes tensors of {sorted(map(str, kinds))}")
        if name in SIZED and "device" not in kwargs:
            raise AssertionError(f"{name} called without device=: on a GPU it would make a CPU tensor")
        out = func(*args, **kwargs)
        if name in FACTORIES:
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() >= 2 and (
                        t.dtype != self.dtype or t.device.type != self.device.type):
                    raise AssertionError(f"{name} made a {tuple(t.shape)} {t.dtype} tensor on {t.device}; "
                                         f"the run asked for {self.dtype} on {self.device}")
        self.checked += 1
        return out
