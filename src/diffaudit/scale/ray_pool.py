"""Ray actors that hold one state (a pipeline, an index) and run blocks of work against it, in order.

Each worker is an actor asking Ray for `ray_cpus` CPUs (and `ray_gpus` GPUs) and pinning torch and faiss to that
many threads. The state goes into the object store once (`ray.put`) and each actor reads it once. Blocks go
round-robin, at most two queued per worker, and come back in submission order, so the caller commits them exactly
as a local run would. A worker that dies (killed, out of memory) is restarted by Ray and its unfinished blocks
re-run, up to RETRIES times; the caller never sees a partial block. Scheduling is Ray's: this module only chooses
the order of results.
"""

import copy
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import faiss
import ray
import torch
from ray.exceptions import RayActorError

from diffaudit import faults
from diffaudit.config import RuntimeConfig
from diffaudit.errors import ConfigError, DiffauditError
from diffaudit.model.device import resolve_device
from diffaudit.model.pipeline import AuditPipeline, add_evaluations, counted

QUEUED_PER_WORKER = 2  # one running, one waiting: a worker never idles between blocks
RETRIES = 3  # restarts of a dead worker (and re-runs of its blocks) before the run stops with an error


class WorkerError(DiffauditError):
    """A Ray worker died more often than RETRIES allows."""


@ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)
class Worker:
    """Holds the state; runs `fn(state, *block)` and reports the UNet evaluations it spent."""

    def __init__(self, state: Any, threads: int, gpu: bool):
        faults.as_worker()
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        if gpu and isinstance(state, AuditPipeline):
            state.to("cuda", state.dtype)  # Ray has set CUDA_VISIBLE_DEVICES to this worker's GPU
        self.state = state

    def run(self, fn: Callable[..., Any], *block: Any) -> tuple[Any, int, int]:
        """The result, the UNet evaluations of every model it used, and those of the state's own pipeline."""
        before_own = _own_evaluations(self.state)
        with counted() as spent:
            result = fn(self.state, *block)
        return result, spent.evaluations, _own_evaluations(self.state) - before_own


def _own_evaluations(state: Any) -> int:
    return state.denoiser.evaluations if isinstance(state, AuditPipeline) else 0


def _address(name: str) -> str | None:
    return {"local": "local", "auto": "auto"}.get(name, name)


def connect(runtime: RuntimeConfig) -> "RayPool":
    """The pool `runtime.ray` names, for `backend.using`. What can be checked without a cluster is checked here,
    before any work starts; the cluster itself is joined when work first goes out."""
    if resolve_device(runtime.device).type == "cuda" and not runtime.ray_gpus:
        raise ConfigError("runtime.ray: this run's models are on CUDA but its Ray workers ask for no GPU; give each "
                          "worker one (--ray-gpus 1), or keep the models on the CPU (--device cpu)")
    return RayPool(runtime)


class RayPool:
    """Work blocks on Ray actors (see the module's doc); joins the cluster on first use."""

    def __init__(self, runtime: RuntimeConfig):
        self.runtime = runtime
        self._workers: int | None = None

    @property
    def workers(self) -> int:
        """Workers that fit the cluster at `ray_cpus` (and `ray_gpus`) each, at most `ray_workers`."""
        if self._workers is None:
            self._workers = self._join()
        return self._workers

    def _join(self) -> int:
        runtime = self.runtime
        if not ray.is_initialized():
            try:
                ray.init(address=_address(runtime.ray), include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"runtime.ray: cannot reach a Ray cluster at {runtime.ray!r} ({exc}); start one "
                                  "with `ray start --head`, or use --ray local") from exc
        total = ray.cluster_resources()
        asked = {"CPU": runtime.ray_cpus, "GPU": runtime.ray_gpus}
        fits = min(int(total.get(kind, 0) // each) for kind, each in asked.items() if each)
        if fits < 1:
            have = ", ".join(f"{total.get(k, 0):g} {k}" for k in asked)
            raise ConfigError(f"runtime.ray: the cluster has {have}; each worker asks {runtime.ray_cpus} CPU(s) "
                              f"(runtime.ray_cpus) and {runtime.ray_gpus:g} GPU(s) (runtime.ray_gpus)")
        return min(runtime.ray_workers or fits, fits)

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
        """Results in block order; the workers' UNet evaluations are added to this process's counters, so cost
        records read the same as after a local run."""
        if not blocks:
            return
        ref, actors = self.start(state, min(self.workers, len(blocks)))
        pending: deque = deque()

        def collect() -> Any:
            try:
                result, spent, own = ray.get(pending.popleft())
            except RayActorError as exc:
                raise WorkerError(f"a Ray worker running {fn.__name__} died and was not restarted (at most "
                                  f"{RETRIES} restarts); its log is in the `logs` folder of Ray's session directory on "
                                  f"its node ({exc})") from exc
            add_evaluations(spent)
            if isinstance(state, AuditPipeline):
                state.denoiser.evaluations += own
            return result

        try:
            for i, block in enumerate(blocks):
                pending.append(actors[i % len(actors)].run.remote(fn, *block))
                if len(pending) >= QUEUED_PER_WORKER * len(actors):
                    yield collect()
            while pending:
                yield collect()
        finally:
            for actor in actors:
                ray.kill(actor)
            del ref
