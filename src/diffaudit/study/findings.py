"""What a study showed, as decisions drawn from its numbers: which mitigation changed extraction beyond
chance (exact paired test on the same prompts), at what utility cost, and whether copying rises with
duplication. The study writes them to `findings.json`; the memo and reports only read that file, so no sentence
can claim more than the study computed."""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from diffaudit.attacks.extraction import distinct_copies
from diffaudit.attacks.metrics import clopper_pearson, mcnemar_p, paired_change
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.errors import DiffauditError
from diffaudit.mitigations.base import Description
from diffaudit.mitigations.registry import describe

ALPHA = 0.05  # significance level for "changed beyond chance"
# A fix in the training data outlasts one in the weights, which outlasts a sampling setting anyone can change.
DURABILITY = {"data": 0, "weights": 1, "setting": 2}


@dataclass(frozen=True)
class ArmEffect:
    arm: str
    kind: str
    rate: float
    ci_low: float
    ci_high: float
    extracted: int
    prompts: int
    stopped: int  # prompts extracted before, not after
    started: int  # prompts extracted after, not before
    p_value: float  # exact McNemar, Holm-adjusted over all arms of the study
    frechet_change: float  # relative to the base model; + is worse quality
    loss_change: float
    train_seconds: float
    description: Description  # the mitigation's own plain words (mitigations.registry)
    base_rate: float = float("nan")

    @property
    def verdict(self) -> str:
        if self.p_value >= ALPHA:
            return "no clear change"
        return "fewer copies" if self.stopped > self.started else "more copies"

    @property
    def lowered(self) -> bool:
        """Fewer captions gave copies beyond chance, and the extraction rate itself went down."""
        return self.verdict == "fewer copies" and self.rate < self.base_rate


def bucket_start(label: str) -> int:
    """Lower bound of a duplication bucket label ("1", "2-3", ..., "64+"), for sorting."""
    return int(label.split("-")[0].rstrip("+"))


def by_dup(row: dict, key: str = "by_dup") -> pd.DataFrame:
    """A row's per-bucket rates in ladder order (they are stored in string order)."""
    frame = pd.DataFrame(row[key])
    return frame.sort_values("dup_bucket", key=lambda s: s.map(bucket_start)).reset_index(drop=True)


