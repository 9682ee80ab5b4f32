"""The sequential probe with its controls: draws that agree stop confirmed, draws that scatter stop futile, a rule
fitted on one model finds on another every caption the full probe finds, and a rule is refused where it was not
fitted."""

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from diffaudit.attacks.extraction import ExtractionConfig
from diffaudit.attacks.sequential import (
    StoppingRule,
    check_rule,
    decide,
    fit_rule,
    replay,
    seed_order,
    trajectories,
)
from diffaudit.config import PRESETS
from diffaudit.errors import ConfigError
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.prepare import prepare_data
from diffaudit.progress import make_progress
from diffaudit.study.extraction_audit import fit_inputs, most_duplicated_prompts, run_extraction, stopping_rule_from

EDGE = 0.1


def rule(futility: dict[int, float], budget: int = 8, round_size: int = 2, fitted_on: str = "another-model"
         ) -> StoppingRule:
    return StoppingRule(budget=budget, round_size=round_size, confirm=3, edge_threshold=EDGE, compare_size=8,
                        setting="ddim-unclamped-25, guidance 1", futility=futility, fitted_on=fitted_on, quantile=1.0,
                        margin=0.0)


def pool(agree: int, scatter: int, n: int = 8) -> tuple[np.ndarray, pd.DataFrame]:
    """`agree` captions whose draws are one picture (slightly noised), `scatter` captions whose draws are random."""
    rng = np.random.default_rng(0)
    images, prompts = [], []
    for c in range(agree + scatter):
        base = rng.integers(0, 256, (8, 8, 3))
        for _ in range(n):
            own = base + rng.integers(-3, 4, base.shape) if c < agree else rng.integers(0, 256, (8, 8, 3))
            images.append(np.clip(own, 0, 255).astype(np.uint8))
            prompts.append(f"caption {c}")
    return np.stack(images), pd.DataFrame({"prompt": prompts, "seed": list(range(n)) * (agree + scatter)})


def test_agreeing_draws_stop_confirmed_and_scattered_draws_stop_futile() -> None:
    images, index = pool(agree=2, scatter=3)
    paths = trajectories(images, index, list(range(1, 9)), EDGE)
    stops = replay(paths, rule({2: 0.3, 4: 0.3, 6: 0.3})).set_index("prompt")
    assert (stops.loc[["caption 0", "caption 1"], "stop"] == "confirmed").all()
    assert (stops.loc[["caption 0", "caption 1"], "draws"] == 4).all()  # the 3-clique exists at 3, looked at after 4
    assert (stops.loc[["caption 2", "caption 3", "caption 4"], "stop"] == "futile").all()
    assert (stops.loc[["caption 2", "caption 3", "caption 4"], "draws"] == 2).all()
    # Negative control: no futility threshold, so scattered captions draw the whole budget and stop there.
    assert set(replay(paths, rule({})).set_index("prompt").loc[["caption 2", "caption 3"], "stop"]) == {"budget"}
    assert decide(2, 0.05, 8, rule({})) == "budget" and decide(3, 1.0, 2, rule({2: 0.3})) == "confirmed"


def test_leaving_a_picture_out_counts_the_caption_the_rule_would_miss() -> None:
    """Three extracted captions close after 2 draws and one far (its copies come late): fitted on all, none is missed;
    left out in turn, the far one is, and the estimate says so."""
    paths = pd.DataFrame({"prompt": ["a", "b", "c", "late", "never", "a", "b", "c", "late", "never"],
                          "drawn": [2] * 5 + [4] * 5, "clique": [2] * 5 + [3, 3, 3, 3, 1],
                          "closest": [0.05, 0.06, 0.07, 0.4, 0.5] * 2, "copy": [False] * 5 + [True, True, False, True,
                                                                                          False]})
    truth = pd.Series({"a": True, "b": True, "c": True, "late": True, "never": False})
    fitted = fit_rule(paths, truth, pd.Series(truth.index, index=truth.index), rule({}, budget=4))
    assert fitted.futility == {2: 0.4}
    # Left out, "late" stops futile; "c" confirms on a clique without its copy (the full probe's would hold one).
    assert (fitted.miss.missed, fitted.miss.of, fitted.miss.confirmed_without_copy) == (2, 4, 1)
    assert replay(paths, fitted).set_index("prompt").loc["never", "stop"] == "futile"


