"""The whole run's progress: which step finished, how many of how many, and the time left.

Steps differ a thousandfold in cost (a 5-second preparation, a 15-minute retrain), so the time left is weighted by
what each step cost when `benchmarks/demo.py` last measured the preset (`step_costs.json`, written by that
benchmark), scaled by how fast this machine has been so far. A step the table does not know counts as its median.
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
    """Counts finished steps against the plan and prints one line per step: its name, the count, the time left."""

    def __init__(self, progress: Progress, planned: list[str], expected: dict[str, float],
                 done: Callable[[str], bool]):
        self.progress = progress
        self.default = statistics.median(expected.values()) if expected else 1.0
        self.plan = {name: expected.get(name, self.default) for name in dict.fromkeys([*planned, *expected])}
        self.finished = {name for name in self.plan if done(name)}  # by an earlier, interrupted run
        self.expected_here = self.actual_here = 0.0  # this session's steps, for the machine's speed
        self.task = progress.add_task(self._label(), total=sum(self.plan.values()),
                                      completed=sum(self.plan[n] for n in self.finished))

    def left(self) -> float:
        """Seconds left: the unfinished steps' expected seconds at this session's measured pace."""
        pace = self.actual_here / self.expected_here if self.expected_here else 1.0
        return pace * sum(s for n, s in self.plan.items() if n not in self.finished)

    def _label(self) -> str:
        return f"whole run: {len(self.finished)}/{len(self.plan)} steps, about {minutes(self.left())} left"

    def read_back(self, name: str) -> None:
        """A step an earlier run finished: done, and no measure of this machine's pace."""
        self.plan.setdefault(name, self.default)
        self.finished.add(name)

    def finish(self, name: str, seconds: float) -> None:
        """Record a step this session ran."""
        self.plan.setdefault(name, self.default)  # found on the way (e.g. a sampler's null): counted from now on
        self.finished.add(name)
        self.expected_here += self.plan[name]
        self.actual_here += seconds
        self.progress.update(self.task, total=sum(self.plan.values()),
                             completed=sum(self.plan[n] for n in self.finished), description=self._label())
        self.progress.console.print(f"[{len(self.finished)}/{len(self.plan)}] {name} finished in {minutes(seconds)}; "
                                    f"about {minutes(self.left())} left")
