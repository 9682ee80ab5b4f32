"""The scorecard: its shipped JSON Schema is the one the code writes, a card from a study validates against it, and
`--verify` passes an honest card and fails a tampered one (a weight file's digest, a caption's verdict)."""

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from diffaudit.cli import app
from diffaudit.errors import ConfigError
from diffaudit.layout import RunLayout
from diffaudit.study import scorecard

EXAMPLE = Path(__file__).parents[1] / "docs" / "example" / "scorecard.json"


def test_the_shipped_schema_is_the_one_the_code_writes() -> None:
    assert json.loads(scorecard.SCHEMA.read_text()) == scorecard.json_schema(), \
        "regenerate src/diffaudit/schemas with scorecard.json_schema()"
    jsonschema.validate(json.loads(EXAMPLE.read_text()), scorecard.json_schema())


@pytest.fixture(scope="module")
def card(tiny_study_dir: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("card")
    result = CliRunner().invoke(app, ["scorecard", str(tiny_study_dir), "--model", str(tiny_model_dir),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "scorecard.json"


def test_a_study_card_validates_and_says_what_was_measured(card: Path, tiny_study_dir: Path) -> None:
    raw = json.loads(card.read_text())
    jsonschema.validate(raw, json.loads(scorecard.SCHEMA.read_text()))
    loaded = scorecard.load_card(card)
    base = next(r for r in json.loads(RunLayout(tiny_study_dir).results.read_text())["rows"] if r["arm"] == "base")
    assert loaded.extraction.owner_captions.count == base["oracle_memorized_prompts"]
    assert loaded.extraction.outsider_captions.count == base["prompts_with_copy"]
    assert len(loaded.captions) == base["attacked_prompts"] and len(loaded.data_sha256) == 64
    assert {f.arm for f in loaded.fixes} and all(len(d) == 64 for d in loaded.model_files.values())
    assert "## Memorization and privacy" in (card.parent / "scorecard.md").read_text()


def _verify(card: Path, model: Path, data: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["scorecard", "--verify", str(card), str(model), str(data), "--captions", "6",
                                      "--device", "cpu"])
    return result.exit_code, result.output


def test_verify_passes_the_honest_card_and_fails_tampered_ones(card: Path, tiny_study_dir: Path, tiny_model_dir: Path,
                                                               tmp_path: Path) -> None:
    data = RunLayout(tiny_study_dir).data
    code, output = _verify(card, tiny_model_dir, data)
    assert code == 0 and "card verified" in output, output
    raw = json.loads(card.read_text())
    weights = next(k for k in raw["model_files"] if k.endswith(".safetensors"))
    digest = dict(raw, model_files=raw["model_files"] | {weights: "0" * 64})
    (tmp_path / "digest.json").write_text(json.dumps(digest))
    code, output = _verify(tmp_path / "digest.json", tiny_model_dir, data)
    assert code == 1 and "DIFFER" in output and weights in output
    # Every caption of the loose tiny study copies (delta 1.0). A card claiming none did, consistent with itself (its
    # count edited too) and with every distance put just above delta, is caught by the re-run's distances.
    delta = raw["rerun"]["delta"]
    claims = dict(raw, captions=[c | {"copied": False, "min_distance": delta} for c in raw["captions"]])
    claims["extraction"]["owner_captions"] |= {"count": 0, "rate": 0.0}
    (tmp_path / "claims.json").write_text(json.dumps(claims))
    code, output = _verify(tmp_path / "claims.json", tiny_model_dir, data)
    assert code == 1 and "NOT verified" in output and "contradicts itself" not in output, output
    claims["tolerance"] = {"distance": 10.0, "share": 1.0}  # the verifier keeps its own tolerance
    (tmp_path / "lenient.json").write_text(json.dumps(claims))
    code, output = _verify(tmp_path / "lenient.json", tiny_model_dir, data)
    assert code == 1 and "NOT verified" in output


def test_a_card_that_contradicts_itself_fails(card: Path) -> None:
    loaded = scorecard.load_card(card)
    assert scorecard.inconsistencies(loaded) == []
    first = loaded.captions[0]
    edited = loaded.model_copy(update={"captions": [first.model_copy(update={"copied": not first.copied}),
                                                    *loaded.captions[1:]]})
    problems = scorecard.inconsistencies(edited)
    assert any("owner_captions.count" in p for p in problems) and any(first.prompt in p for p in problems)


def test_a_card_of_another_version_or_shape_is_refused(card: Path, tmp_path: Path) -> None:
    raw = json.loads(card.read_text())
    (tmp_path / "v2.json").write_text(json.dumps(raw | {"schema_version": 2}))
    with pytest.raises(ConfigError, match="schema version 2"):
        scorecard.load_card(tmp_path / "v2.json")
    (tmp_path / "extra.json").write_text(json.dumps(raw | {"verdict": "safe"}))
    with pytest.raises(ConfigError, match="not a valid scorecard"):
        scorecard.load_card(tmp_path / "extra.json")
    (tmp_path / "empty.json").write_text(json.dumps(raw | {"captions": []}))
    with pytest.raises(ConfigError, match="not a valid scorecard"):
        scorecard.load_card(tmp_path / "empty.json")
    missing = {k: v for k, v in raw.items() if k != "schema_version"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(missing, scorecard.json_schema())


def test_a_card_is_refused_for_a_model_the_run_did_not_audit(tiny_study_dir: Path, tiny_sd_dir: Path) -> None:
    with pytest.raises(ConfigError, match="not the model this run audited"):
        scorecard.build_card(tiny_study_dir, tiny_sd_dir)
