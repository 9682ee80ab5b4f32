"""What a study showed, as decisions drawn from its numbers: which mitigation changed extraction beyond
chance (exact paired test on the same prompts), at what utility cost, and whether copying rises with
duplication. The study writes them to `findings.json`; the memo and reports only read that file, so no sentence
can claim more than the study computed."""

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from diffaudit.attacks.adaptive.registry import CONTROLLED, PROBES
from diffaudit.attacks.copies import near_misses
from diffaudit.attacks.extraction import distinct_copies
from diffaudit.attacks.metrics import clopper_pearson, mcnemar_p, strongest_attack
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.errors import DiffauditError
from diffaudit.layout import RunLayout
from diffaudit.mitigations.dp_audit import SANITY
from diffaudit.mitigations.registry import describe
from diffaudit.study.findings_record import FINDINGS_SCHEMA
from diffaudit.study.records import ALPHA, ArmEffect, by_dup
from diffaudit.study.verdicts import (
    DURABILITY,
    Cell,
    by_picture,
    cluster_interval,
    counts,
    holm,
    sampler_tests,
    seed_checks,
    switch_sampler,
    worst_case,
)

# The model-free split check's AUC this close to 0.5 reads as "the member and held-out pictures look alike".
SPLIT_ALIKE = 0.05


def per_prompt(run: Path, seed: int, arm: str, sampler: str | None = None) -> pd.DataFrame:
    path = RunLayout(run).extraction(seed, arm, sampler) / "per_prompt.parquet"
    if not path.exists():
        raise DiffauditError(f"{path} is missing: the run's arm {arm!r} (seed {seed}) did not finish its extraction")
    return pd.read_parquet(path).set_index("prompt")


def _relative(new: float, old: float) -> float:
    return new / old - 1 if old and np.isfinite(old) and np.isfinite(new) else float("nan")


def pictures_of(run: Path) -> tuple[pd.Series, pd.Series]:
    """Each training caption's picture (its most frequent own image, by content hash) and each picture's name (its
    first caption): the unit that verdicts pair and resample by."""
    members = load_imagefolder(RunLayout(run).data).split("member").table
    picture = members.groupby("text")["sha256"].agg(lambda x: x.value_counts().index[0])
    caption = picture.reset_index().groupby("sha256")["text"].min()
    return picture, caption + " (" + caption.index.str[:8] + ")"


def missed_captions(folder: Path, delta: float | None) -> frozenset[str]:
    """Captions whose generations came near their own picture (attacks.copies.near_misses, without the Gu ratio: under
    strong guidance speckle inflates every tiled distance, so no ratio is small) and never copied it."""
    path = folder / "matches.parquet"
    if delta is None or not path.exists():
        return frozenset()
    m = pd.read_parquet(path, columns=["prompt", "kind", "own_idx", "nearest_idx", "own_distance", "gu_ratio"])
    near = set(m.loc[near_misses(m, delta, ratio=None), "prompt"])
    return frozenset(near - set(m.loc[m["kind"] == "own", "prompt"]))


def cells(run: Path, rows: list[dict], sampler_rows: list[dict]) -> list[Cell]:
    """Every (arm, sampler, seed) measured: the headline rows and the other samplers' rows."""
    out = []
    for row, other in [(r, False) for r in rows] + [(r, True) for r in sampler_rows]:
        if row.get("kind") == "detection":
            continue
        folder = RunLayout(run).extraction(row["seed"], row["arm"], row["sampler"] if other else None)
        table = per_prompt(run, row["seed"], row["arm"], row["sampler"] if other else None).reset_index()
        out.append(Cell(row["arm"], row["kind"], row.get("sampler", "headline"), row["seed"], row.get("setting", ""),
                        table, row.get("frechet_distance", float("nan")), missed_captions(folder, row.get("delta"))))
    return out


