"""The one ranking of fixes (study.verdicts through study.findings): the owner's check decides, paired by picture,
under every sampler and training seed; a fix that works under one sampler only, or starts as many copies as it
stops, is not a fix."""

from pathlib import Path

import pandas as pd
import pytest

from diffaudit.layout import RunLayout
from diffaudit.study import findings
from diffaudit.study.findings import arm_effects, ranked_fixes

PICTURES = [f"sha{i:02d}" for i in range(16)]
HEAD, OTHER = "ddim-unclamped-25", "dpmsolver++-10"


def _captions(picture: str) -> list[str]:
    return [f"{picture} caption {j}" for j in range(2)]


def _write(run: Path, seed: int, arm: str, sampler: str | None, copied: set[str]) -> None:
    """An arm's per-prompt table: every caption of a copied picture copies it (owner's and outsider's check)."""
    prompts = [c for p in PICTURES for c in _captions(p)]
    hit = [p.split(" ")[0] in copied for p in prompts]
    folder = RunLayout(run).extraction(seed, arm, sampler)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"prompt": prompts, "memorized": hit, "extracted": hit}).to_parquet(folder / "per_prompt.parquet")


VALUES = {"guidance": 3.0, "dp": 8.0}  # the setting of each kind's arm in these tests


def _row(arm: str, kind: str, seed: int, sampler: str, guidance: float, copied: set[str]) -> dict:
    k, n = 2 * len(copied), 2 * len(PICTURES)
    return {"arm": arm, "kind": kind, "seed": seed, "sampler": sampler, "setting": f"{sampler} g{guidance:g}",
            "guidance": guidance, "extraction_rate": k / n, "extraction_ci": [0.0, 1.0], "prompts_with_copy": k,
            "attacked_prompts": n, "oracle_memorized_prompts": k, "frechet_distance": 1.0, "heldout_loss": 1.0,
            "extracted_images": len(copied), "extracted_families": len(copied), "family_prompts": 0,
            "dp": {"calibration_examples": 4}, "dedup": {"member_rows_removed": 2},
            **({} if kind == "none" else {"variant": {"name": arm, "value": VALUES[kind]}})}


def _study(run: Path, arms: dict[str, tuple[str, float, dict[tuple[str, int], set[str]]]]) -> tuple[list, list]:
    """Write a study whose arms copy the given pictures per (sampler, seed); the base is the first entry."""
    rows, sampler_rows = [], []
    for arm, (kind, guidance, copies) in arms.items():
        for (sampler, seed), copied in copies.items():
            headline = sampler == HEAD
            _write(run, seed, arm, None if headline else sampler, copied)
            (rows if headline else sampler_rows).append(_row(arm, kind, seed, sampler, guidance, copied))
    return rows, sampler_rows


@pytest.fixture(autouse=True)
def _pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    pictures = pd.Series({c: p for p in PICTURES for c in _captions(p)})
    monkeypatch.setattr(findings, "pictures_of", lambda run: (pictures, pd.Series({p: p for p in PICTURES})))


BASE = set(PICTURES[:12])


def _verdicts(run: Path, arms: dict, nulls: dict | None = None) -> dict[str, findings.ArmEffect]:
    rows, sampler_rows = _study(run, {"base": ("none", 1.0, {(HEAD, 0): BASE, (OTHER, 0): BASE}), **arms})
    effects, _ = arm_effects(run, rows, sampler_rows, nulls)
    return {e.arm: e for e in effects}


def test_a_setting_that_works_under_one_sampler_only_is_not_a_fix(tmp_path: Path) -> None:
    effects = _verdicts(tmp_path, {
        "guidance-3": ("guidance", 3.0, {(HEAD, 0): set(), (OTHER, 0): BASE}),  # stops all 12 under one sampler only
        "dp-eps8": ("dp", 1.0, {(HEAD, 0): set(), (OTHER, 0): set()}),  # stops all 12 under both: the positive case
    })
    assert effects["guidance-3"].by_sampler[0]["verdict"] == "fewer", "under the headline sampler alone it works"
    assert effects["guidance-3"].worst == "not under every sampler" and not effects["guidance-3"].lowered
    assert effects["dp-eps8"].worst == "fewer" and effects["dp-eps8"].lowered
    assert [e.arm for e in ranked_fixes(list(effects.values()))] == ["dp-eps8"]


def test_a_fix_that_starts_as_many_copies_as_it_stops_is_not_fewer(tmp_path: Path) -> None:
    starts = set(PICTURES[6:12]) | set(PICTURES[12:16]) | set(PICTURES[4:6])  # stops sha00-03, starts sha12-15
    effects = _verdicts(tmp_path, {"dp-eps8": ("dp", 1.0, {(HEAD, 0): starts, (OTHER, 0): starts})})
    e = effects["dp-eps8"]
    assert (e.stopped, e.started) == (4, 4)
    assert e.worst == "no clear change" and not e.lowered
    assert e.started_pictures == PICTURES[12:16], "every picture a fix newly copies is named"


def test_captions_of_one_picture_count_once(tmp_path: Path) -> None:
    """Twelve pictures stopped is clear; the same 24 captions would be too, but two pictures are not."""
    effects = _verdicts(tmp_path, {"dp-eps8": ("dp", 1.0, {(HEAD, 0): BASE - set(PICTURES[:2]),
                                                           (OTHER, 0): BASE - set(PICTURES[:2])})})
    assert effects["dp-eps8"].stopped == 2 and effects["dp-eps8"].worst == "no clear change"


