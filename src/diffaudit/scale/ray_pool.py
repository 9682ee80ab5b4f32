"""Ray actors that hold one state (a pipeline, an index) and run blocks of work against it, in order.

Each worker is an actor asking Ray for `ray_cpus` CPUs (and `ray_gpus` GPUs) and pinning torch to that many
threads. The state goes into the object store once (`ray.put`) and each actor reads it once. Blocks go round-robin,
at most two queued per worker, and come back in submission order, so the caller commits them exactly as a local
run would. A worker that dies (killed, out of memory) is restarted by Ray and its unfinished blocks re-run; the
caller never sees a partial block. Scheduling is Ray's: this module only chooses the order of results.
"""

import copy
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ray
import torch

from diffaudit import faults
from diffaudit.config import RuntimeConfig
from diffaudit.errors import ConfigError
from diffaudit.model.pipeline import AuditPipeline

QUEUED_PER_WORKER = 2  # one running, one waiting: a worker never idles between blocks


@ray.remote(max_restarts=-1, max_task_retries=-1)
class Worker:
    """Holds the state; runs `fn(state, *block)`."""

    def __init__(self, state: Any, threads: int, gpu: bool):
        faults.as_worker()
        torch.set_num_threads(threads)
        if gpu and isinstance(state, AuditPipeline):
            state.to("cuda", state.dtype)  # Ray has set CUDA_VISIBLE_DEVICES to this worker's GPU
        self.state = state

    def run(self, fn: Callable[..., Any], *block: Any) -> Any:
        return fn(self.state, *block)

    def pid(self) -> int:
        return os.getpid()


def _address(name: str) -> str | None:
    return {"local": "local", "auto": "auto"}.get(name, name)


class RayPool:
    def __init__(self, runtime: RuntimeConfig):
        self.runtime = runtime
        if not ray.is_initialized():
            try:
                ray.init(address=_address(runtime.ray), include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"runtime.ray: cannot reach a Ray cluster at {runtime.ray!r} ({exc}); start one "
                                  "with `ray start --head`, or use --ray local") from exc
        free = ray.cluster_resources()
        kind, each = ("GPU", runtime.ray_gpus) if runtime.ray_gpus else ("CPU", runtime.ray_cpus)
        fits = int(free.get(kind, 0) // each)
        if fits < 1:
            raise ConfigError(f"runtime.ray: the cluster has {free.get(kind, 0):g} {kind}(s); each worker asks "
                              f"{each:g} (runtime.ray_{kind.lower()}s)")
        self.workers = min(runtime.ray_workers or fits, fits)

    def start(self, state: Any, count: int) -> tuple[Any, list[Any]]:
        """`count` workers holding `state` (a GPU pipeline travels as a CPU copy; each worker moves it), and the
        state's object reference, which the caller keeps until the workers are done: a restarted worker reads it
        again."""
        if isinstance(state, AuditPipeline) and state.device.type != "cpu":
            state = copy.deepcopy(state).to("cpu", state.dtype)
        ref = ray.put(state)
        rt = self.runtime
        return ref, [Worker.options(num_cpus=rt.ray_cpus, num_gpus=rt.ray_gpus).remote(ref, rt.ray_cpus,
                                                                                       rt.ray_gpus > 0)
                     for _ in range(count)]

    def mapped(self, state: Any, fn: Callable[..., Any], blocks: Sequence[tuple]) -> Iterator[Any]:
        if not blocks:
            return
        ref, actors = self.start(state, min(self.workers, len(blocks)))
        pending: deque = deque()
        try:
            for i, block in enumerate(blocks):
                pending.append(actors[i % len(actors)].run.remote(fn, *block))
                if len(pending) >= QUEUED_PER_WORKER * len(actors):
                    yield ray.get(pending.popleft())
            while pending:
                yield ray.get(pending.popleft())
        finally:
            for actor in actors:
                ray.kill(actor)
            del ref