def test_rule_is_refused_on_the_model_it_was_fitted_on(tiny_pipe: AuditPipeline, tmp_path: Path) -> None:
    setting = "ddim-unclamped-25, guidance 1"
    with pytest.raises(ConfigError, match="fitted on the audited model"):
        check_rule(rule({}, fitted_on=tiny_pipe.model_hash()), tiny_pipe, 8, 3, EDGE, 8, setting)
    with pytest.raises(ConfigError, match="budget N 8, clique 3; this probe asks budget N 16, clique 4"):
        check_rule(rule({}), tiny_pipe, 16, 4, EDGE, 8, setting)
    with pytest.raises(ConfigError, match="drawing"):
        check_rule(rule({}), tiny_pipe, 8, 3, EDGE, 8, "dpmsolver++-10, guidance 1")
    rule({2: 0.3}).save(tmp_path / "rule.json")
    assert StoppingRule.load(tmp_path / "rule.json") == rule({2: 0.3})
    text = (tmp_path / "rule.json").read_text()
    for bad in ('{"budget": 4}', text.replace('"round_size": 2', '"round_size": 2.5'),
                text.replace('"2": 0.3', '"3": 0.3'), text.replace('"margin"', '"margins"')):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(ConfigError, match="bad.json is not a stopping rule"):
            StoppingRule.load(tmp_path / "bad.json")


def test_seed_order_draws_first_the_noises_that_copied_an_extracted_caption() -> None:
    """Copies of extracted captions under seeds 3 (twice) and 1 put those first; a copy of a caption the probe did
    not extract, and a never-trained caption's draws, do not count; the rest keep their natural order."""
    matches = pd.DataFrame({"prompt": ["a", "a", "b", "b", "c", "c"], "seed": [3, 1, 3, 0, 2, 2],
                            "kind": ["own", "own", "own", "none", "own", "own"]})
    extracted = pd.Series({"a": True, "b": True, "c": False})
    assert seed_order(matches, extracted, 4) == [3, 1, 0, 2]
    assert seed_order(matches.iloc[:0], extracted, 4) == [0, 1, 2, 3]
    assert rule({}, budget=4).seeds() == [0, 1, 2, 3]  # a rule written before the order was fitted
    assert StoppingRule(**{**asdict(rule({}, budget=4)), "order": [3, 1, 0, 2]}).seeds() == [3, 1, 0, 2]
    with pytest.raises(ValueError, match="does not hold each of the seeds 0..3 once"):
        StoppingRule(**{**asdict(rule({}, budget=4)), "order": [3, 3, 0, 2]})


RULE = Path(__file__).parents[1] / "benchmarks" / "results" / "sequential_rule.json"
REFERENCE = Path(__file__).parents[1] / "models" / "quick"


def test_sequential_probe_finds_every_caption_the_full_probe_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """The committed quick model (its 64-copy captions copy, its singletons do not) under the rule the benchmark
    fitted on a second training seed (its seed order and thresholds): drawn live in rounds, the sequential probe must
    extract every caption the full probe extracts, for fewer generations. The full probe then shares its folder and
    draws only what is missing."""
    quick = PRESETS["quick"]
    data = prepare_data(quick, tmp_path / "data", make_progress(disable=True))
    ranked = most_duplicated_prompts(data, len(data))
    prompts = pd.concat([ranked.head(2), ranked.tail(2)], ignore_index=True)
    fitted, pipe = StoppingRule.load(RULE), AuditPipeline.from_pretrained(REFERENCE)
    n = quick.extraction.samples_per_prompt
    cfg = ExtractionConfig()
    seq = run_extraction(pipe, data, tmp_path / "seq", prompts, n, 1.0, quick.sample, cfg, rule=fitted)
    full = run_extraction(pipe, data, tmp_path / "full", prompts, n, 1.0, quick.sample, cfg,
                          samples=tmp_path / "seq" / "samples")
    found = set(pd.read_parquet(tmp_path / "full" / "per_prompt.parquet").query("extracted")["prompt"])
    per_prompt = pd.read_parquet(tmp_path / "seq" / "per_prompt.parquet")
    assert 0 < len(found) < len(prompts), "the control needs captions that copy and captions that do not"
    assert found <= set(per_prompt.query("extracted")["prompt"])
    assert seq["unet_evaluations"] < full["unet_evaluations"]
    assert seq["sequential"]["draws"] == per_prompt["generations"].sum() < n * len(prompts)
    assert run_cli(monkeypatch, "stopping-rule", str(tmp_path / "full"), str(tmp_path / "rule.json")) == 0
    refit = StoppingRule.load(tmp_path / "rule.json")
    assert refit.fitted_on == pipe.model_hash() and refit.miss.of == len(found)
    assert sorted(refit.order) == list(range(n))
    assert ", ".join(map(str, refit.order)) in " ".join(capsys.readouterr().out.split())  # rich wraps lines
    with pytest.raises(ConfigError, match="sequential probe"):
        stopping_rule_from(tmp_path / "seq", round_size=2, quantile=1.0, margin=0.1)
    # Another seed order (benchmarks/sequential_orders.py) reorders the draws, never changes the set of all N.
    natural, backwards = (fit_inputs(tmp_path / "full", order)[0].set_index(["prompt", "drawn"])
                          for order in (None, list(range(n))[::-1]))
    whole = [frame.xs(n, level="drawn")[["clique", "closest"]] for frame in (natural, backwards)]
    assert whole[0].equals(whole[1])
    with pytest.raises(ConfigError, match="seed order must hold each of the seeds"):
        fit_inputs(tmp_path / "full", [0, 0, *range(2, n)])
