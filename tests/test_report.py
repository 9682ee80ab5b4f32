import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from diffaudit.attacks.metrics import clopper_pearson
from diffaudit.config import CARLINI_SAMPLES, SD_DEFAULT_GUIDANCE, TILE_GRID
from diffaudit.io import write_json
from diffaudit.mitigations.registry import describe
from diffaudit.report.memo import MemoWriter, escape_typst, memo_text, pct, signed, write_memo
from diffaudit.report.technical import write_technical
from diffaudit.report.viewer import COLUMNS, extracted_pairs, write_viewer
from diffaudit.study.findings import findings, ranked_fixes
from diffaudit.study.records import ArmEffect, StudyResults


def _floats(value: object) -> list[float]:
    """Every non-integer number in a JSON document (counts are excluded: a count is not a rate)."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _floats(v)]
    if isinstance(value, list):
        return [x for v in value for x in _floats(v)]
    return []


def _flat(text: str) -> str:
    return " ".join(text.replace("−", "-").split())


@pytest.fixture()
def edited_study(tiny_study_dir: Path, tmp_path: Path) -> Path:
    """The tiny study with two arms' extraction counts changed to distinctive values (and its findings recomputed
    from them), so the memo must carry these very numbers through (1 of 6 is 17%; 4 of 6 is 67%)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_study_dir, run)
    results = json.loads((run / "results.json").read_text())
    for row in results["rows"]:
        if row["arm"] in ("base", "dedup-image"):
            row["prompts_with_copy"] = row["extracted_images"] = k = 1 if row["arm"] == "base" else 4
            row["extracted_families"] = 1
            table = run / f"seed{row['seed']}" / row["arm"] / "extraction" / "per_prompt.parquet"
            frame = pd.read_parquet(table)
            frame.assign(extracted=[i < k for i in range(len(frame))]).to_parquet(table, index=False)
    # The deletion's controls as a tested finding needs them (the original fails, a second retrain passes), so the
    # memo carries its paragraph; at the tiny preset's loose delta they need not come out so.
    forget = results["forget"]
    for record in forget["methods"].values():
        record["original_against_reference"] |= {"passed": False, "verdict": "fail", "failed": ["copies"]}
    forget["control"]["verification"] |= {"passed": True, "verdict": "pass", "failed": []}
    (run / "results.json").write_text(json.dumps(results))
    write_json(run / "findings.json", findings(run, results["rows"], results["adaptive_control"],  # as the study would
                                               results["sampler_rows"], results["setting_nulls"],
                                               dp_controls=results["dp_controls"]))
    return run


def test_memo_is_four_pages_and_every_percentage_comes_from_the_results(edited_study: Path) -> None:
    memo = write_memo(edited_study)
    assert memo.pages == 4 and memo.source.read_text().startswith("// diffaudit policy memo")
    text = _flat(memo_text(memo.pdf))
    results = json.loads((edited_study / "results.json").read_text())
    rows = {r["arm"]: r for r in results["rows"] if r.get("kind") != "detection"}
    base = rows["base"]
    computed = json.loads((edited_study / "findings.json").read_text())  # intervals the study computed
    allowed = {pct(x) for x in _floats(results) + _floats(computed)} | {"95%"}
    for arm, r in rows.items():  # rates and intervals recomputed here from the counts, and quality costs
        k, n = r["prompts_with_copy"], r["attacked_prompts"]
        allowed |= {pct(k / n), *map(pct, clopper_pearson(k, n))}
        if arm != "base":
            allowed.add(signed(r["frechet_distance"] / base["frechet_distance"] - 1).replace("−", "-"))
    found = re.findall(r"[-+]?\d+%", text)
    assert found and set(found) <= allowed, set(found) - allowed
    assert "17%" in text and "67%" in text
    assert f"{base['attacked_prompts']} captions from its own training data" in text
    # The PDF typesets the apostrophe, so the sentence is matched on either side of it.
    assert "For 1 caption an outsider" in text and "test confirmed a near-exact copy of the caption" in text
    assert "own training picture: 1 picture of 1 subject" in text
    rows = results["forget"]["methods"]["retrain"]["rows"]
    assert "Deleting on request: retraining without the" in text and f"({rows} training rows," in text
    meta = json.loads((memo.pdf.parent / "memo_meta.json").read_text())
    assert meta["pages"] == 4 and meta["flesch_kincaid_grade"] <= 12, "the memo must read at grade 12 or below"