def pooled_arms(run: Path, rows: list[dict], pictures: pd.Series | None = None) -> pd.DataFrame:
    """One row per arm under the headline sampler, pooled over the seeds it was measured at: the outsider's and the
    owner's caption rates with 95% intervals from a cluster bootstrap over pictures stratified by seed (captions of one
    picture are not independent), the per-seed spread, and distinct pictures and subjects: over several seeds a
    picture copied at two seeds is one picture (counted by the caption's picture, as the verdicts pair)."""
    pictures = pictures_of(run)[0] if pictures is None else pictures
    members = load_imagefolder(RunLayout(run).data).split("member").table
    family = members.drop_duplicates("sha256").set_index("sha256")["family"]

    def distinct(tables: list[pd.DataFrame], who: str) -> tuple[int, int]:
        copied = set().union(*(t.index[t[who]] for t in tables))
        return len(copied), family.reindex(list(copied)).nunique()

    out = []
    for arm, group in pd.DataFrame([r for r in rows if r.get("kind") != "detection"]).groupby("arm", sort=False):
        tables = [by_picture(per_prompt(run, int(seed), str(arm)).reset_index(), pictures) for seed in group["seed"]]
        k, n = int(group["prompts_with_copy"].sum()), int(group["attacked_prompts"].sum())
        owner = int(group["oracle_memorized_prompts"].sum())
        mia = [strongest_attack(m)[1] for m in group.get("mia", pd.Series(dtype=object)) if isinstance(m, dict) and m]
        low, high = cluster_interval(tables, "outsider_captions")
        out.append({"arm": arm, "kind": group["kind"].iloc[0], "guidance": group["guidance"].iloc[0],
                    "extracted": k, "prompts": n, "rate": k / n, "ci_low": low, "ci_high": high,
                    "owner_prompts": owner, "owner_rate": owner / n,
                    "owner_ci": cluster_interval(tables, "owner_captions"),
                    "owner_pictures": [int(t["owner"].sum()) for t in tables], "pictures": len(tables[0]),
                    **dict(zip(("images", "families"), distinct(tables, "outsider") if len(tables) > 1 else (
                        int(group["extracted_images"].sum()), int(group["extracted_families"].sum())), strict=True)),
                    **dict(zip(("owner_images", "owner_families"), distinct(tables, "owner"), strict=True)),
                    "family_prompts": int(group["family_prompts"].sum()),
                    "seed_list": group["seed"].astype(int).tolist(),
                    "seed_min": group["extraction_rate"].min(), "seed_max": group["extraction_rate"].max(),
                    "owner_seed_min": float((group["oracle_memorized_prompts"] / group["attacked_prompts"]).min()),
                    "owner_seed_max": float((group["oracle_memorized_prompts"] / group["attacked_prompts"]).max()),
                    "mia_auc": float(np.mean([m["auc"] for m in mia])) if mia else None,
                    "frechet_distance": group["frechet_distance"].mean() if "frechet_distance" in group else None,
                    "heldout_loss": group["heldout_loss"].mean() if "heldout_loss" in group else None,
                    "seeds": len(group),
                    "train_seconds": group.get("train_seconds", pd.Series([0.0])).fillna(0).mean()})
    return pd.DataFrame(out)


