"""Where the embarrassingly parallel work runs: in this process, or on Ray workers when `runtime.ray` is set.

A caller hands `mapped` a state (a pipeline, a training index), a module-level function and its blocks of work, and
gets `fn(state, *block)` back in block order either way. The caller fixes the blocks (a shard of generations, a
block of queries or prompts, one attack, one study arm), never the number of workers, so a result does not depend
on where it ran: on CPU the same bytes when the local run has as many threads as each worker (`runtime.ray_cpus`;
tests/test_scale.py holds this). Ray is imported, and a cluster joined, only when work first goes out; without
`--ray` nothing here touches it.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from diffaudit.errors import ConfigError

if TYPE_CHECKING:
    from diffaudit.config import RuntimeConfig
    from diffaudit.scale.ray_pool import RayPool

_runtime: "RuntimeConfig | None" = None
_pool: "RayPool | None" = None


def connect(runtime: "RuntimeConfig") -> None:
    """Send work to the Ray cluster `runtime.ray` names from now on (none: this process). What can be checked
    without a cluster is checked here, before any work starts."""
    global _runtime, _pool
    if runtime.ray is None:
        disconnect()
        return
    from diffaudit.model.device import resolve_device

    if resolve_device(runtime.device).type == "cuda" and not runtime.ray_gpus:
        raise ConfigError("runtime.ray: this run's models are on CUDA but its Ray workers ask for no GPU; give each "
                          "worker one (--ray-gpus 1), or keep the models on the CPU (--device cpu)")
    if runtime != _runtime:
        _runtime, _pool = runtime, None


def disconnect() -> None:
    """Run in this process again (the cluster itself is left as it is)."""
    global _runtime, _pool
    _runtime = _pool = None


def _connected() -> "RayPool | None":
    global _pool
    if _runtime is not None and _pool is None:
        from diffaudit.scale.ray_pool import RayPool

        _pool = RayPool(_runtime)
    return _pool


def workers() -> int:
    """How many workers a block of work is spread over (1 in this process)."""
    pool = _connected()
    return 1 if pool is None else pool.workers


def mapped(state: Any, fn: Callable[..., Any], blocks: Sequence[tuple]) -> Iterator[Any]:
    """`fn(state, *block)` for each block, in block order: here, or on the connected Ray workers."""
    pool = _connected()
    if pool is None:
        return (fn(state, *block) for block in blocks)
    return pool.mapped(state, fn, blocks)
