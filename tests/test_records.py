"""findings.json and results.json's rows are typed records: their shipped JSON Schemas are the code's, a study's
records validate, findings written before the record had a shape are refused in one line that says how to rewrite
them, and a row with a misnamed field is refused naming the row and the field."""

import json
from pathlib import Path

import jsonschema
import pytest

from diffaudit.errors import ConfigError
from diffaudit.layout import RunLayout
from diffaudit.study.findings_record import FINDINGS_SCHEMA, FindingsRecord
from diffaudit.study.records import (
    FINDINGS_JSON_SCHEMA,
    StudyResults,
    checked_findings,
    findings_schema,
)
from diffaudit.study.results_record import (
    RESULTS_JSON_SCHEMA,
    RESULTS_SCHEMA,
    checked_rows,
    read_results,
    results_schema,
    tracked,
)

GOLDEN = Path(__file__).parent / "golden" / "tiny-study-findings.json"  # written before the redesign


def test_the_shipped_findings_schema_is_the_codes() -> None:
    assert json.loads(FINDINGS_JSON_SCHEMA.read_text()) == findings_schema(), \
        "regenerate src/diffaudit/schemas with records.findings_schema()"


def test_a_study_writes_findings_of_the_record_shape(tiny_study_dir: Path) -> None:
    findings = json.loads(RunLayout(tiny_study_dir).findings.read_text())
    jsonschema.validate(findings, json.loads(FINDINGS_JSON_SCHEMA.read_text()))
    assert StudyResults.load(tiny_study_dir).findings == FindingsRecord.model_validate(findings)
    # The record is the file: every key is a field (none dropped), every value read back as written.
    assert StudyResults.load(tiny_study_dir).findings.model_dump(mode="json", exclude_unset=True) == findings


def test_findings_of_an_older_diffaudit_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="older diffaudit; run `diffaudit study`"):
        checked_findings(json.loads(GOLDEN.read_text()), GOLDEN)
    bad = json.loads(GOLDEN.read_text()) | {"schema_version": FINDINGS_SCHEMA}
    with pytest.raises(ConfigError, match="not a findings record"):
        checked_findings(bad, "edited")


def test_the_shipped_results_schema_is_the_codes() -> None:
    assert json.loads(RESULTS_JSON_SCHEMA.read_text()) == results_schema(), \
        "regenerate src/diffaudit/schemas with results_record.results_schema()"


def test_a_study_writes_results_of_the_record_shape(tiny_study_dir: Path) -> None:
    """Every part (rows, controls, the deletion request) validates against the shipped schema, reads back as its
    record, and the record is the file: no key dropped, every value as written."""
    results = json.loads(RunLayout(tiny_study_dir).results.read_text())
    assert results["schema_version"] == RESULTS_SCHEMA
    jsonschema.validate(results, json.loads(RESULTS_JSON_SCHEMA.read_text()))
    assert {r["kind"] for r in results["rows"]} >= {"none", "detection"}
    record = read_results(results, "the tiny study")
    assert record.model_dump(mode="json", exclude_unset=True) == results
    assert record.forget is not None and record.adaptive_control is not None and record.dp_controls
    assert record.mia_controls.positive is not None and record.mia_controls.negative is not None
    assert any(r.adaptive for r in record.rows if r.kind != "detection")


def test_a_part_off_its_record_is_refused_before_it_is_stored(tmp_path: Path) -> None:
    """A step whose result is not its record's shape fails naming the step and the field, and leaves no step file
    for a resumed run to build on."""
    from diffaudit.errors import DiffauditError
    from diffaudit.study.control_records import AdaptiveControl
    from diffaudit.study.runner import _step

    with pytest.raises(DiffauditError, match=r"adaptive-control: its result does not have the shape of "
                                             r"AdaptiveControl \(text"):
        _step(tmp_path, "adaptive-control", lambda: {"passed": True}, record=AdaptiveControl)
    assert not RunLayout(tmp_path).step("adaptive-control").exists()


def test_a_misnamed_control_field_is_refused_naming_it(tiny_study_dir: Path) -> None:
    results = json.loads(RunLayout(tiny_study_dir).results.read_text())
    negative = results["mia_controls"]["negative"]
    broken = results | {"mia_controls": {**results["mia_controls"], "negative": {
        **{k: v for k, v in negative.items() if k != "passed"}, "passd": negative["passed"]}}}
    with pytest.raises(ConfigError, match=r"not a study's results \(mia_controls.negative.passed: Field required"):
        read_results(broken, "edited")
    method = next(iter(results["forget"]["methods"]))
    broken = json.loads(json.dumps(results))
    broken["forget"]["methods"][method]["verification"]["verdict"] = "passed"
    with pytest.raises(ConfigError, match=f"forget.methods.{method}.verification.verdict"):
        read_results(broken, "edited")


def test_a_row_with_a_misnamed_key_is_refused_naming_row_and_field() -> None:
    row = json.loads((GOLDEN.parent / "tiny-study-results.json").read_text())["rows"][0]
    checked_rows([row], "golden")
    broken = {k: v for k, v in row.items() if k != "extraction_rate"} | {"extraction_rat": row["extraction_rate"]}
    with pytest.raises(ConfigError, match=r"row 'base' at seed 0 is not a results row \(extraction_rate"):
        checked_rows([broken], "edited")
    with pytest.raises(ConfigError, match="by_dup.0.hits"):
        checked_rows([row | {"by_dup": [{**row["by_dup"][0], "hits": "four"}]}], "edited")


def test_mlflow_reads_a_row_through_its_record(tiny_study_dir: Path) -> None:
    """Params say who and how, metrics every measured number (membership per attack and intervals included); a row
    that is not a results row is refused rather than logged."""
    rows = json.loads((tiny_study_dir / "results.json").read_text())["rows"]
    base = next(r for r in rows if r["arm"] == "base")
    params, metrics = tracked(base)
    assert params["arm"] == "base" and params["setting"] == base["setting"] and "extraction_rate" not in params
    assert metrics["extraction_rate"] == base["extraction_rate"]
    assert metrics["extraction_ci_high"] == base["extraction_ci"][1]
    assert {f"mia_{a}_auc" for a in base["mia"]} <= set(metrics)
    dedup = next(r for r in rows if r["kind"] == "dedup")
    assert tracked(dedup)[1]["train_seconds"] == dedup["train_seconds"], "a mitigation's own numbers ride along"
    with pytest.raises(ConfigError, match="row 'base' at seed 0 is not a results row .extraction_rate"):
        tracked({**base, "extraction_rate": "high"})
