"""Which fixes lower copying, decided once and by what the model copies.

A fix's verdict is the owner's check (every generation against its caption's own training picture), paired by
*picture*: captions of one picture move together (the 48 most-duplicated quick captions are 18 pictures), so each
picture is one pair (copied by the base? by the arm?). The test is an exact McNemar per sampler, Holm-adjusted over
the arms; a fix is "fewer" only when it is fewer under every default sampler (an intersection-union rule: no
correction across samplers is needed), the copy test is valid at every setting it was judged at (its own null), no
replicate training seed goes the other way, and no probe (an adaptive one, or switching the sampler) undoes it.
Every picture a fix newly copies is named. The outsider's clique-filtered count is kept beside, never decisive.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from diffaudit.attacks.metrics import clopper_pearson, mcnemar_p

ALPHA = 0.05  # significance level for "changed beyond chance"
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
    """95% percentile interval of the pooled caption rate, resampling pictures with replacement within each table
    (one table per training seed: a bootstrap stratified by seed)."""
    rng = np.random.default_rng(seed)
    k = np.zeros(BOOTSTRAP)
    n = np.zeros(BOOTSTRAP)
    for table in tables:
        if table.empty:
            continue
        draw = rng.integers(0, len(table), (BOOTSTRAP, len(table)))
        k += table[hits].to_numpy()[draw].sum(1)
        n += table["captions"].to_numpy()[draw].sum(1)
    rates = np.divide(k, n, out=np.full(BOOTSTRAP, np.nan), where=n > 0)
    return [float(np.nanpercentile(rates, 2.5)), float(np.nanpercentile(rates, 97.5))] if np.isfinite(
        rates).any() else [float("nan"), float("nan")]


def paired(base: pd.DataFrame, arm: pd.DataFrame, labels: pd.Series) -> dict:
    """Pictures copied (owner's check) by the base and not the arm (stopped) and the other way (started, named), with
    the exact two-sided McNemar p-value; pictures attacked in both only."""
    both = base[["owner"]].add_suffix("_base").join(arm[["owner"]].add_suffix("_arm"), how="inner")
    stopped = both["owner_base"] & ~both["owner_arm"]
    started = ~both["owner_base"] & both["owner_arm"]
    return {"stopped": int(stopped.sum()), "started": int(started.sum()), "pictures": len(both),
            "raw_p_value": mcnemar_p(int(stopped.sum()), int(started.sum())),
            "started_pictures": sorted(labels.get(p, str(p)) for p in both.index[started])}


def direction(test: dict, p: float) -> str:
    if p >= ALPHA:
        return "no clear change"
    return "fewer" if test["stopped"] > test["started"] else "more"


def sampler_tests(cells: list[Cell], pictures: pd.Series, labels: pd.Series, valid: dict[str, bool],
                  headline: str, seed: int) -> dict[str, list[dict]]:
    """Per arm, its picture-paired test against the base under each default sampler at `seed` (Holm over the arms,
    per sampler). A test at a setting whose copy test is invalid (its null too high), for the arm or for the base, is
    not judged."""
    at = {(c.arm, c.sampler): c for c in cells if c.seed == seed}
    samplers = list(dict.fromkeys([headline] + [c.sampler for c in cells if c.arm == "base" and c.seed == seed]))
    out: dict[str, list[dict]] = {}
    for sampler in samplers:
        base = at.get(("base", sampler))
        if base is None:
            continue
        base_table = by_picture(base.per_prompt, pictures)
        tests = []
        for (arm, s), cell in at.items():
            if s != sampler or arm == "base":
                continue
            test = {"sampler": sampler, "setting": cell.setting, **paired(base_table, by_picture(cell.per_prompt,
                                                                                                  pictures), labels),
                    "valid": bool(valid.get(cell.setting, False) and valid.get(base.setting, False))}
            tests.append((arm, test))
        judged = [t for _, t in tests if t["valid"]]
        for t, p in zip(judged, holm([t["raw_p_value"] for t in judged]), strict=True):
            t["p_value"], t["verdict"] = p, direction(t, p)
        for arm, t in tests:
            if not t["valid"]:
                t["p_value"], t["verdict"] = float("nan"), "copy test invalid here"
            out.setdefault(arm, []).append(t)
    return out


def seed_checks(cells: list[Cell], pictures: pd.Series, labels: pd.Series, headline: str, first: int) -> dict[str,
                                                                                                             list[dict]]:
    """Per arm, at each replicate training seed: its pictures against the base of the same seed (headline sampler)."""
    at = {(c.arm, c.seed): c for c in cells if c.sampler == headline}
    out: dict[str, list[dict]] = {}
    for (arm, seed), cell in sorted(at.items(), key=lambda kv: kv[0][1]):
        if arm == "base" or seed == first or ("base", seed) not in at:
            continue
        test = paired(by_picture(at[("base", seed)].per_prompt, pictures), by_picture(cell.per_prompt, pictures),
                      labels)
        out.setdefault(arm, []).append({"seed": seed, **test})
    return out


def switch_sampler(cells: list[Cell], pictures: pd.Series, valid: dict[str, bool], headline: str, first: int,
                   settings_only: set[str]) -> list[dict]:
    """The attacker who holds the weights, or a service that lets users pick a sampler, draws a setting-only fix with
    the other samplers: more pictures copied than under the headline sampler? One-sided exact McNemar, Holm over
    every (arm, sampler) cell."""
    at = {(c.arm, c.sampler): c for c in cells if c.seed == first}
    out = []
    for (arm, sampler), cell in at.items():
        if arm not in settings_only or sampler == headline or (arm, headline) not in at:
            continue
        test = paired(by_picture(at[(arm, headline)].per_prompt, pictures), by_picture(cell.per_prompt, pictures),
                      pd.Series(dtype=str))
        out.append({"arm": arm, "sampler": sampler, "setting": cell.setting, "stopped": test["stopped"],
                    "started": test["started"], "valid": bool(valid.get(cell.setting, False)),
                    "raw_p_value": mcnemar_p(test["stopped"], test["started"], alternative="less")})
    family = [c for c in out if c["valid"]]
    for c, p in zip(family, holm([c["raw_p_value"] for c in family]), strict=True):
        c["p_value"], c["verdict"] = p, "undone" if p < ALPHA else "no clear rise"
    for c in out:
        if not c["valid"]:
            c["p_value"], c["verdict"] = float("nan"), "copy test invalid here"
    return out


VERDICTS = {  # the one verdict per arm, in the words every report uses
    "fewer": "fewer copies under every sampler",
    "undone": "fewer copies, undone by an attacker",
    "not at every seed": "fewer copies here, not at every training seed",
    "not under every sampler": "fewer copies under some samplers only",
    "no clear change": "no clear change",
    "more": "more copies under some sampler",
    "not judged": "not judged: the copy test is invalid at its settings",
}


def worst_case(tests: list[dict], seeds: list[dict], undone: list[str]) -> str:
    """The arm's one verdict (a key of VERDICTS): "fewer" only if fewer under every sampler, not the other way at any
    replicate seed, and undone by no probe."""
    verdicts = [t["verdict"] for t in tests]
    if "more" in verdicts:
        return "more"
    if not verdicts or all(v == "copy test invalid here" for v in verdicts):
        return "not judged"
    if not all(v == "fewer" for v in verdicts):
        return "not under every sampler" if "fewer" in verdicts else "no clear change"
    if any(s["stopped"] <= s["started"] for s in seeds):
        return "not at every seed"
    return "undone" if undone else "fewer"
