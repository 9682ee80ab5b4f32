"""Where the embarrassingly parallel work runs: in this process, or on the pool a caller put in place with `using`.

A caller hands `mapped` a state (a pipeline, a training index), a module-level function and its blocks of work, and
gets `fn(state, *block)` back in block order either way. The caller fixes the blocks (a shard of generations, a
block of queries or prompts, one attack, one study arm), never the number of workers, so a result does not depend
on where it ran: on CPU the same bytes when the local run has as many threads as each worker (`runtime.ray_cpus`;
tests/test_scale.py holds this). The pool is scoped to a `with using(pool)` block, or to one CLI command (`scope`,
`use`): a context variable, not a module global, so one command's Ray pool never leaks into the next;
`scale/ray_pool.py` builds the Ray one.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol


class Pool(Protocol):
    """Workers that run `fn(state, *block)` for each block and give the results back in block order."""

    @property
    def workers(self) -> int: ...

    def mapped(self, state: Any, fn: Callable[..., Any], blocks: Sequence[tuple]) -> Iterator[Any]: ...


_pool: ContextVar[Pool | None] = ContextVar("diffaudit_pool", default=None)


@contextmanager
def using(pool: Pool | None) -> Iterator[None]:
    """Send the block's parallel work to `pool` (None: this process); the previous choice comes back after it."""
    token = _pool.set(pool)
    try:
        yield
    finally:
        _pool.reset(token)


@contextmanager
def scope() -> Iterator[None]:
    """A block (one CLI command) whose `use` ends with it."""
    with using(_pool.get()):
        yield


def use(pool: Pool) -> None:
    """Send parallel work to `pool` for the rest of the enclosing `scope` (a command that read `--ray`)."""
    _pool.set(pool)


def workers() -> int:
    """How many workers a block of work is spread over (1 in this process)."""
    pool = _pool.get()
    return 1 if pool is None else pool.workers


def mapped(state: Any, fn: Callable[..., Any], blocks: Sequence[tuple]) -> Iterator[Any]:
    """`fn(state, *block)` for each block, in block order: here, or on the pool in use."""
    pool = _pool.get()
    if pool is None:
        return (fn(state, *block) for block in blocks)
    return pool.mapped(state, fn, blocks)
