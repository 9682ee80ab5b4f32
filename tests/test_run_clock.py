"""The whole run's clock: steps weighted by their measured cost, paced by this machine, resumed steps counted done,
and a plan that ends at N of N however the configuration changed the steps."""

import json
from pathlib import Path

from rich.console import Console

from diffaudit.progress import make_progress
from diffaudit.study.run_clock import RunClock, expected_costs

TABLE = {"calibration": 10.0, "seed0/base": 30.0, "seed0/dedup": 60.0, "seed0/sampler": 20.0}


def test_time_left_weights_steps_by_cost_and_paces_by_this_machine() -> None:
    console = Console(record=True, width=200)
    progress = make_progress(console)
    clock = RunClock(progress, ["calibration", "seed0/base", "seed0/dedup"], TABLE,
                     done=lambda name: name == "calibration")
    assert len(clock.plan) == 4 and clock.finished == {"calibration"}
    assert clock.left() == 110.0, "before any step here: the table's seconds"
    clock.finish("seed0/base", 60.0)  # twice as slow as measured
    assert clock.left() == 2 * (60.0 + 20.0)
    clock.finish("null g3", 5.0)  # unplanned: weighted as the table's median
    assert clock.plan["null g3"] == 25.0 and len(clock.plan) == 5
    clock.read_back("seed0/sampler")  # an earlier run's (or a Ray worker's): done, no pace
    assert clock.left() == 65.0 / 55.0 * 60.0
    assert progress.tasks[0].completed == 4, "a step read back moves the bar too"
    assert "[3/5] null g3 finished in 5 s; about" in console.export_text()


def test_the_plan_ends_at_n_of_n_when_measured_steps_never_run() -> None:
    console = Console(record=True, width=200)
    progress = make_progress(console)
    clock = RunClock(progress, ["calibration", "seed0/base"], TABLE, done=lambda name: False)
    clock.finish("calibration", 12.0)
    clock.finish("seed0/base", 28.0)
    clock.close()  # this configuration had no dedup arm and no second sampler
    assert len(clock.plan) == 2 and clock.left() == 0.0 and progress.tasks[0].completed == progress.tasks[0].total
    assert console.export_text().rstrip().endswith("whole run: 2 steps done")
    custom = RunClock(make_progress(disable=True), ["calibration"], TABLE, done=lambda name: False,
                      measured_plan=False)
    assert list(custom.plan) == ["calibration"], "a changed configuration plans only the steps it names"


def test_without_a_table_the_time_left_waits_for_a_first_step() -> None:
    clock = RunClock(make_progress(disable=True), ["calibration", "seed0/base"], {}, done=lambda name: False)
    assert clock._label() == "whole run: 0/2 steps, time left known after the first step"
    clock.finish("calibration", 30.0)
    assert clock._label() == "whole run: 1/2 steps, about 30 s left"


def test_expected_costs_read_the_preset_or_nothing(tmp_path: Path) -> None:
    table = tmp_path / "costs.json"
    table.write_text(json.dumps({"core": {"seconds": {"calibration": 120}}}))
    assert expected_costs("core", table) == {"calibration": 120.0}
    assert expected_costs("quick", table) == {}
    assert expected_costs("core", tmp_path / "missing.json") == {}
