"""The study's records as the reports read them back: the verdict vocabulary, one fix's effect, and `StudyResults`,
which reads a run's records once in the shape the memo, report, viewer and scorecard share. Nothing here decides:
`study/findings` and `study/verdicts` compute, this module names what they wrote, so a report can import it without
importing anything that computes."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from diffaudit.config import Preset, recorded
from diffaudit.errors import ConfigError
from diffaudit.layout import RunLayout
from diffaudit.study.audit_records import AttackSummary, CalibrationRecord, json_schema_of
from diffaudit.study.control_records import AdaptiveControl, DpControl, MiaControls
from diffaudit.study.deletion_record import ForgetStudy
from diffaudit.study.findings_record import FINDINGS_SCHEMA, FindingsRecord, MembershipVerdict, PooledArm
from diffaudit.study.results_record import AuditRow, DetectionRow, read_results
from diffaudit.words import Description

ALPHA = 0.05  # significance level for "changed beyond chance"
VERDICTS = {  # the one verdict per arm, in the words every report uses
    "fewer": "fewer copies under every sampler",
    "undone": "fewer copies, undone by an attacker",
    "one seed only": "fewer copies at the one training seed measured",
    "not at every seed": "fewer copies here, not at every training seed",
    "not under every sampler": "fewer copies under some samplers only",
    "partly judged": "fewer copies where judged; not judged under every sampler",
    "no clear change": "no clear change",
    "more": "more copies under some sampler",
    "not judged": "not judged: the copy test is invalid at its settings",
}


@dataclass(frozen=True)
class ArmEffect:
    """One fix against the base. Rates and intervals are the first seed's, headline sampler; `stopped`/`started`
    count *pictures* (owner's check); `verdict` is the worst case over samplers, seeds and probes (study.verdicts)."""

    arm: str
    kind: str
    rate: float  # outsider's probe: captions with a confirmed copy of their own picture
    ci_low: float
    ci_high: float
    extracted: int
    prompts: int
    stopped: int  # pictures the base copied and this arm did not (owner's check, headline sampler)
    started: int  # pictures this arm copied and the base did not
    p_value: float  # picture-paired exact McNemar under the headline sampler, Holm-adjusted over the arms
    frechet_change: float  # relative to the base model; + is worse quality
    loss_change: float
    train_seconds: float
    description: Description  # the mitigation's own plain words (mitigations.registry)
    base_rate: float = float("nan")
    owner_prompts: int = 0  # captions with a copy of their own picture among all generations (the owner's check)
    owner_rate: float = float("nan")
    owner_ci_low: float = float("nan")
    owner_ci_high: float = float("nan")
    base_owner_rate: float = float("nan")
    pictures: int = 0
    owner_pictures: int = 0
    base_owner_pictures: int = 0
    worst: str = "no clear change"  # a key of study.verdicts.VERDICTS
    by_sampler: list = field(default_factory=list)  # the picture-paired test under each default sampler
    seeds: list = field(default_factory=list)  # the same at each replicate training seed
    started_pictures: list = field(default_factory=list)  # pictures it newly copies under any sampler, named
    undone_by: list = field(default_factory=list)  # probes (adaptive, or another sampler) that undid it
    seed_note: str = ""  # e.g. "first training seed only"

    @property
    def verdict(self) -> str:
        return VERDICTS[self.worst]

    @property
    def lowered(self) -> bool:
        """Fewer pictures copied beyond chance under every sampler and seed, undone by no probe."""
        return self.worst == "fewer"


def bucket_start(label: str) -> int:
    """Lower bound of a duplication bucket label ("1", "2-3", ..., "64+"), for sorting."""
    return int(label.split("-")[0].rstrip("+"))


def by_dup(buckets: list[dict]) -> pd.DataFrame:
    """Per-bucket rates (a row's `by_dup` or `oracle_by_dup`) in ladder order (they are stored in string order)."""
    frame = pd.DataFrame(buckets)
    return frame.sort_values("dup_bucket", key=lambda s: s.map(bucket_start)).reset_index(drop=True)


def attack_settings(choice: dict[str, Any]) -> dict[str, Any]:
    """The settings an attack was scored with, without the tuning bookkeeping (for tables)."""
    return {k: v for k, v in choice.items() if k not in ("tuned", "tuning_samples", "tuning_auc", "tuning_auc_ci")}


def effect_from_record(record: dict) -> ArmEffect:
    """An `ArmEffect` read back from findings.json, where an undefined number was written as null."""
    numbers = {k: float("nan") if v is None else v for k, v in record.items() if k != "verdict"}
    return ArmEffect(**{**numbers, "description": Description(**record["description"])})


FINDINGS_JSON_SCHEMA = Path(__file__).parents[1] / "schemas" / f"findings-v{FINDINGS_SCHEMA}.schema.json"


def findings_schema() -> dict:
    """findings.json's JSON Schema, as shipped in `FINDINGS_JSON_SCHEMA`."""
    return json_schema_of(FindingsRecord)


def read_findings(findings: dict, source: Path | str) -> FindingsRecord:
    """`findings` as its record; a run written before this shape is refused in one line."""
    if findings.get("schema_version") != FINDINGS_SCHEMA:
        raise ConfigError(f"{source}: findings of schema {findings.get('schema_version', 1)!r}, written by an older "
                          f"diffaudit; run `diffaudit study` on the run again (its finished steps are reused) to "
                          f"rewrite them as schema {FINDINGS_SCHEMA}, or, where this diffaudit refuses to resume it "
                          "(its settings have since moved), write the reports with the diffaudit that ran it")
    try:
        return FindingsRecord.model_validate(findings)
    except ValidationError as exc:
        raise ConfigError(f"{source}: not a findings record: {str(exc).splitlines()[0]} "
                          f"({'; '.join('.'.join(map(str, e['loc'])) for e in exc.errors()[:3])})") from exc


def checked_findings(findings: dict, source: Path | str) -> dict:
    """`findings` when it has the record's shape (`read_findings`), as the study writes it."""
    read_findings(findings, source)
    return findings


@dataclass(frozen=True)
class StudyResults:
    run: Path
    rows: list[AuditRow | DetectionRow]  # every arm at every seed, and the tiered audit
    assumptions: list[dict]
    preset: str
    config: Preset  # the preset as run, from run.json
    record: dict  # hashes and package versions
    calibration: CalibrationRecord  # the copy threshold and the nulls it was chosen against
    mia_controls: MiaControls  # the attacks' positive control (with its exposure curve) and negative control
    dp_controls: dict[str, DpControl]  # per seed: the non-private fine-tune that checks the DP audit's power
    findings: FindingsRecord  # pooled rates, paired tests, trends: computed by the study (findings.json)
    adaptive_control: AdaptiveControl | None  # the embedding search on never-trained captions (its negative control)
    forget: ForgetStudy | None = None  # the deletion request: every method's record, the reference and the control
    sampler_rows: list[AuditRow] = field(default_factory=list)  # every arm under the other samplers (first seed)

    @classmethod
    def load(cls, run: Path) -> "StudyResults":
        run = Path(run)
        at = RunLayout(run)
        missing = [p.name for p in (at.results, at.assumptions, at.record, at.findings) if not p.exists()]
        if missing:
            raise ConfigError(f"{run} is not a finished study run: missing {', '.join(missing)} "
                              "(run `diffaudit study` on it: finished steps are reused, the summaries rewritten)")
        results = read_results(json.loads(at.results.read_text()), at.results)
        record = json.loads(at.record.read_text())
        return cls(run, results.rows, json.loads(at.assumptions.read_text()), results.preset,
                   recorded(record["config"], at.record), record, results.calibration, results.mia_controls,
                   results.dp_controls, read_findings(json.loads(at.findings.read_text()), at.findings),
                   results.adaptive_control, results.forget, results.sampler_rows)

    @property
    def base_model(self) -> str:
        """The base model's hash, as run.json recorded it before any step: what a report names the run by."""
        return self.record["hashes"]["base_model"]

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.rows})

    def arms(self) -> pd.DataFrame:
        """One row per arm, pooled over seeds by the study (`study.findings.pooled_arms`), as a table to show."""
        return pd.DataFrame([dict(sorted(a.model_dump(mode="json").items())) for a in self.findings.arms])

    def pooled(self, arm: str) -> PooledArm:
        """An arm pooled over its seeds."""
        found = next((a for a in self.findings.arms if a.arm == arm), None)
        if found is None:
            raise KeyError(f"{self.run}: no arm {arm!r} among {[a.arm for a in self.findings.arms]}")
        return found

    def effects(self) -> list[ArmEffect]:
        """Each mitigation against the base, paired picture by picture under every sampler, as decided by the study
        (study.verdicts)."""
        return [effect_from_record(e) for e in self.findings.effects]

    def ranked(self) -> list[ArmEffect]:
        """The fixes that held, in the study's one ranking (`findings.json["ranking"]`)."""
        effects = {e.arm: e for e in self.effects()}
        return [effects[arm] for arm in self.findings.ranking]

    def membership(self, row: AuditRow) -> MembershipVerdict:
        """The study's membership verdicts for a row (detectable, by which attack; split alike), or none when it
        measured none."""
        return self.findings.membership.get(f"{row.arm}@{row.seed}",
                                            MembershipVerdict(detectable=None, by=None, split_alike=None))

    def strongest(self, row: AuditRow, by: str = "auc") -> tuple[str | None, AttackSummary | None]:
        """The membership attack the study found strongest for this row (by AUC, or TPR at 1% FPR), and its
        summary; (None, None) when the row measured no membership."""
        strongest = self.findings.strongest_attack.get(f"{row.arm}@{row.seed}")
        name = getattr(strongest, by) if strongest is not None else None
        return name, (row.mia or {}).get(name)

    def probe_words(self, probe: str, form: str = "title") -> str:
        """A probe in the memo's words ("title") or a table cell's ("short")."""
        return getattr(self.findings.probe_words[probe], form)

    def row(self, arm: str, seed: int | None = None) -> AuditRow:
        """An audited arm's row at `seed` (the first by default)."""
        seed = self.seeds[0] if seed is None else seed
        return next(r for r in self.audited() if r.arm == arm and r.seed == seed)

    def audited(self) -> list[AuditRow]:
        """Every audited arm's row, the tiered audit's left out."""
        return [r for r in self.rows if isinstance(r, AuditRow)]

    def tiered(self, seed: int) -> DetectionRow | None:
        """The tiered audit's row at `seed`, if the study ran one."""
        return next((r for r in self.rows if isinstance(r, DetectionRow) and r.seed == seed), None)
