"""results.json as one typed record: every row (an arm at a seed, the tiered audit, an arm under another sampler)
built from its audits' records, the settings' nulls, the calibration, the controls and the deletion request. The
study checks what it writes against it and the reports read it back as this record; its JSON Schema ships in
`schemas/results-v1.schema.json`.

A results row stays flat: `AuditRow` is its audits' fields side by side plus the arm's identity and typed setting
(`variant`), the adaptive probes against it, and the DP fine-tune's accounting and audit where the arm has them.
What any other mitigation did (its own record: a dedup report, chosen settings, the data it trained on) rides along
as extra keys that the technical report shows as they are; only the mitigation's own words (`describe`) and the cost
columns (`train_seconds`) read them."""

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, ValidationError

from diffaudit.errors import ConfigError, DiffauditError
from diffaudit.study.audit_records import (
    AttackSummary,
    CalibrationRecord,
    DetectionRecord,
    ExtractionRecord,
    LossGap,
    PairedAuc,
    Record,
    VariantRecord,
    invalid_fields,
    json_schema_of,
)
from diffaudit.study.control_records import AdaptiveControl, AdaptiveRecord, DpAudit, DpControl, DpReport, MiaControls
from diffaudit.study.deletion_record import ForgetStudy
from diffaudit.study.findings_record import SettingNull

RESULTS_SCHEMA = 1
RESULTS_JSON_SCHEMA = Path(__file__).parents[1] / "schemas" / f"results-v{RESULTS_SCHEMA}.schema.json"


class AuditRow(ExtractionRecord):
    """One row of results.json (an arm at a training seed, or the same arm under another sampler): its extraction
    record, and its membership, utility and adaptive records where the row measured them (the first seed's headline
    rows). Extra keys are a mitigation's own record."""

    model_config = ConfigDict(extra="allow", frozen=True)

    arm: str
    seed: int
    kind: str
    variant: VariantRecord | None = None  # none for the base
    mia: dict[str, AttackSummary] | None = None
    mia_loss_gap: LossGap | None = None
    mia_paired: dict[str, PairedAuc] | None = None
    split_check_auc: float | None = None
    heldout_loss: float | None = None
    frechet_distance: float | None = None
    utility_prompts: int | None = None
    utility_unet_evaluations: int | None = None
    adaptive: AdaptiveRecord | None = None
    dp: DpReport | None = None  # a DP arm's privacy accounting
    dp_audit: DpAudit | None = None  # and its empirical epsilon

    @property
    def extras(self) -> dict[str, Any]:
        """The mitigation's own record (keys this shape does not name), shown as it is."""
        return dict(self.model_extra or {})


class DetectionRow(DetectionRecord):
    arm: str
    seed: int
    kind: Literal["detection"]


def _row_kind(row: Any) -> str:
    kind = row.get("kind") if isinstance(row, dict) else getattr(row, "kind", None)
    return "detection" if kind == "detection" else "audit"


Row = Annotated[Annotated[AuditRow, Tag("audit")] | Annotated[DetectionRow, Tag("detection")], Discriminator(_row_kind)]


class ResultsRecord(Record):
    """results.json: what every audit of the study measured, as written."""

    schema_version: Literal[1]
    preset: str
    dataset_version: str
    rows: list[Row]
    sampler_rows: list[Row]
    setting_nulls: dict[str, SettingNull]
    calibration: CalibrationRecord
    mia_controls: MiaControls
    dp_controls: dict[str, DpControl]  # by training seed
    adaptive_control: AdaptiveControl | None
    forget: ForgetStudy | None


def results_schema() -> dict:
    """results.json's JSON Schema, as shipped in `RESULTS_JSON_SCHEMA`."""
    return json_schema_of(ResultsRecord)


def checked_rows(rows: list[dict], source: Path | str) -> list[AuditRow | DetectionRow]:
    """`rows` as records when each has a results row's shape; else one line naming the row and the first field that
    is off."""
    out = []
    for row in rows:
        try:
            out.append((DetectionRow if _row_kind(row) == "detection" else AuditRow).model_validate(row))
        except ValidationError as exc:
            raise ConfigError(f"{source}: row {row.get('arm')!r} at seed {row.get('seed')!r} is not a results row "
                              f"({invalid_fields(exc)}); if an older diffaudit wrote it, run `diffaudit study` on the "
                              "run again (its finished steps are reused)") from exc
    return out


def checked_part(record: type[BaseModel], value: dict, what: str) -> dict:
    """`value` when it has `record`'s shape: a part of results.json checked as soon as it is measured, not only when
    the whole file is written at the end."""
    try:
        record.model_validate(value)
    except ValidationError as exc:
        raise DiffauditError(f"{what}: its result does not have the shape of {record.__name__} "
                             f"({invalid_fields(exc)}); nothing was stored for it (a diffaudit defect: please report "
                             "it)") from exc
    return value


def read_results(results: dict, source: Path | str) -> ResultsRecord:
    """`results` as its record, or one line naming the first row or fields that are off."""
    try:
        return ResultsRecord.model_validate(results)
    except ValidationError as exc:
        checked_rows(results.get("rows", []) + results.get("sampler_rows", []), source)  # a row off: named by arm
        raise ConfigError(f"{source}: not a study's results ({invalid_fields(exc)}); run `diffaudit study` on the "
                          "run again (its finished steps are reused)") from exc


def tracked(row: dict) -> tuple[dict, dict]:
    """A results row as MLflow params (who and how: the arm, its setting, the copy test, the model) and metrics
    (every number its records measure, membership per attack and intervals included), read through the row's
    record so MLflow names what results.json names. A mitigation's own numbers (e.g. `train_seconds`) ride along."""
    record = checked_rows([row], "a row to log to MLflow")[0]
    fields = record.model_dump()
    who = ("arm", "seed", "kind", "variant", "setting", "sampler", "guidance", "delta", "model_hash", "detector")
    params = {k: fields[k] for k in who if fields.get(k) is not None}
    metrics = {k: v for k, v in {**fields, **(record.model_extra or {})}.items()
               if k not in who and isinstance(v, int | float) and not isinstance(v, bool)}
    for name in ("extraction_ci", "oracle_ci"):
        if fields.get(name):
            metrics |= {f"{name}_low": fields[name][0], f"{name}_high": fields[name][1]}
    for attack, summary in (fields.get("mia") or {}).items():
        metrics |= {f"mia_{attack}_auc": summary["auc"], f"mia_{attack}_tpr_at_1pct_fpr": summary["tpr_at_1pct_fpr"]}
    return params, {k: v for k, v in metrics.items() if v is not None}