def arm_effects(run: Path, rows: list[dict], sampler_rows: list[dict] | None = None,
                nulls: dict[str, dict] | None = None, adaptive: list[dict] | None = None,
                samplers: list[str] | None = None, pictures: tuple[pd.Series, pd.Series] | None = None,
                ) -> tuple[list[ArmEffect], list[dict]]:
    """Every mitigation arm against the base (study.verdicts), and the switch-the-sampler probe's cells. `samplers`
    are the default samplers a verdict must hold under (study.samplers' keys, the headline first); by default those
    every arm was measured under."""
    sampler_rows = sampler_rows or []
    seeds = sorted({r["seed"] for r in rows})
    first = next(r["seed"] for r in rows if r["arm"] == "base")
    headline = next(r.get("sampler", "headline") for r in rows if r["arm"] == "base" and r["seed"] == first)
    measured = cells(run, rows, sampler_rows)
    if samplers is None:
        arms = {c.arm for c in measured if c.seed == first}
        samplers = [s for s in dict.fromkeys([headline, *(c.sampler for c in measured)])
                    if all(any(c.arm == a and c.sampler == s and c.seed == first for c in measured) for a in arms)]
    null_ok = {tag: bool(v["valid"]) for tag, v in (nulls or {}).items()}  # none: older runs judge every setting
    valid = {(c.arm, c.sampler, c.seed): null_ok.get(c.setting, not nulls) for c in measured}
    pictures, labels = pictures or pictures_of(run)
    tests = sampler_tests(measured, pictures, labels, valid, samplers, first)
    replicate = seed_checks(measured, pictures, labels, headline, first)
    first_rows = {r["arm"]: r for r in rows if r["seed"] == first and r.get("kind") != "detection"}
    settings_only = {a for a, r in first_rows.items() if a != "base" and describe(r).lasts == "setting"}
    switched = switch_sampler(measured, pictures, labels, valid, headline, first, settings_only)
    base = first_rows["base"]
    base_cell = counts(next(c for c in measured if c.arm == "base" and c.seed == first and c.sampler == headline),
                       pictures)
    out = []
    for arm, row in first_rows.items():
        if arm == "base":
            continue
        cell = counts(next(c for c in measured if c.arm == arm and c.seed == first and c.sampler == headline), pictures)
        by_sampler = tests.get(arm, [])
        head = next((t for t in by_sampler if t["sampler"] == headline), {"stopped": 0, "started": 0,
                                                                           "p_value": float("nan")})
        undone = sorted({f"{c['probe']} probe" for c in (adaptive or []) if c["arm"] == arm
                         and c["verdict"] in ("undone", "same as no fix")}
                        | {f"the {c['sampler']} sampler" for c in switched if c["arm"] == arm
                           and c["verdict"] == "undone"})
        seeds_of_arm = replicate.get(arm, [])
        out.append(ArmEffect(
            arm=arm, kind=row["kind"], rate=row["prompts_with_copy"] / row["attacked_prompts"],
            ci_low=row["extraction_ci"][0],
            ci_high=row["extraction_ci"][1], extracted=row["prompts_with_copy"], prompts=row["attacked_prompts"],
            stopped=head["stopped"], started=head["started"], p_value=head["p_value"],
            frechet_change=_relative(row.get("frechet_distance", np.nan), base.get("frechet_distance", np.nan)),
            loss_change=_relative(row.get("heldout_loss", np.nan), base.get("heldout_loss", np.nan)),
            train_seconds=float(row.get("train_seconds", 0.0) or 0.0), description=describe(row),
            base_rate=base["prompts_with_copy"] / base["attacked_prompts"], owner_prompts=cell["owner_prompts"],
            owner_rate=cell["owner_rate"],
            owner_ci_low=cell["owner_ci"][0], owner_ci_high=cell["owner_ci"][1],
            base_owner_rate=base_cell["owner_rate"], pictures=cell["pictures"],
            owner_pictures=cell["owner_pictures"], base_owner_pictures=base_cell["owner_pictures"],
            worst=worst_case(by_sampler, seeds_of_arm, undone, replicated=bool(seeds_of_arm) or len(seeds) == 1),
            by_sampler=by_sampler, seeds=seeds_of_arm, undone_by=undone,
            started_pictures=sorted({p for t in [*by_sampler, *seeds_of_arm] if t.get("valid", True)
                                     for p in t["started_pictures"]}),
            seed_note="" if seeds_of_arm or len(seeds) == 1 else f"training seed {first} only"))
    return out, switched


def ranked_fixes(effects: list[ArmEffect]) -> list[ArmEffect]:
    """The one ranking: fixes whose verdict holds in the worst case (study.verdicts), the most durable first (where
    the fix lives), then the fewest pictures copied under the worst sampler, then the smaller quality cost."""
    def worst_pictures(e: ArmEffect) -> int:
        return max([e.owner_pictures] + [t["arm_pictures"] for t in e.by_sampler if t["valid"]])

    return sorted((e for e in effects if e.lowered),
                  key=lambda e: (DURABILITY.get(e.description.lasts, 1), worst_pictures(e), e.frechet_change))


def best_arm(effects: list[ArmEffect]) -> ArmEffect | None:
    """The most durable fix that worked (`ranked_fixes`), or None when none held."""
    return next(iter(ranked_fixes(effects)), None)


def oracle_extent(run: Path, seed: int) -> dict:
    """The owner's ceiling in pictures and subjects: distinct training images (and families) that some generation of
    the base model copies as its caption's own image, whether or not the black-box probe flagged it."""
    layout = RunLayout(run)
    matches = pd.read_parquet(layout.extraction(seed, "base") / "matches.parquet")
    members = load_imagefolder(layout.data).split("member").table
    images, families = distinct_copies(matches.loc[matches["kind"] == "own", "own_idx"], members)
    return {"images": images, "families": families}


