"""Which fixes lower copying, decided once and by what the model copies.

A fix's verdict is the owner's check (every generation against its caption's own training picture), paired by
*picture*: captions of one picture move together (the 48 most-duplicated quick captions are 18 pictures), so each
picture is one pair (copied by the base? by the arm?). The test is an exact McNemar per sampler, Holm-adjusted over
the arms; a fix is "fewer" only when it is fewer under every default sampler (an intersection-union rule: no
correction across samplers is needed), the copy test is valid at every setting it was judged at (its own null), no
replicate training seed goes the other way, and no probe (an adaptive one, or switching the sampler) undoes it. The
tests count a caption whose generations came near its own picture without copying it (a near miss) as copied: the
worst case for a fix, since the copy test misses visible copies under some settings.
Every picture a fix newly copies is named. The outsider's clique-filtered count is kept beside, never decisive.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from diffaudit.attacks.metrics import clopper_pearson, mcnemar_p
from diffaudit.study.records import ALPHA

# The copy test undercounts where near misses (closest training picture their own, within 2 delta, no copy) pass this
# share of the attacked captions: under guidance 7.5 with deployed DDIM, 19 of 48 captions had only near misses, and
# the 60 closest of them, looked at, were all visible copies with speckled, over-saturated backgrounds
# (docs/results/2026-12-02-verdicts-part1). Reports say so beside the count; the verdicts count near misses as copies.
MISS_SHARE = 0.05
BOOTSTRAP = 2000  # cluster-bootstrap resamples for pooled intervals
# A fix in the training data outlasts one in the weights, which outlasts a sampling setting anyone can change.
DURABILITY = {"data": 0, "weights": 1, "setting": 2}


@dataclass(frozen=True)
class Cell:
    """One arm measured at one (sampler, seed): its per-prompt verdicts and the setting it was drawn at."""

    arm: str
    kind: str
    sampler: str
    seed: int
    setting: str
    per_prompt: pd.DataFrame  # prompt, memorized (owner), extracted (outsider)
    frechet_distance: float = float("nan")
    near_miss: frozenset[str] = frozenset()  # captions with near misses of their own picture and no copy

    @property
    def miss_captions(self) -> int:
        return len(self.near_miss)

    @property
    def misses_too_much(self) -> bool:
        return self.miss_captions > MISS_SHARE * len(self.per_prompt)

    @property
    def judged(self) -> pd.DataFrame:
        """The per-prompt table the verdicts test: the owner's check with every near-missed caption counted as
        copied."""
        return self.per_prompt.assign(memorized=self.per_prompt["memorized"]
                                      | self.per_prompt["prompt"].isin(self.near_miss))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, so testing several arms does not inflate the chance of a false 'it worked'."""
    order = np.argsort(p_values)
    adjusted, running = np.empty(len(p_values)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def by_picture(per_prompt: pd.DataFrame, pictures: pd.Series) -> pd.DataFrame:
    """Per picture: copied by some caption of it (owner's check), flagged and confirmed by the outsider's probe, and
    how many of its captions were attacked and copied."""
    frame = per_prompt.assign(picture=per_prompt["prompt"].map(pictures))
    return frame.groupby("picture").agg(owner=("memorized", "any"), outsider=("extracted", "any"),
                                        captions=("prompt", "size"), owner_captions=("memorized", "sum"),
                                        outsider_captions=("extracted", "sum"))


def counts(cell: Cell, pictures: pd.Series) -> dict:
    """Captions and pictures copied, owner's and outsider's, each with an exact 95% interval; the caption rate also
    with a cluster-bootstrap interval over pictures (captions of one picture are not independent)."""
    table = by_picture(cell.per_prompt, pictures)
    out = {"arm": cell.arm, "kind": cell.kind, "sampler": cell.sampler, "seed": cell.seed, "setting": cell.setting,
           "prompts": len(cell.per_prompt), "pictures": len(table), "frechet_distance": cell.frechet_distance}
    for who in ("owner", "outsider"):
        k, n = int(table[f"{who}_captions"].sum()), int(table["captions"].sum())
        kp = int(table[who].sum())
        out |= {f"{who}_prompts": k, f"{who}_rate": k / n if n else float("nan"),
                f"{who}_ci": list(clopper_pearson(k, n)), f"{who}_pictures": kp,
                f"{who}_picture_ci": list(clopper_pearson(kp, len(table))),
                f"{who}_cluster_ci": cluster_interval([table], f"{who}_captions")}
    return out


def cluster_interval(tables: list[pd.DataFrame], hits: str, seed: int = 0) -> list[float]:
    """95% percentile interval of the pooled caption rate over pictures: each resample draws pictures with
    replacement once and takes that same draw at every training seed (one table per seed), since a picture that is
    easy to copy is easy at every seed."""
    tables = [t for t in tables if not t.empty]
    if not tables:
        return [float("nan"), float("nan")]
    index = sorted(set().union(*(t.index for t in tables)))
    draw = np.random.default_rng(seed).integers(0, len(index), (BOOTSTRAP, len(index)))
    k, n = np.zeros(BOOTSTRAP), np.zeros(BOOTSTRAP)
    for table in tables:
        full = table.reindex(index, fill_value=0)
        k += full[hits].to_numpy()[draw].sum(1)
        n += full["captions"].to_numpy()[draw].sum(1)
    rates = np.divide(k, n, out=np.full(BOOTSTRAP, np.nan), where=n > 0)
    return [float(np.nanpercentile(rates, 2.5)), float(np.nanpercentile(rates, 97.5))]


def paired(base: pd.DataFrame, arm: pd.DataFrame, labels: pd.Series) -> dict:
    """Pictures copied (owner's check) by the base and not the arm (stopped) and the other way (started, named), with
    the exact two-sided McNemar p-value; pictures attacked in both only."""
    both = base[["owner"]].add_suffix("_base").join(arm[["owner"]].add_suffix("_arm"), how="inner")
    stopped = both["owner_base"] & ~both["owner_arm"]
    started = ~both["owner_base"] & both["owner_arm"]
    return {"stopped": int(stopped.sum()), "started": int(started.sum()), "pictures": len(both),
            "arm_pictures": int(both["owner_arm"].sum()), "base_pictures": int(both["owner_base"].sum()),
            "raw_p_value": mcnemar_p(int(stopped.sum()), int(started.sum())),
            "started_pictures": sorted(str(labels.get(p, p)) for p in both.index[started])}


def direction(test: dict, p: float) -> str:
    if p >= ALPHA:
        return "no clear change"
    return "fewer" if test["stopped"] > test["started"] else "more"


def sampler_tests(cells: list[Cell], pictures: pd.Series, labels: pd.Series, valid: dict[tuple[str, str, int], bool],
                  samplers: list[str], seed: int) -> dict[str, list[dict]]:
    """Per arm, its picture-paired test against the base under each default sampler (`samplers`, the headline first)
    at `seed`, Holm-adjusted over the arms per sampler. A sampler the arm was not measured under is "not measured"; a
    cell whose copy test is invalid (its setting's null too high), for the arm or the base, is not judged. Reference
    samplers never enter a verdict."""
    at = {(c.arm, c.sampler): c for c in cells if c.seed == seed}
    arms = list(dict.fromkeys(c.arm for c in cells if c.seed == seed and c.arm != "base"))
    out: dict[str, list[dict]] = {arm: [] for arm in arms}
    for sampler in samplers:
        base = at.get(("base", sampler))
        tests = []
        for arm in arms:
            cell = at.get((arm, sampler))
            if base is None or cell is None:
                out[arm].append({"sampler": sampler, "verdict": "not measured", "valid": False, "stopped": 0,
                                 "started": 0, "p_value": float("nan"), "started_pictures": []})
                continue
            test = {"sampler": sampler, "setting": cell.setting, **paired(
                by_picture(base.judged, pictures), by_picture(cell.judged, pictures), labels),
                "valid": bool(valid.get((arm, sampler, seed), False) and valid.get(("base", sampler, seed), False))}
            tests.append(test)
            out[arm].append(test)
        judged = [t for t in tests if t["valid"]]
        for t, p in zip(judged, holm([t["raw_p_value"] for t in judged]), strict=True):
            t["p_value"], t["verdict"] = p, direction(t, p)
        for t in tests:
            if not t["valid"]:
                t["p_value"], t["verdict"] = float("nan"), "copy test invalid here"
    return out


def seed_checks(cells: list[Cell], pictures: pd.Series, labels: pd.Series, headline: str, first: int) -> dict[str,
                                                                                                             list[dict]]:
    """Per arm, at each replicate training seed: its pictures against the base of the same seed (headline sampler)."""
    at = {(c.arm, c.seed): c for c in cells if c.sampler == headline}
    out: dict[str, list[dict]] = {}
    for (arm, seed), cell in sorted(at.items(), key=lambda kv: kv[0][1]):
        if arm == "base" or seed == first or ("base", seed) not in at:
            continue
        test = paired(by_picture(at[("base", seed)].judged, pictures), by_picture(cell.judged, pictures), labels)
        out.setdefault(arm, []).append({"seed": seed, **test})
    return out


def switch_sampler(cells: list[Cell], pictures: pd.Series, labels: pd.Series, valid: dict[tuple[str, str, int], bool],
                   headline: str,
                   first: int, settings_only: set[str]) -> list[dict]:
    """The attacker who holds the weights, or a service that lets users pick a sampler, draws a setting-only fix with
    another sampler (default or reference). The fix is *undone* when that gives back at least as many pictures as the
    model without the fix, drawn as deployed (the base under the headline sampler); the exact McNemar p-value of that
    comparison is kept beside it."""
    at = {(c.arm, c.sampler): c for c in cells if c.seed == first}
    base = at.get(("base", headline))
    out = []
    for (arm, sampler), cell in at.items():
        if base is None or arm not in settings_only or sampler == headline:
            continue
        test = paired(by_picture(base.judged, pictures), by_picture(cell.judged, pictures), labels)
        ok = bool(valid.get((arm, sampler, first), False))
        out.append({"arm": arm, "sampler": sampler, "setting": cell.setting, **test, "valid": ok,
                    "p_value": test["raw_p_value"],
                    "verdict": "copy test invalid here" if not ok else
                    "undone" if test["started"] >= test["stopped"] else "holds"})
    return out




def worst_case(tests: list[dict], seeds: list[dict], undone: list[str], replicated: bool) -> str:
    """The arm's one verdict (a key of VERDICTS). "more" needs a clear rise under some sampler after a Bonferroni
    correction over the samplers judged (a union claim); "fewer" needs clearly fewer under every default sampler
    (intersection-union), fewer pictures (stopped > started) at every replicate training seed when the study has
    several (`replicated` false: the arm was measured at one seed of a several-seed study), and no probe undoing it."""
    judged = [t for t in tests if t["valid"]]
    if any(t["verdict"] == "more" and t["p_value"] * len(judged) < ALPHA for t in judged):
        return "more"
    if not judged:
        return "not judged"
    if not all(t["verdict"] == "fewer" for t in judged):
        return "not under every sampler" if any(t["verdict"] == "fewer" for t in judged) else "no clear change"
    if len(judged) < len(tests):
        return "partly judged"
    if not replicated:
        return "one seed only"
    if any(s["stopped"] <= s["started"] for s in seeds):
        return "not at every seed"
    return "undone" if undone else "fewer"