def test_an_invalid_copy_test_is_not_judged(tmp_path: Path) -> None:
    nulls = {f"{HEAD} g1": {"valid": True}, f"{OTHER} g1": {"valid": True}, f"{HEAD} g3": {"valid": False},
             f"{OTHER} g3": {"valid": False}}
    effects = _verdicts(tmp_path, {"guidance-3": ("guidance", 3.0, {(HEAD, 0): set(), (OTHER, 0): set()})}, nulls)
    assert effects["guidance-3"].worst == "not judged"
    assert {t["verdict"] for t in effects["guidance-3"].by_sampler} == {"copy test invalid here"}


def test_a_fix_must_hold_at_every_training_seed(tmp_path: Path) -> None:
    rows, sampler_rows = _study(tmp_path, {
        "base": ("none", 1.0, {(HEAD, 0): BASE, (OTHER, 0): BASE, (HEAD, 1): BASE}),
        "dp-eps8": ("dp", 1.0, {(HEAD, 0): set(), (OTHER, 0): set(), (HEAD, 1): BASE | {PICTURES[15]}})})
    e = {x.arm: x for x in arm_effects(tmp_path, rows, sampler_rows)[0]}["dp-eps8"]
    assert e.seeds[0]["started"] == 1 and e.worst == "not at every seed"
    assert PICTURES[15] in e.started_pictures


def test_switching_the_sampler_undoes_a_setting_and_reference_samplers_stay_out_of_the_verdict(tmp_path: Path) -> None:
    clamped = "ddim-25"
    rows, sampler_rows = _study(tmp_path, {
        "base": ("none", 1.0, {(HEAD, 0): BASE, (OTHER, 0): BASE, (clamped, 0): BASE}),
        "guidance-3": ("guidance", 3.0, {(HEAD, 0): set(), (OTHER, 0): set(), (clamped, 0): BASE})})
    effects, switched = arm_effects(tmp_path, rows, sampler_rows, samplers=[HEAD, OTHER])
    e = effects[0]
    assert [t["sampler"] for t in e.by_sampler] == [HEAD, OTHER], "the reference sampler is not part of the verdict"
    assert {c["sampler"]: c["verdict"] for c in switched} == {OTHER: "holds", clamped: "undone"}
    assert e.worst == "undone" and not e.lowered and e.undone_by == [f"the {clamped} sampler"]


def test_a_sampler_the_arm_was_not_measured_under_blocks_fewer(tmp_path: Path) -> None:
    rows, sampler_rows = _study(tmp_path, {"base": ("none", 1.0, {(HEAD, 0): BASE, (OTHER, 0): BASE}),
                                           "dp-eps8": ("dp", 1.0, {(HEAD, 0): set()})})
    e = arm_effects(tmp_path, rows, sampler_rows, samplers=[HEAD, OTHER])[0][0]
    assert e.by_sampler[1]["verdict"] == "not measured" and e.worst == "partly judged" and not e.lowered


def test_near_misses_count_as_copies_in_the_verdict(tmp_path: Path) -> None:
    """Under strong guidance speckled copies land just above delta: captions with near misses of their own picture and
    no copy count as copied in the test, so an arm that only pushes copies past delta cannot show 'fewer'."""
    rows, sampler_rows = _study(tmp_path, {"base": ("none", 1.0, {(HEAD, 0): BASE, (OTHER, 0): BASE}),
                                           "guidance-7.5": ("guidance", 7.5, {(HEAD, 0): set(), (OTHER, 0): set()})})
    prompts = [c for p in PICTURES[:12] for c in _captions(p)]
    pd.DataFrame({"prompt": prompts, "kind": "none", "own_idx": 1, "nearest_idx": 1, "own_distance": 0.2,
                  "gu_ratio": 0.6}).to_parquet(RunLayout(tmp_path).extraction(0, "guidance-7.5") / "matches.parquet")
    for row in rows + sampler_rows:
        row["delta"] = 0.15
    e = arm_effects(tmp_path, rows, sampler_rows, samplers=[HEAD, OTHER])[0][0]
    assert (e.by_sampler[0]["verdict"], e.by_sampler[0]["arm_pictures"]) == ("no clear change", 12)
    assert e.by_sampler[1]["verdict"] == "fewer"
    assert e.worst == "not under every sampler" and not e.lowered


@pytest.mark.parametrize("lows, split, detectable, alike", [
    ((0.48, 0.51), 0.52, True, True),  # one attack's interval clears 0.5: detectable, whichever attack is strongest
    ((0.30, 0.49), 0.58, False, False),  # every interval covers 0.5; the split check separates the pictures
    ((0.49, 0.50), None, False, None),  # a bound at 0.5 is not above it; no split check was run
])
def test_membership_is_judged_once_from_every_attacks_interval(lows: tuple, split: float | None, detectable: bool,
                                                              alike: bool | None) -> None:
    """Controls of the one membership verdict the memo and technical report read (findings.membership_verdicts)."""
    mia = {f"attack{i}": {"auc": low + 0.1, "auc_ci": [low, low + 0.2]} for i, low in enumerate(lows)}
    rows = [{"arm": "base", "seed": 0, "mia": mia, "split_check_auc": split}, {"arm": "guidance-3", "seed": 0}]
    assert findings.membership_verdicts(rows) == {"base@0": {"detectable": detectable, "by": "attack1",
                                                              "split_alike": alike}}
