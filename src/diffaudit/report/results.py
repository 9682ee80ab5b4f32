"""Read a study's results once, in the shape the memo, report and viewer share. Nothing is computed here: every
number comes from the run's own files, the pooled rates and tests from the study's `findings.json`."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from diffaudit.errors import ConfigError
from diffaudit.layout import RunLayout
from diffaudit.study.records import ArmEffect, effect_from_record


@dataclass(frozen=True)
class StudyResults:
    run: Path
    rows: list[dict]
    assumptions: list[dict]
    preset: str
    config: dict  # the preset as run, from run.json
    record: dict  # hashes and package versions
    calibration: dict  # the copy threshold and the nulls it was chosen against
    mia_controls: dict  # the attacks' positive control (with its exposure curve) and negative control
    dp_controls: dict  # per seed: the non-private fine-tune that checks the DP audit's power
    findings: dict  # pooled rates, paired tests, trends: computed by the study (findings.json)
    adaptive_control: dict | None  # the embedding search on never-trained captions (its negative control)
    forget: dict | None = None  # the deletion request: every method's audit record, the reference and the control
    sampler_rows: list[dict] = field(default_factory=list)  # every arm under the study's other samplers (first seed)

    @classmethod
    def load(cls, run: Path) -> "StudyResults":
        run = Path(run)
        at = RunLayout(run)
        missing = [p.name for p in (at.results, at.assumptions, at.record, at.findings) if not p.exists()]
        if missing:
            raise ConfigError(f"{run} is not a finished study run: missing {', '.join(missing)} "
                              "(run `diffaudit study` on it: finished steps are reused, the summaries rewritten)")
        results = json.loads(at.results.read_text())
        record = json.loads(at.record.read_text())
        return cls(run, results["rows"], json.loads(at.assumptions.read_text()), results["preset"],
                   record["config"], record, results["calibration"], results.get("mia_controls", {}),
                   results.get("dp_controls", {}), json.loads(at.findings.read_text()),
                   results.get("adaptive_control"), results.get("forget"), results.get("sampler_rows", []))

    @property
    def seeds(self) -> list[int]:
        return sorted({r["seed"] for r in self.rows})

    def arms(self) -> pd.DataFrame:
        """One row per arm, pooled over seeds by the study (`study.findings.pooled_arms`)."""
        return pd.DataFrame(self.findings["arms"])

    def effects(self) -> list[ArmEffect]:
        """Each mitigation against the base, paired picture by picture under every sampler, as decided by the study
        (study.verdicts)."""
        return [effect_from_record(e) for e in self.findings["effects"]]

    def ranked(self) -> list[ArmEffect]:
        """The fixes that held, in the study's one ranking (`findings.json["ranking"]`)."""
        effects = {e.arm: e for e in self.effects()}
        return [effects[arm] for arm in self.findings["ranking"]]

    def strongest(self, row: dict, by: str = "auc") -> tuple[str | None, dict]:
        """The membership attack the study found strongest for this row (by AUC, or TPR at 1% FPR), and its
        summary; (None, {}) when the row measured no membership."""
        name = self.findings["strongest_attack"].get(f"{row['arm']}@{row['seed']}", {}).get(by)
        return name, (row.get("mia") or {}).get(name, {})

    def probe_words(self, probe: str, form: str = "title") -> str:
        """A probe in the memo's words ("title") or a table cell's ("short")."""
        return self.findings["probe_words"][probe][form]

    def row(self, arm: str, seed: int | None = None) -> dict:
        seed = self.seeds[0] if seed is None else seed
        return next(r for r in self.rows if r["arm"] == arm and r["seed"] == seed)