_VARIANTS = {"guidance-3": {"name": "guidance-3", "value": 3.0}, "dp-eps8": {"name": "dp-eps8", "value": 8.0},
             "dedup-image": {"name": "dedup-image", "value": "image"}}


def _effect(arm: str, kind: str, rate: float, stopped: int, started: int, p: float) -> ArmEffect:
    record = {"dp": {"calibration_examples": 4}, "dedup": {"member_rows_removed": 2}}
    worst = "no clear change" if p >= 0.05 else "fewer" if stopped > started else "more"
    return ArmEffect(arm=arm, kind=kind, rate=rate, ci_low=0.0, ci_high=1.0, extracted=1, prompts=6, stopped=stopped,
                     started=started, p_value=p, frechet_change=0.1, loss_change=0.0, train_seconds=0.0, base_rate=0.5,
                     description=describe({"kind": kind, "arm": arm, "variant": _VARIANTS[arm], **record}), worst=worst)


def _decided(monkeypatch: pytest.MonkeyPatch, effects: list[ArmEffect]) -> None:
    """The study's findings hold these effects, ranked as `findings` ranks them."""
    monkeypatch.setattr(StudyResults, "effects", lambda self: effects)
    monkeypatch.setattr(StudyResults, "ranked", lambda self: ranked_fixes(effects))