def duplication_trend(run: Path, seed: int, buckets: pd.DataFrame) -> dict | None:
    """Do captions that gave a copy have more-duplicated pictures than those that did not? A Mann-Whitney
    test on the base model's per-prompt copy counts (all prompts, not just two buckets); `clear` when p < ALPHA.
    The most- and least-duplicated buckets are returned for the sentence that illustrates it."""
    table = per_prompt(run, seed, "base")
    hit, miss = table.loc[table["extracted"], "dup_count"], table.loc[~table["extracted"], "dup_count"]
    if len(buckets) < 2 or hit.empty or miss.empty:
        return None
    test = mannwhitneyu(hit, miss, alternative="two-sided")
    return {"low": buckets.iloc[0].to_dict(), "high": buckets.iloc[-1].to_dict(), "p_value": float(test.pvalue),
            "clear": bool(test.pvalue < ALPHA), "rises": bool(hit.mean() > miss.mean())}


def flag_precision(run: Path, seed: int) -> dict | None:
    """Of the prompts the clique filter flagged (no training data needed), how many truly memorize (oracle)?"""
    table = per_prompt(run, seed, "base")
    flagged = table["flagged"]
    if not flagged.any():
        return None
    return {"flagged": int(flagged.sum()), "true": int((flagged & table["memorized"]).sum()),
            "precision": float((flagged & table["memorized"]).mean() / flagged.mean())}


def adaptive_effects(rows: list[dict], search_control: dict | None) -> list[dict]:
    """Per arm and adaptive probe, pooled over seeds: the probe alone against the static probe on the same targets at
    the same budget, by a one-sided exact McNemar test (did the probe get more captions to copy?), Holm-adjusted over
    the family of real comparisons. Kept out of the family, with their verdict said plainly: the base (the probes'
    reference); a probe that sends the static query ("same as static"); a probe whose query to this arm is the one it
    sends the base, same weights, conditioning and guidance ("same as no fix": the fix does not touch what this
    attacker uses); the embedding search when its negative control failed. A fix is `undone` when the probe got
    clearly more captions to copy; otherwise `no clear rise`, which is weaker than "it holds" when targets are few.
    The attacker who keeps both (static OR probe) is described, not tested."""
    counts = ("static", "alone", "union", "targets", "stopped", "started", "unet_evaluations")
    base_query = {(r["seed"], probe): (r["model_hash"], p["conditioning"], p["guidance"], str(p.get("sampling", {})))
                  for r in rows
                  if r["arm"] == "base" for probe, p in (r.get("adaptive") or {}).get("probes", {}).items()}
    cells: dict[tuple[str, str], dict] = {}
    for row in rows:
        for probe, r in (row.get("adaptive") or {}).get("probes", {}).items():
            cell = cells.setdefault((row["arm"], probe), {"arm": row["arm"], "probe": probe, "title": r["title"],
                                                          "access": r["access"], "same_as_static": True,
                                                          "same_as_base": True, **dict.fromkeys(counts, 0)})
            for key in ("static", "alone", "union"):
                cell[key] += r[key]["extracted"]
            cell["targets"] += r["static"]["targets"]
            for key in ("stopped", "started", "unet_evaluations"):
                cell[key] += r[key]
            cell["same_as_static"] &= r["same_as_static"]
            cell["same_as_base"] &= base_query.get((row["seed"], probe)) == (
                row["model_hash"], r["conditioning"], r["guidance"], str(r.get("sampling", {})))
    out = list(cells.values())
    search_failed = search_control is not None and not search_control["passed"]
    for cell in out:
        for key in ("static", "alone", "union"):
            low, high = clopper_pearson(cell[key], cell["targets"])
            cell[f"{key}_rate"] = cell[key] / cell["targets"] if cell["targets"] else float("nan")
            cell[f"{key}_ci"] = [low, high]
        cell["raw_p_value"] = mcnemar_p(cell["stopped"], cell["started"], alternative="less")
        cell["verdict"] = ("reference" if cell["arm"] == "base" else "same as static" if cell["same_as_static"] else
                           "same as no fix" if cell["same_as_base"] else
                           "control failed" if cell["probe"] == CONTROLLED and search_failed else None)
    family = [c for c in out if c["verdict"] is None]
    for cell, p in zip(family, holm([c["raw_p_value"] for c in family]), strict=True):
        cell["p_value"] = p
        cell["verdict"] = "undone" if p < ALPHA else "no clear rise"
    return out