def per_prompt(run: Path, seed: int, arm: str) -> pd.DataFrame:
    path = run / f"seed{seed}" / arm / "extraction" / "per_prompt.parquet"
    if not path.exists():
        raise DiffauditError(f"{path} is missing: the run's arm {arm!r} (seed {seed}) did not finish its extraction")
    return pd.read_parquet(path).set_index("prompt")


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, so testing several arms does not inflate the chance of a false 'it worked'."""
    order = np.argsort(p_values)
    adjusted, running = np.empty(len(p_values)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def _relative(new: float, old: float) -> float:
    return new / old - 1 if old and np.isfinite(old) and np.isfinite(new) else float("nan")


def pooled_arms(rows: list[dict]) -> pd.DataFrame:
    """One row per arm, pooled over seeds: extraction rate (prompts that copied their own image / prompts
    attacked) with its exact interval and the seed spread; unique images and subjects (families) beside it,
    summed over seeds."""
    out = []
    for arm, group in pd.DataFrame([r for r in rows if r.get("kind") != "detection"]).groupby("arm", sort=False):
        k, n = int(group["prompts_with_copy"].sum()), int(group["attacked_prompts"].sum())
        low, high = clopper_pearson(min(k, n), n)
        mia = [max(m.values(), key=lambda v: v["auc"]) for m in group.get("mia", pd.Series(dtype=object))
               if isinstance(m, dict) and m]
        out.append({"arm": arm, "kind": group["kind"].iloc[0], "guidance": group["guidance"].iloc[0],
                    "extracted": k, "prompts": n, "rate": k / n, "ci_low": low, "ci_high": high,
                    "images": int(group["extracted_images"].sum()),
                    "families": int(group["extracted_families"].sum()),
                    "family_prompts": int(group["family_prompts"].sum()),
                    "seed_min": group["extraction_rate"].min(), "seed_max": group["extraction_rate"].max(),
                    "mia_auc": float(np.mean([m["auc"] for m in mia])) if mia else None,
                    "frechet_distance": group["frechet_distance"].mean(),
                    "heldout_loss": group["heldout_loss"].mean(), "seeds": len(group),
                    "train_seconds": group.get("train_seconds", pd.Series([0.0])).fillna(0).mean()})
    return pd.DataFrame(out)


def arm_effects(run: Path, rows: list[dict]) -> list[ArmEffect]:
    """Every mitigation arm against the base model, paired prompt by prompt over all seeds."""
    arms = pooled_arms(rows).set_index("arm")
    base, others = arms.loc["base"], arms.drop(index="base")
    seeds = sorted({r["seed"] for r in rows})
    base_extracted = {seed: per_prompt(run, seed, "base")["extracted"] for seed in seeds}
    tests = []
    for arm in others.index:
        pairs = [pd.concat([base_extracted[seed], per_prompt(run, seed, arm)["extracted"]], axis=1, join="inner")
                 for seed in seeds]
        tests.append(paired_change(np.concatenate([p.iloc[:, 0] for p in pairs]),
                                   np.concatenate([p.iloc[:, 1] for p in pairs])))
    adjusted = holm([t["p_value"] for t in tests])
    return [ArmEffect(
        arm=str(arm), kind=row["kind"], rate=row["rate"], ci_low=row["ci_low"], ci_high=row["ci_high"],
        extracted=int(row["extracted"]), prompts=int(row["prompts"]), stopped=test["stopped"],
        started=test["started"], p_value=p, frechet_change=_relative(row["frechet_distance"], base["frechet_distance"]),
        loss_change=_relative(row["heldout_loss"], base["heldout_loss"]),
        train_seconds=float(row["train_seconds"]), base_rate=float(base["rate"]),
        description=describe(next(r for r in rows if r["arm"] == arm)))
        for (arm, row), test, p in zip(others.iterrows(), tests, adjusted, strict=True)]


def ranked_fixes(effects: list[ArmEffect]) -> list[ArmEffect]:
    """The arms that reduced extraction beyond chance, the most durable first (where the fix lives), then the
    lowest rate, then the smaller quality cost."""
    return sorted((e for e in effects if e.lowered),
                  key=lambda e: (DURABILITY.get(e.description.lasts, 1), e.rate, e.frechet_change))


def best_arm(effects: list[ArmEffect]) -> ArmEffect | None:
    """The most durable fix that worked (`ranked_fixes`), or None when none held."""
    return next(iter(ranked_fixes(effects)), None)


def oracle_extent(run: Path, seed: int) -> dict:
    """The owner's ceiling in pictures and subjects: distinct training images (and families) that some generation of
    the base model copies as its caption's own image, whether or not the black-box probe flagged it."""
    matches = pd.read_parquet(run / f"seed{seed}" / "base" / "extraction" / "matches.parquet")
    members = load_imagefolder(run / "data").split("member").table
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
    base_query = {(r["seed"], probe): (r["model_hash"], p["conditioning"], p["guidance"]) for r in rows
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
            cell["same_as_base"] &= base_query.get((row["seed"], probe)) == (row["model_hash"], r["conditioning"],
                                                                           r["guidance"])
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
                           "control failed" if cell["probe"] == "embedding-search" and search_failed else None)
    family = [c for c in out if c["verdict"] is None]
    for cell, p in zip(family, holm([c["raw_p_value"] for c in family]), strict=True):
        cell["p_value"] = p
        cell["verdict"] = "undone" if p < ALPHA else "no clear rise"
    return out


def findings(run: Path, rows: list[dict], search_control: dict | None = None) -> dict:
    """Everything the memo and reports state beyond the rows themselves, computed once by the study."""
    effects = arm_effects(run, rows)
    best = best_arm(effects)
    seeds = sorted({r["seed"] for r in rows})
    base = {seed: next(r for r in rows if r["arm"] == "base" and r["seed"] == seed) for seed in seeds}
    return {"alpha": ALPHA, "arms": pooled_arms(rows).to_dict("records"),
            "effects": [asdict(e) for e in effects], "best_arm": best.arm if best else None,
            "duplication_trend": {str(s): duplication_trend(run, s, by_dup(base[s])) for s in seeds},
            "flag_precision": {str(s): flag_precision(run, s) for s in seeds},
            "oracle_extent": {str(s): oracle_extent(run, s) for s in seeds},
            "adaptive": adaptive_effects(rows, search_control)}


def effect_from_record(record: dict) -> ArmEffect:
    """An `ArmEffect` read back from findings.json, where an undefined number was written as null."""
    numbers = {k: float("nan") if v is None else v for k, v in record.items()}
    return ArmEffect(**{**numbers, "description": Description(**record["description"])})