def test_recommendations_follow_the_paired_tests(tiny_study_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    works = _effect("guidance-3", "guidance", 0.1, 5, 0, 0.01)
    worse = _effect("dp-eps8", "dp", 0.9, 0, 6, 0.01)
    noise = _effect("dedup-image", "dedup", 0.4, 1, 1, 1.0)
    _decided(monkeypatch, [works, worse, noise])
    attacked = MemoWriter(StudyResults.load(tiny_study_dir))
    assert attacked.under_attack("guidance-3").startswith("undone by the model file, same as no fix"), \
        "the weights holder undoes a setting by construction"
    assert "Do not rely on these alone" in " ".join(attacked.recommendations())
    monkeypatch.setattr(MemoWriter, "attack_cells", lambda self, arm: [])  # ranking alone, as if no probe ran
    recs = " ".join(MemoWriter(StudyResults.load(tiny_study_dir)).recommendations())
    assert "Adopt the most durable fix that worked here: stronger guidance (scale 3)" in recs, recs
    assert "none once the model file is released" in recs, "a setting is recommended with its limits"
    assert "Avoid private fine-tuning (epsilon 8)" in recs and "remove repeated pictures" not in recs.lower()
    data_fix = _effect("dedup-image", "dedup", 0.2, 4, 0, 0.01)
    _decided(monkeypatch, [works, data_fix])
    recs = MemoWriter(StudyResults.load(tiny_study_dir)).recommendations()
    assert recs[0].startswith("Adopt the most durable fix that worked here: remove repeated pictures"), \
        "a fix in the training data ranks above a lower rate from a sampling setting"
    assert recs[1].startswith("Also effective: stronger guidance")
    _decided(monkeypatch, [noise])
    writer = MemoWriter(StudyResults.load(tiny_study_dir))
    assert writer.recommendations()[0].startswith("Do not rely on any one of these fixes")
    assert any(row["change"] == "1 / 1: no clear change (p = 1.00)" for row in writer.table())
    assert writer.best_fix().startswith("None of the fixes we tried")


def test_typst_markup_in_text_is_escaped(tmp_path: Path) -> None:
    import typst

    raw = "a_b #c $d$ <e> @f // g [h] *i* = j"
    (tmp_path / "t.pdf").write_bytes(typst.compile(f"#set page(width: 20cm)\n{escape_typst(raw)}".encode()))
    assert _flat(memo_text(tmp_path / "t.pdf")) == raw


def test_missing_results_are_named(tmp_path: Path) -> None:
    from diffaudit.errors import ConfigError

    with pytest.raises(ConfigError, match="results.json"):
        StudyResults.load(tmp_path)


def test_technical_report_lists_every_arm_and_assumption(tiny_study_dir: Path, tmp_path: Path) -> None:
    page = write_technical(tiny_study_dir, tmp_path / "tech.html").read_text()
    res = StudyResults.load(tiny_study_dir)
    for row in res.audited():
        assert f"Arm {row.arm} (seed {row.seed})" in page
    for a in res.assumptions:
        assert a["item"] in page
    assert "data:image/png;base64," in page and "Tiered detection" in page


def test_viewer_sorts_and_filters_in_a_real_browser(tiny_study_dir: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    res = StudyResults.load(tiny_study_dir)
    rows = extracted_pairs(res)
    assert rows, "the loosened tiny study extracts every prompt"
    page_path = write_viewer(tiny_study_dir, tmp_path / "viewer.html")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page()
        page.goto(page_path.as_uri())
        outsider = [r for r in rows if r["outsider"]]
        images = {(r["arm"], r["seed"], r["train_id"]) for r in outsider}
        assert page.locator("#pairs tbody tr").count() == len(images), "grouped: one row per model and picture"
        assert page.locator("#pictures").inner_text() == str(len({r["train_id"] for r in outsider})), \
            "distinct pictures are counted apart from model x picture rows"
        assert page.locator("#legend dt").count() == len(COLUMNS) and "sibling" in page.locator("#legend").inner_text()
        assert page.locator("#legend").bounding_box()["y"] < page.locator("#pairs").bounding_box()["y"], \
            "the legend comes before the table"
        names = {e.arm: e.description.title for e in res.effects()}
        assert names and set(names.values()) <= {r["arm"] for r in rows} and "No fix" in page.content(), \
            "fixes are named as the memo names them"
        page.uncheck("#f-group")
        assert page.locator("#pairs tbody tr").count() == len(outsider)
        page.select_option("#f-view", "owner")
        assert page.locator("#pairs tbody tr").count() == sum(r["owner"] for r in rows) > 0
        page.select_option("#f-view", "outsider")
        page.locator("th", has_text="tiled RMS distance").click()  # already ascending: now descending
        shown = [float(t) for t in page.locator("td[data-key=distance]").all_inner_texts()]
        assert shown == sorted(shown, reverse=True)
        arm = outsider[0]["arm"]
        page.select_option("#f-arm", arm)
        assert page.locator("#pairs tbody tr").count() == sum(r["arm"] == arm for r in outsider)
        page.fill("#f-prompt", "no prompt has this text")
        assert page.locator("#pairs tbody tr").count() == 0
        page.fill("#f-prompt", "")
        assert page.locator("img").first.evaluate("img => img.naturalWidth") > 0
        page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
        browser.close()
    assert (tmp_path / "viewer.png").stat().st_size > 0


def test_technical_report_fits_1400px_with_formatted_numbers(tiny_study_dir: Path, tmp_path: Path) -> None:
    """Issue 15: the report fits a 1400 px window in Chromium, prints no NaN, no raw JSON and no long floats, lists
    lower bounds before upper ones and opens with a prose summary."""
    import re

    out = write_technical(tiny_study_dir, tmp_path / "report.html")
    page_html = out.read_text()
    text = re.sub(r"<[^>]+>", " ", re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page_html))
    assert not re.search(r"\bnan\b", text, re.IGNORECASE) and "<pre" not in page_html
    long = re.findall(r"\b(?:0\.0*[1-9]\d{3,}|[1-9]\d*\.\d{4,})\b", text)  # more than 3 significant digits
    assert not long, long[:5]
    assert "pooled over seeds" not in text, "one seed: nothing is pooled"
    assert re.findall(r"<h2[^>]*>([^<]+)</h2>", page_html)[0] == "Summary"
    assert "With no fix, the black-box probe extracted" in text
    heads = re.findall(r"<th>(ci_low|ci_high)</th>", page_html)
    assert heads and all(a == "ci_low" for a in heads[::2]), "lower bound first"
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(out.as_uri())
        assert page.evaluate("document.documentElement.scrollWidth") <= 1400
        browser.close()


def test_page_one_states_scope_intervals_floor_and_ceiling(tiny_study_dir: Path, tmp_path: Path) -> None:
    """Issue 15: a reader who stops after page 1 sees what was tested, the outsider's floor and the owner's ceiling
    with 95% ranges, and the caveats."""
    import pypdf

    memo = write_memo(tiny_study_dir, tmp_path / "memo")
    page1 = _flat(pypdf.PdfReader(memo.pdf).pages[0].extract_text())
    res = StudyResults.load(tiny_study_dir)
    base = res.row("base")
    for needed in ("What was tested", f"{res.config.data.resolution}×{res.config.data.resolution}-pixel",
                   "training run", f"{res.config.extraction.samples_per_prompt} tries each",
                   f"below {base.delta:g}", "never saw", "An outsider who can only ask for pictures",
                   f"finds copies for {base.oracle_memorized_prompts} of {base.attacked_prompts} captions",
                   "What helped most", f"made at guidance scale {base.guidance:g}",
                   "Read with care", "not for large deployed models"):
        assert needed in page1, needed
    assert page1.count("95% range") >= 3, "floor, ceiling and the null each carry an interval"
    extent = res.findings.oracle_extent[str(base.seed)]
    assert f"{extent.images} picture" in page1 and f"{extent.families} subject" in page1, \
        "the owner's ceiling is counted in pictures and subjects too"
    assert "questions to ask" in _flat(memo_text(memo.pdf))


UNITS = ("caption", "picture", "subject", "tries", "training entries", "training rows", "training run", "model steps")
CONSTANTS = {"0", "1", "100", "0.50", "1.00", "95", "95%", str(CARLINI_SAMPLES), f"{SD_DEFAULT_GUIDANCE:g}",
             str(TILE_GRID)}


def _spellings(value: object) -> set[str]:
    """Every way the memo may print a stored number: counts, shares, scores, p-values, settings."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return set()
    out = {f"{value:g}", f"{value:,}", f"{value:.2f}", f"{value:.3f}", pct(value), pct(value)[:-1], signed(value)}
    return out | ({str(value)} if isinstance(value, int) else set())


def _numbers(value: object) -> list:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [value]


def test_every_number_in_the_memo_comes_from_a_result_file(edited_study: Path) -> None:
    """Issue 15: each number printed in the memo is one the study wrote (results, findings, the run's config) or a
    named published constant, and every sentence that counts something names what it counts."""
    memo = write_memo(edited_study)
    res = StudyResults.load(edited_study)
    stored = _numbers([json.loads((edited_study / n).read_text()) for n in ("results.json", "findings.json")])
    stored += _numbers(res.config.model_dump(mode="json"))
    effects = res.effects()
    stored += [len(effects), len(effects) - 1, *(round(e.train_seconds / 60) for e in effects)]
    stored += [round(s / 60) for s in [res.forget.reference_seconds, *(r.seconds for r in res.forget.methods.values())]]
    allowed = CONSTANTS | {s for v in stored for s in _spellings(v)}
    run_id = res.record["hashes"]["base_model"][:8]
    body = [ln.replace(run_id, "") for ln in memo_text(memo.pdf).splitlines()
            if not ln.startswith("diffaudit memo ·") and not re.fullmatch(r"\d of \d", ln.strip())]
    text = _flat(" ".join(body))
    for label in {b.dup_bucket for r in res.audited() for b in r.by_dup}:  # labels such as "16-31"
        text = text.replace(f"{label} time", " time")
    printed = re.findall(r"[-+]?\d[\d,]*(?:\.\d+)?%?", text.replace("×", " "))
    untraced = {n.rstrip(",") for n in printed} - allowed
    assert printed and not untraced, untraced
    for sentence in re.split(r"(?<=[.:;])\s", text):
        if re.search(r"\b\d[\d,]* of \d[\d,]*\b", sentence) and "of 4" not in sentence:
            assert any(u in sentence for u in UNITS), f"a count without its unit: {sentence!r}"


def test_verdicts_page_renders_every_arm_sampler_and_setting(tiny_study_dir: Path) -> None:
    from diffaudit.report.verdicts import verdicts_markdown

    res = StudyResults.load(tiny_study_dir)
    page = verdicts_markdown(res)
    for row in res.audited() + res.sampler_rows:
        assert f"| {row.arm} |" in page and row.sampler in page
    for tag in res.findings.setting_nulls:
        assert f"| {tag} |" in page
    assert page.rstrip().endswith(".") and "Ranking" in page


def test_verdicts_page_pools_the_training_seeds(tiny_study_dir: Path) -> None:
    """With a second training seed the page adds the pooled table: every arm's pooled owner's rate, read from its
    record (the tiny study has one seed, so its cells are given a second)."""
    import dataclasses

    from diffaudit.report.verdicts import verdicts_markdown

    res = StudyResults.load(tiny_study_dir)
    f = res.findings
    cells = f.cells + [c.model_copy(update={"seed": 1}) for c in f.cells]
    page = verdicts_markdown(dataclasses.replace(res, findings=f.model_copy(update={"cells": cells})))
    assert "| seed 0 | seed 1 | pooled owner's rate (95%) |" in page
    for a in f.arms:
        assert f"| {a.arm} |" in page and f"| {100 * a.owner_rate:.0f}% (" in page


def test_memo_pools_the_owners_count_over_seeds(tiny_study_dir: Path) -> None:
    """Over several seeds the owner's count on page 1 is the pooled arm's (its record), not the first seed's row."""
    import dataclasses

    from diffaudit.report.memo import MemoWriter

    res = StudyResults.load(tiny_study_dir)
    f = res.findings
    arms = [a.model_copy(update={"seeds": 2, "owner_images": 7, "owner_families": 5}) if a.arm == "base" else a
            for a in f.arms]
    text = MemoWriter(dataclasses.replace(res, findings=f.model_copy(update={"arms": arms}))).floor_ceiling()
    base = res.pooled("base")
    assert f"copies for {base.owner_prompts} of {base.prompts} captions" in text
    assert text.endswith("7 pictures of 5 subjects.")


@pytest.mark.parametrize("samplers, seeds, probes, forget, listed", [
    (2, 3, ["paraphrase"], True, None),
    (1, 3, ["paraphrase"], True, "a second sampler"),
    (1, 1, ["paraphrase"], True, "a second sampler or a second training run"),
    (1, 1, [], False, "a second sampler, a second training run, harder attacks against the fixes or a deletion "
                      "request"),
])
def test_a_reduced_run_says_what_it_left_out(samplers: int, seeds: int, probes: list, forget: bool,
                                             listed: str | None) -> None:
    from types import SimpleNamespace

    from diffaudit.report.memo import MemoWriter

    config = SimpleNamespace(study=SimpleNamespace(samplers=[{}] * samplers), adaptive=SimpleNamespace(probes=probes),
                             forget=SimpleNamespace(in_study=forget))
    writer = SimpleNamespace(config=config, res=SimpleNamespace(seeds=list(range(seeds))))
    said = MemoWriter.left_out(writer)
    assert said == ([] if listed is None else [f"This was a reduced run: it did not include {listed}. The whole study "
                                               "does (diffaudit demo --preset quick)."])
