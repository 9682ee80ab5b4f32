"""Where the embarrassingly parallel work runs: in this process, or on Ray workers when `runtime.ray` is set.

A caller hands `mapped` a state (a pipeline, a training index), a module-level function and its blocks of work, and
gets `fn(state, *block)` back in block order either way. The caller fixes the blocks (a shard of generations, a
block of queries or prompts), never the number of workers, so a result does not depend on where it ran: on CPU the
same bytes, with torch's thread count pinned per worker (`runtime.ray_cpus`; tests/test_scale.py holds this).
Ray is imported only once a run asks for it; without `--ray` nothing here touches it.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffaudit.config import RuntimeConfig
    from diffaudit.scale.ray_pool import RayPool

_pool: "RayPool | None" = None


def connect(runtime: "RuntimeConfig") -> None:
    """Join (or start) the Ray cluster `runtime.ray` names; a no-op when it names none."""
    global _pool
    if runtime.ray is None:
        return
    from diffaudit.scale.ray_pool import RayPool

    if _pool is None or _pool.runtime != runtime:
        _pool = RayPool(runtime)


def disconnect() -> None:
    """Run in this process again (the cluster itself is left as it is)."""
    global _pool
    _pool = None


def workers() -> int:
    """How many workers a block of work is spread over (1 in this process)."""
    return 1 if _pool is None else _pool.workers


def mapped(state: Any, fn: Callable[..., Any], blocks: Sequence[tuple]) -> Iterator[Any]:
    """`fn(state, *block)` for each block, in block order: here, or on the connected Ray workers."""
    if _pool is None:
        return (fn(state, *block) for block in blocks)
    return _pool.mapped(state, fn, blocks)
