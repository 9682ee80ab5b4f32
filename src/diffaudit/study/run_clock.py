"""The whole run's progress: which step finished, how many of how many, and the time left.

Steps differ a thousandfold in cost (a 5-second preparation, a 15-minute retrain), so the time left is weighted by
what each step cost when `benchmarks/demo.py` last measured the preset (`step_costs.json`, written by that
benchmark), scaled by how fast this machine has been so far. A step the table does not know counts as its median;
with no table at all, the time left is said once a first step has set the pace.
"""

import json
import statistics
from collections.abc import Callable
from pathlib import Path

from diffaudit.progress import Progress

COSTS = Path(__file__).with_name("step_costs.json")


def expected_costs(preset: str, table: Path = COSTS) -> dict[str, float]:
    """Seconds per step of `preset` as last measured (empty when it never was)."""
    measured = json.loads(table.read_text()) if table.exists() else {}
    return {name: float(s) for name, s in measured.get(preset, {}).get("seconds", {}).items()}


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class RunClock:
    """Counts finished steps against the plan and prints one line per step: its name, the count, the time left.

    The plan is the steps the study names up front plus, when `measured_plan`, every other step the table measured
    for this preset (its samplers, nulls and controls); a step found on the way joins it. The bar counts steps; its
    label carries the weighted time left (rich's own time columns stay blank for it: they would weigh steps alike).
    """

    def __init__(self, progress: Progress, planned: list[str], expected: dict[str, float],
                 done: Callable[[str], bool], measured_plan: bool = True):
        self.progress = progress
        self.measured = bool(expected)
        self.default = statistics.median(expected.values()) if expected else 1.0
        names = [*planned, *expected] if measured_plan else planned
        self.plan = {name: expected.get(name, self.default) for name in dict.fromkeys(names)}
        self.finished = {name for name in self.plan if done(name)}  # by an earlier, interrupted run
        self.expected_here = self.actual_here = 0.0  # this session's steps, for the machine's speed
        self.task = progress.add_task(self._label(), total=len(self.plan), completed=len(self.finished),
                                      start=False)

    def left(self) -> float:
        """Seconds left: the unfinished steps' expected seconds at this session's measured pace."""
        pace = self.actual_here / self.expected_here if self.expected_here else 1.0
        return pace * sum(s for n, s in self.plan.items() if n not in self.finished)

    def _left(self) -> str:
        known = self.measured or self.expected_here
        return f"about {minutes(self.left())} left" if known else "time left known after the first step"

    def _label(self) -> str:
        return f"whole run: {len(self.finished)}/{len(self.plan)} steps, {self._left()}"

    def _show(self) -> None:
        self.progress.update(self.task, total=len(self.plan), completed=len(self.finished),
                             description=self._label())

    def read_back(self, name: str) -> None:
        """A step an earlier run finished (or a Ray worker did): done, and no measure of this machine's pace."""
        self.plan.setdefault(name, self.default)
        self.finished.add(name)
        self._show()

    def finish(self, name: str, seconds: float) -> None:
        """Record a step this session ran."""
        self.plan.setdefault(name, self.default)  # found on the way (e.g. a sampler's null): counted from now on
        self.finished.add(name)
        self.expected_here += self.plan[name]
        self.actual_here += seconds
        self._show()
        self.progress.console.print(f"[{len(self.finished)}/{len(self.plan)}] {name} finished in {minutes(seconds)}; "
                                    f"{self._left()}")

    def close(self) -> None:
        """The run is over: steps the table named that this configuration never ran leave the plan."""
        self.plan = {n: s for n, s in self.plan.items() if n in self.finished}
        self._show()
        self.progress.console.print(f"whole run: {len(self.finished)} steps done")
