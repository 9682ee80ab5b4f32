"""Where every file and folder of a study run lives: the one place a run path is built, so the runner, findings,
reports and audits cannot disagree about the layout.

    RUN/run.json, results.json, findings.json, assumptions.json, comparison.parquet   records of the whole run
    RUN/steps/NAME.json, NAME.cost.json          each finished step's result and cost (a resume reads these)
    RUN/data/                                    the dataset the run prepared
    RUN/mia-controls/                            the membership attacks' positive and negative controls
    RUN/seedS/ARM/                               an arm's model and audits at training seed S
        extraction/ (samples/, per_prompt.parquet, matches.parquet, pairs.parquet, summary.json)
        mia/ (summary.json, roc.png), adaptive/PROBE/, sampler-KEY/extraction/ (another sampler)
    RUN/seedS/null/                              the copy test's nulls (calibration, every other setting)
    RUN/seedS/tiered/                            the tiered audit's detector scores
    RUN/seedS/forget/                            the deletion study
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    # Records of the whole run
    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def findings(self) -> Path:
        return self.root / "findings.json"

    @property
    def assumptions(self) -> Path:
        return self.root / "assumptions.json"

    @property
    def comparison(self) -> Path:
        return self.root / "comparison.parquet"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlruns" / "mlflow.db"

    @property
    def mia_controls(self) -> Path:
        return self.root / "mia-controls"

    # Steps: one finished unit of work each
    @property
    def steps(self) -> Path:
        return self.root / "steps"

    def step(self, name: str) -> Path:
        return self.steps / f"{name}.json"

    def cost(self, name: str) -> Path:
        return self.steps / f"{name}.cost.json"

    @staticmethod
    def arm_step(seed: int, arm: str) -> str:
        return f"seed{seed}-{arm}"

    @staticmethod
    def sampler_step(seed: int, arm: str, sampler: str) -> str:
        return f"seed{seed}-{arm}~{sampler}"

    @staticmethod
    def probe_step(seed: int, arm: str, probe: str) -> str:
        return f"seed{seed}-{arm}-adaptive-{probe}"

    @staticmethod
    def null_step(tag: str) -> str:
        return f"null-{tag.replace(' ', '_')}"

    # Per seed and arm
    def seed(self, seed: int) -> Path:
        return self.root / f"seed{seed}"

    def arm(self, seed: int, arm: str) -> Path:
        return self.seed(seed) / arm

    def sampler(self, seed: int, arm: str, sampler: str) -> Path:
        """The folder of an arm's audit under another sampler (`sampler` is its key, e.g. 'dpmsolver++-10')."""
        return self.arm(seed, arm) / f"sampler-{sampler}"

    def extraction(self, seed: int, arm: str, sampler: str | None = None) -> Path:
        """An arm's extraction audit: under the headline sampler, or under `sampler` (a key)."""
        return (self.arm(seed, arm) if sampler is None else self.sampler(seed, arm, sampler)) / "extraction"

    def mia(self, seed: int, arm: str) -> Path:
        return self.arm(seed, arm) / "mia"

    def null(self, seed: int) -> Path:
        return self.seed(seed) / "null"

    def tiered(self, seed: int) -> Path:
        return self.seed(seed) / "tiered"

    def forget(self, seed: int) -> Path:
        return self.seed(seed) / "forget"