def strongest_attacks(rows: list[dict]) -> dict[str, dict]:
    """Per (arm, seed) that measured membership: the strongest attack by AUC and by TPR at 1% FPR (the one rule,
    `strongest_attack`), so no report picks its own."""
    return {f"{r['arm']}@{r['seed']}": {by: strongest_attack(r["mia"], by)[0] for by in ("auc", "tpr_at_1pct_fpr")}
            for r in rows if r.get("mia")}


def membership_verdicts(rows: list[dict]) -> dict[str, dict]:
    """Per (arm, seed) that measured membership: is membership detectable (some attack's AUC has its lower 95% bound
    above 0.5; `by`: the attack with the highest lower bound), and do the member and held-out pictures look alike to
    the model-free split check (its AUC within `SPLIT_ALIKE` of 0.5)? Decided here once, so the memo and the technical
    report say the same."""
    def alike(auc: float | None) -> bool | None:
        return None if auc is None else bool(abs(auc - 0.5) < SPLIT_ALIKE)

    def verdict(row: dict) -> dict:
        by = max(row["mia"], key=lambda name: row["mia"][name]["auc_ci"][0])
        return {"detectable": bool(row["mia"][by]["auc_ci"][0] > 0.5), "by": by,
                "split_alike": alike(row.get("split_check_auc"))}

    return {f"{r['arm']}@{r['seed']}": verdict(r) for r in rows if r.get("mia")}


def dp_power(rows: list[dict], dp_controls: dict) -> dict:
    """Per seed with a non-private control: can the DP audit see a violation of the smallest theoretical epsilon
    (the control's empirical epsilon above it)? Without that power, a DP arm's clean audit says nothing."""
    smallest = min((r["dp_audit"]["theoretical_epsilon"] for r in rows if "dp_audit" in r), default=None)
    return {"sanity_test": SANITY, "seeds": {
        seed: {"empirical_epsilon": c["dp_audit"]["empirical_epsilon"], "smallest_theoretical": smallest,
               "has_power": smallest is not None and c["dp_audit"]["empirical_epsilon"] > smallest}
        for seed, c in dp_controls.items()}}


def findings(run: Path, rows: list[dict], search_control: dict | None = None, sampler_rows: list[dict] | None = None,
             nulls: dict[str, dict] | None = None, samplers: list[str] | None = None,
             dp_controls: dict | None = None) -> dict:
    """Everything the memo and reports state beyond the rows themselves, computed once by the study."""
    adaptive = adaptive_effects(rows, search_control)
    picture_map = pictures_of(run)  # the dataset is read once for every table below
    effects, switched = arm_effects(run, rows, sampler_rows, nulls, adaptive, samplers, picture_map)
    ranking = ranked_fixes(effects)
    first = next(r["seed"] for r in rows if r["arm"] == "base")
    seeds = sorted({r["seed"] for r in rows})
    base = {seed: next(r for r in rows if r["arm"] == "base" and r["seed"] == seed) for seed in seeds}
    pictures = picture_map[0]
    measured = cells(run, rows, sampler_rows or [])
    return {"alpha": ALPHA, "arms": pooled_arms(run, rows, pictures).to_dict("records"),
            "cells": [{**counts(c, pictures), "null": (nulls or {}).get(c.setting), "miss_captions": c.miss_captions,
                       "misses_too_much": c.misses_too_much} for c in measured],
            "setting_nulls": nulls or {},
            "effects": [asdict(e) | {"verdict": e.verdict} for e in effects],
            "ranking": [e.arm for e in ranking], "best_arm": ranking[0].arm if ranking else None,
            "switch_sampler": switched,
            "duplication_trend": {str(s): duplication_trend(run, s, by_dup(base[s]["by_dup"])) for s in seeds
                                  if s == first},
            "flag_precision": {str(s): flag_precision(run, s) for s in seeds},
            "oracle_extent": {str(s): oracle_extent(run, s) for s in seeds},
            "adaptive": adaptive, "strongest_attack": strongest_attacks(rows), "membership": membership_verdicts(rows),
            "probe_words": {name: {"title": p.title, "short": p.short} for name, p in PROBES.items()},
            "dp_power": dp_power(rows, dp_controls or {}), "schema_version": FINDINGS_SCHEMA}
