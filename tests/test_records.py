"""findings.json is a typed record: its shipped JSON Schema is the code's, a study's findings validate, and findings
written before the record had a shape are refused in one line that says how to rewrite them."""

import json
from pathlib import Path

import jsonschema
import pytest

from diffaudit.errors import ConfigError
from diffaudit.layout import RunLayout
from diffaudit.study.records import FINDINGS_JSON_SCHEMA, StudyResults, checked_findings, findings_schema

GOLDEN = Path(__file__).parent / "golden" / "tiny-study-findings.json"  # written before the redesign


def test_the_shipped_findings_schema_is_the_codes() -> None:
    assert json.loads(FINDINGS_JSON_SCHEMA.read_text()) == findings_schema(), \
        "regenerate src/diffaudit/schemas with records.findings_schema()"


def test_a_study_writes_findings_of_the_record_shape(tiny_study_dir: Path) -> None:
    findings = json.loads(RunLayout(tiny_study_dir).findings.read_text())
    jsonschema.validate(findings, json.loads(FINDINGS_JSON_SCHEMA.read_text()))
    assert StudyResults.load(tiny_study_dir).findings == findings


def test_findings_of_an_older_diffaudit_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="older diffaudit; run `diffaudit study`"):
        checked_findings(json.loads(GOLDEN.read_text()), GOLDEN)
    bad = json.loads(GOLDEN.read_text()) | {"schema_version": 2}
    with pytest.raises(ConfigError, match="not a findings record"):
        checked_findings(bad, "edited")
