"""Ray as the backend: the same bytes as a local run, and nothing lost or doubled when a worker or the driver dies.

One 2-CPU local cluster serves the module. Its workers carry a crash point that fires once per marker file, so a
test arms it by deleting the marker. Local runs pin torch to 1 thread, as each Ray worker does (runtime.ray_cpus).
"""

import io
import json
import os
import pkgutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import faiss
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import loose_study
from rich.console import Console

import diffaudit
from diffaudit import backend, faults
from diffaudit.attacks.detect import DETECTORS, PROMPT_BLOCK, score_prompts
from diffaudit.config import Preset, RuntimeConfig
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.measure.distance import as_unit
from diffaudit.measure.neighbours import QUERY_BLOCK, TrainingIndex
from diffaudit.model.generate import SHARD_SIZE, generate
from diffaudit.model.pipeline import AuditPipeline, counted
from diffaudit.model.shards import INDEX
from diffaudit.ownership import OURS
from diffaudit.progress import make_progress
from diffaudit.scale.ray_pool import WorkerError, connect
from diffaudit.study import runner
from diffaudit.study.mia_audit import run_mia
from diffaudit.study.runner import run_study
from diffaudit.tracking import write_run_record

PROMPTS = ["grinning face emoji", "red heart emoji", "cat emoji"]
T = TypeVar("T")
SEEDS, SCALES, SHARD = [0, 1, 2, 3], [1.0, 3.0], 5  # 24 samples in 5 shards
KILL_AFTER_FIRST_SHARD = 5  # the driver's crash points: 4 in the first shard's two atomic writes, then this one


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 2-worker local cluster; yields the crash marker (present: the workers' crash point is disarmed)."""
    import ray

    mark = tmp_path_factory.mktemp("ray") / "crashed"
    mark.touch()
    # Each worker dies at its second shard if the marker is absent: mid-run, after it drew the shard, before the
    # driver received it.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {faults.WORKER_ENV: "2", faults.WORKER_MARK: str(mark)}})
    with backend.using(connect(RuntimeConfig(ray="local", ray_cpus=1, device="cpu"))):
        yield mark
    ray.shutdown()


def _here(fn: Callable[..., T], *args: object) -> T:
    """`fn` run in this process, however the module's backend is connected."""
    with backend.using(None):
        return fn(*args)


@pytest.fixture()
def on_ray(cluster: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions that went out to the Ray workers during the test."""
    pool, sent = backend._pool.get(), []
    original = pool.mapped

    def spy(state: object, fn: Callable[..., object], blocks: list[tuple]) -> object:
        sent.append(fn.__name__)
        return original(state, fn, blocks)

    monkeypatch.setattr(pool, "mapped", spy)
    return sent


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """This process on one thread, as each Ray worker (runtime.ray_cpus = 1)."""
    threads, omp = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(omp)


def _local(pipe: AuditPipeline, tiny: Preset, out: Path, seeds: list[int] = SEEDS, **kw: object) -> None:
    """A run in this process, however the module's backend is connected."""
    _here(lambda: generate(pipe, PROMPTS, seeds, SCALES, tiny.sample, out, **{"shard_size": SHARD} | kw))


def _same_files(a: Path, b: Path, shards: int = 5) -> None:
    names = sorted(p.name for p in a.iterdir() if p.name not in OURS)  # each folder has its own marker and id
    assert names == sorted(p.name for p in b.iterdir() if p.name not in OURS)
    assert INDEX in names and len(names) == shards + 1
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_ray_writes_the_local_runs_bytes(cluster: Path, tmp_path: Path, tiny: Preset, tiny_pipe: AuditPipeline,
                                         one_thread: None) -> None:
    assert backend.workers() == 2
    _local(tiny_pipe, tiny, tmp_path / "local")
    generate(tiny_pipe, PROMPTS, SEEDS, SCALES, tiny.sample, tmp_path / "ray", shard_size=SHARD)
    _same_files(tmp_path / "local", tmp_path / "ray")


def test_a_worker_killed_mid_shard_loses_and_doubles_nothing(cluster: Path, tmp_path: Path, tiny: Preset,
                                                             tiny_pipe: AuditPipeline, one_thread: None) -> None:
    _local(tiny_pipe, tiny, tmp_path / "local")
    cluster.unlink()  # arm: the first worker to reach its second shard dies there
    generate(tiny_pipe, PROMPTS, SEEDS, SCALES, tiny.sample, tmp_path / "ray", shard_size=SHARD)
    assert cluster.exists(), "no worker was killed"
    _same_files(tmp_path / "local", tmp_path / "ray")


def test_a_run_begun_on_ray_resumes_anywhere(cluster: Path, tmp_path: Path, tiny: Preset, tiny_pipe: AuditPipeline,
                                             one_thread: None) -> None:
    _local(tiny_pipe, tiny, tmp_path / "local")
    generate(tiny_pipe, PROMPTS, SEEDS, SCALES, tiny.sample, tmp_path / "ray", shard_size=SHARD, max_shards=2)
    _local(tiny_pipe, tiny, tmp_path / "ray", max_shards=1)  # the driver died twice, once per backend
    generate(tiny_pipe, PROMPTS, SEEDS, SCALES, tiny.sample, tmp_path / "ray", shard_size=SHARD)
    _same_files(tmp_path / "local", tmp_path / "ray")


def _kill_session(sid: int) -> None:
    """Whatever the killed driver's cluster left behind (Ray's agents outlive a driver killed with -9)."""
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            if os.getsid(pid) == sid:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


def test_a_killed_driver_resumes_from_its_shards(tmp_path: Path, tiny: Preset, tiny_model_dir: Path,
                                                 tiny_pipe: AuditPipeline, one_thread: None) -> None:
    """`diffaudit generate --ray local` (3 shards of 64), killed as by kill -9 after its first shard, then run
    again: the same bytes as one uninterrupted local run."""
    seeds = 22  # 3 prompts x 22 seeds x 2 scales = 132 samples
    cmd = [sys.executable, "-c", "from diffaudit.cli import main; main()", "generate", str(tiny_model_dir),
           str(tmp_path / "ray"), *[a for p in PROMPTS for a in ("--prompt", p)], "--seeds", str(seeds),
           "--guidance", "1", "--guidance", "3", "--preset", "tiny", "--ray", "local", "--ray-cpus", "1",
           "--device", "cpu"]
    logs = []
    for crash in (KILL_AFTER_FIRST_SHARD, None):
        env = os.environ | ({faults.ENV: str(crash)} if crash else {})
        run = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        log = run.communicate(timeout=300)[0]
        logs.append((run.returncode, log))
        _kill_session(run.pid)
        if crash:
            written = len(pd.read_parquet(tmp_path / "ray" / INDEX))
    assert logs[0][0] == faults.CRASH_STATUS and "injected crash" in logs[0][1], logs[0][1]
    assert written == SHARD_SIZE, "the driver did not die between shards"
    assert logs[1][0] == 0, logs[1][1]
    _local(tiny_pipe, tiny, tmp_path / "local", seeds=list(range(seeds)), shard_size=SHARD_SIZE)
    _same_files(tmp_path / "local", tmp_path / "ray", shards=3)


def test_without_ray_nothing_imports_it() -> None:
    code = ("import pkgutil, sys, importlib, diffaudit\n"
            "for m in pkgutil.walk_packages(diffaudit.__path__, 'diffaudit.'):\n"
            "    if m.name != 'diffaudit.scale.ray_pool': importlib.import_module(m.name)\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "diffaudit.scale.ray_pool" in {m.name for m in pkgutil.walk_packages(diffaudit.__path__, "diffaudit.")}


@pytest.mark.parametrize("exact_limit", [10_000, 1_000], ids=["flat", "pca-ivf"])
def test_neighbour_search_on_ray_matches_local(on_ray: list[str], exact_limit: int, one_thread: None) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (2_000, 8, 8, 3), np.uint8)
    queries = rng.integers(0, 256, (2 * QUERY_BLOCK + 5, 8, 8, 3), np.uint8)  # alone, 5 rows would skip BLAS
    index = TrainingIndex(train, exact_limit=exact_limit)
    assert isinstance(index.index, faiss.IndexFlat) == (exact_limit > len(train))
    found = index.candidates(queries, 8)
    assert on_ray == ["_block_candidates"]
    np.testing.assert_array_equal(found, _here(index.candidates, queries, 8))
    if exact_limit > len(train):  # exact search: blocks give what one faiss call over every query gives
        np.testing.assert_array_equal(found, index.index.search(as_unit(queries).reshape(len(queries), -1), 8)[1])


def test_detector_scores_on_ray_match_local(on_ray: list[str], tiny_pipe: AuditPipeline, one_thread: None) -> None:
    prompts = [f"{p} {i}" for i in range(24) for p in PROMPTS][:PROMPT_BLOCK + 8]  # two blocks
    detector = DETECTORS["wen"](steps=1, sampling_steps=3)
    scores, evals = score_prompts(detector, tiny_pipe, prompts)
    assert on_ray == ["_score_block"]
    np.testing.assert_array_equal(scores, _here(score_prompts, detector, tiny_pipe, prompts)[0])
    np.testing.assert_array_equal(scores, detector.score(tiny_pipe, prompts))  # blocks change no score
    assert evals == detector.queries_per_prompt * len(prompts)


def test_membership_scores_on_ray_match_local(on_ray: list[str], tmp_path: Path, tiny: Preset, tiny_data: ImageDataset,
                                              tiny_pipe: AuditPipeline, one_thread: None) -> None:
    args = (tiny_pipe, tiny_data)
    kw = {"attacks": ["loss", "pia"], "per_side": tiny.membership.per_side,
          "tune_per_side": tiny.membership.tune_per_side}
    with counted() as remote_evals:
        remote = run_mia(*args, tmp_path / "ray", **kw)
    assert on_ray == ["_score_attack"]
    with counted() as here_evals:
        here = _here(lambda: run_mia(*args, tmp_path / "local", **kw))
    assert remote_evals.evaluations == here_evals.evaluations > 0, "the workers' UNet evaluations are counted here"
    assert (tmp_path / "ray" / "scores.parquet").read_bytes() == (tmp_path / "local" / "scores.parquet").read_bytes()
    assert remote["attacks"] == here["attacks"]


@pytest.mark.slow  # 170 s on 2 cores, most of it Ray starting workers for each step: run with `pytest -m slow`
def test_study_arms_on_ray_match_local(cluster: Path, tmp_path: Path, tiny: Preset, tiny_model_dir: Path,
                                       one_thread: None) -> None:
    """Two arms besides the base, each a Ray task, against the same study run here."""
    preset = loose_study(tiny)
    preset = preset.model_copy(update={
        "study": preset.study.model_copy(update={"mitigations": ("guidance",), "samplers": preset.study.samplers[:1],
                                                 "reference_samplers": ()}),
        "adaptive": preset.adaptive.model_copy(update={"probes": ()}),
        "membership": preset.membership.model_copy(update={"control_preset": None}),
        "dp": preset.dp.model_copy(update={"control": False}),
        "forget": preset.forget.model_copy(update={"in_study": False})})
    log = io.StringIO()
    run_study(preset, tmp_path / "ray", tiny_model_dir, make_progress(Console(file=log), disable=True))
    _here(lambda: run_study(preset, tmp_path / "local", tiny_model_dir, make_progress(disable=True)))
    arms = ["base", "base-tiered", "guidance-3"]
    assert [f"seed 0: arm {a} finished on a Ray worker" in log.getvalue() for a in arms] == [True] * 3, log.getvalue()
    for arm in arms:
        a, b = (json.loads((tmp_path / r / "steps" / f"seed0-{arm}.json").read_text()) for r in ("ray", "local"))
        assert {k: v for k, v in a.items() if k != "train_seconds"} == {k: v for k, v in b.items()
                                                                          if k != "train_seconds"}, arm


def test_a_worker_that_keeps_dying_stops_the_run(on_ray: list[str]) -> None:
    with pytest.raises(WorkerError, match="raise_signal died"):
        list(backend.mapped(signal.SIGKILL, signal.raise_signal, [()]))  # each restart kills itself again


def test_a_cuda_run_needs_gpu_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("diffaudit.scale.ray_pool.resolve_device", lambda name: torch.device("cuda"))
    with pytest.raises(ConfigError, match="--ray-gpus 1"):
        connect(RuntimeConfig(ray="local"))


def test_a_study_resumes_under_other_ray_settings(tmp_path: Path, tiny: Preset) -> None:
    write_run_record(tmp_path, tiny.model_dump(), {})
    moved = tiny.runtime.model_copy(update={"ray": "auto", "ray_cpus": 2, "ray_gpus": 1.0, "ray_workers": 3})
    runner._check_same_config(tmp_path, tiny.model_copy(update={"runtime": moved}))
    with pytest.raises(ConfigError, match="sample.steps"):
        runner._check_same_config(tmp_path, tiny.model_copy(update={"sample": tiny.sample.model_copy(
            update={"steps": 5})}))


def test_a_study_may_grow_its_seeds_but_not_rewrite_them(tmp_path: Path, tiny: Preset) -> None:
    write_run_record(tmp_path, tiny.model_dump(), {})
    study = tiny.study
    runner._check_same_config(tmp_path, tiny.model_copy(update={"study": study.model_copy(
        update={"seeds": (*study.seeds, 7)})}))
    with pytest.raises(ConfigError, match="study.seeds"):
        runner._check_same_config(tmp_path, tiny.model_copy(update={"study": study.model_copy(
            update={"seeds": (7, *study.seeds)})}))


@pytest.mark.parametrize("section, key, more", [("study", "mitigations", "inference"),
                                                ("adaptive", "probes", "embedding-search")])
def test_a_study_may_grow_its_arms_and_probes(tmp_path: Path, tiny: Preset, section: str, key: str, more: str) -> None:
    """Lists of arms and probes a finished study may extend (runner.EXTENDABLE), named by the section holding them."""
    fewer = getattr(tiny, section).model_copy(update={key: tuple(x for x in getattr(getattr(tiny, section), key)
                                                                 if x != more)})
    write_run_record(tmp_path, tiny.model_copy(update={section: fewer}).model_dump(), {})
    runner._check_same_config(tmp_path, tiny)
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        runner._check_same_config(tmp_path, tiny.model_copy(update={section: fewer.model_copy(
            update={key: tuple(reversed(getattr(fewer, key)))})}))
