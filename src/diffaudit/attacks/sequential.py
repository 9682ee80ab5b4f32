"""A sequential extraction probe: the full probe's generations drawn in small rounds, so a caption stops as soon as its
draws settle it.

A caption stops *confirmed* once its draws hold a clique of the size the full probe asks at its budget N (then, as in
the full probe, the clique is matched against the training set), and *futile* once its two closest draws are farther
apart than the rule's threshold for that many draws. Only the generations stop a caption. No distribution-free bound is
small after a few draws (a caption whose N = 16 clique is exactly 3 has all three outside its first 4 draws with
probability C(13,4)/C(16,4) ~ 0.39), so the rule is fitted on a second model's full probe (`fit_rule`), never on the
evaluated model's labels, and carries the miss rate estimated there. What it fits is both the thresholds and the order
the seeds are drawn in (`seed_order`): copies come from a few initial noises, the same ones on three training seeds of
one recipe (docs/results/2026-12-02-sequential-probe.md), so the noises that copied on the second model are drawn first.
"""

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import networkx as nx
import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from diffaudit.attacks.metrics import clopper_pearson
from diffaudit.config import SampleConfig
from diffaudit.errors import ConfigError
from diffaudit.io import write_json
from diffaudit.measure.distance import copy_distance
from diffaudit.model.conditioning import Conditioning
from diffaudit.model.generate import generate
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.shards import load_samples
from diffaudit.progress import Progress

STOPS = ("confirmed", "futile", "budget")  # why a caption stopped drawing


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Miss:
    """How often the rule loses a caption the full probe extracts, on the model it was fitted on: stopped futile, or
    stopped confirmed on a clique that holds no copy of its own picture (the full probe's clique at N would)."""
    missed: int
    of: int
    rate: float
    ci_low: float
    ci_high: float
    confirmed_without_copy: int
    how: str = ("leave one picture out, on the fitting model (its thresholds refitted without it; the seed order "
                "fitted on every picture)")


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class StoppingRule:
    """When a caption stops. `futility[n]`: after n draws, stop when the closest pair of draws is farther than this.
    The thresholds are distances at `compare_size` pixels between draws of `setting`; a probe elsewhere is refused.
    `order`: the seeds in the order they are drawn (None, in a rule written before the order was fitted: 0, 1, ...)."""
    budget: Annotated[int, Field(ge=2)]  # the full probe's N
    round_size: Annotated[int, Field(ge=1)]
    confirm: Annotated[int, Field(ge=2)]  # clique size that flags a caption: the full probe's at N
    edge_threshold: Annotated[float, Field(gt=0)]
    compare_size: Annotated[int, Field(ge=1)]
    setting: str  # sampler, steps and guidance of the draws (`probe_setting`)
    futility: dict[int, float]
    fitted_on: str  # model hash of the second model the thresholds were fitted on
    quantile: float  # of the fitting model's extracted captions' closest-pair distances, per check
    margin: float  # thresholds widened by this share
    miss: Miss | None = None
    order: list[int] | None = None

    @model_validator(mode="after")
    def _checks_exist(self) -> "StoppingRule":
        if self.round_size > self.budget:
            raise ValueError(f"round_size {self.round_size} exceeds the budget {self.budget}")
        if self.order is not None and sorted(self.order) != list(range(self.budget)):
            raise ValueError(f"order {self.order} does not hold each of the seeds 0..{self.budget - 1} once")
        stray = sorted(set(self.futility) - set(self.checks()))
        if stray:
            raise ValueError(f"futility thresholds at {stray} draws, where no round ends")
        return self

    def checks(self) -> list[int]:
        """Draw counts after which captions are looked at: every round, and the budget."""
        return sorted({*range(self.round_size, self.budget, self.round_size), self.budget})

    def seeds(self) -> list[int]:
        """The seeds in the order they are drawn."""
        return list(self.order) if self.order is not None else list(range(self.budget))

    def save(self, path: Path) -> None:
        write_json(Path(path), asdict(self))

    @classmethod
    def load(cls, path: Path) -> "StoppingRule":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError, ValidationError) as err:
            raise ConfigError(f"{path} is not a stopping rule written by `diffaudit stopping-rule`: {err}") from err


def copies_per_seed(matches: pd.DataFrame, extracted: pd.Series, budget: int) -> pd.Series:
    """Per seed 0..budget-1, how many of a full probe's extracted captions (`extracted`: prompt -> bool) copied their
    own picture in that seed's draw."""
    copied = matches[(matches["kind"] == "own") & matches["prompt"].map(extracted).fillna(False).astype(bool)]
    return copied.groupby("seed").size().reindex(range(budget), fill_value=0)


def seed_order(matches: pd.DataFrame, extracted: pd.Series, budget: int) -> list[int]:
    """The seeds 0..budget-1, those whose draws copied the most of a full probe's extracted captions' own pictures
    first (ties: the lower seed). On the quick recipe the same few initial noises held nearly every copy on three
    training seeds, so a second model's full probe says which noises to draw first on the audited one."""
    counts = copies_per_seed(matches, extracted, budget)
    return sorted(range(budget), key=lambda seed: (-int(counts[seed]), seed))


def probe_setting(sample_cfg: SampleConfig, guidance: float) -> str:
    """The drawing a rule's distances belong to."""
    late = f", guided from {sample_cfg.guidance_start:g}" if sample_cfg.guidance_start else ""
    return f"{sample_cfg.sampler}-{sample_cfg.steps}, guidance {guidance:g}{late}"


def draw_state(images: np.ndarray, threshold: float) -> tuple[list[int], float]:
    """A caption's draws so far: the members of their largest clique (pairs within `threshold`, as the full probe's
    `largest_clique`) and the distance of their closest pair (inf below two draws)."""
    return _state(copy_distance(images[:, None], images[None]), threshold)


def _state(d: np.ndarray, threshold: float) -> tuple[list[int], float]:
    """`draw_state` from the draws' pairwise copy distances."""
    if len(d) < 2:
        return list(range(len(d))), math.inf
    upper = np.triu_indices(len(d), k=1)
    graph = nx.Graph()
    graph.add_nodes_from(range(len(d)))
    graph.add_edges_from(zip(*(u[d[upper] < threshold] for u in upper), strict=True))
    return max(nx.find_cliques(graph), key=len), float(d[upper].min())


def decide(clique: int, closest: float, drawn: int, rule: StoppingRule) -> str | None:
    """Why a caption stops after `drawn` draws, or None to draw another round."""
    if clique >= rule.confirm:
        return "confirmed"
    if drawn >= rule.budget:
        return "budget"
    limit = rule.futility.get(drawn)
    return "futile" if limit is not None and closest > limit else None


def trajectories(images: np.ndarray, index: pd.DataFrame, checks: list[int], threshold: float,
                 own: np.ndarray | None = None) -> pd.DataFrame:
    """Per caption and check n, from a full pool: its first n draws' (by seed) largest clique and closest pair and,
    given `own` (per row of `index`: the draw copies the caption's own picture), whether that clique holds a copy."""
    rows = []
    for prompt, group in index.groupby("prompt", sort=False):
        order = group.sort_values("seed").index.to_numpy()
        d = copy_distance(images[order][:, None], images[order][None])  # every prefix reads its corner of it
        for n in checks:
            if n <= len(order):
                members, closest = _state(d[:n, :n], threshold)
                copy = bool(own[order[:n]][members].any()) if own is not None else None
                rows.append((prompt, n, len(members), closest, copy))
    return pd.DataFrame(rows, columns=["prompt", "drawn", "clique", "closest", "copy"])


def replay(paths: pd.DataFrame, rule: StoppingRule) -> pd.DataFrame:
    """Per caption: draws spent, why it stopped and (where `paths` knows) whether its clique then held a copy of its
    own picture, replaying a full pool's trajectories (no new sampling)."""
    out, checks = [], set(rule.checks())
    for prompt, path in paths.groupby("prompt", sort=False):
        stop, drawn, copy = "budget", rule.budget, False
        for row in path.sort_values("drawn").itertuples():
            if row.drawn in checks and (why := decide(row.clique, row.closest, row.drawn, rule)):
                stop, drawn, copy = why, row.drawn, why == "confirmed" and bool(row.copy)
                break
        out.append((prompt, drawn, stop, copy))
    return pd.DataFrame(out, columns=["prompt", "draws", "stop", "copy"])


def _thresholds(paths: pd.DataFrame, truth: pd.Series, checks: list[int], confirm: int, quantile: float,
                margin: float) -> dict[int, float]:
    """Per check: the `quantile` of the closest-pair distance of the extracted captions not yet confirmed there,
    widened by `margin`; no threshold (never futile) at a check where none is left open."""
    open_truth = paths[paths["prompt"].map(truth).fillna(False).astype(bool)]
    confirmed_at = open_truth[open_truth["clique"] >= confirm].groupby("prompt")["drawn"].min()
    limits = {}
    for n in checks[:-1]:
        here = open_truth[(open_truth["drawn"] == n) & (open_truth["prompt"].map(confirmed_at).fillna(math.inf) > n)]
        if len(here):
            limits[n] = float(np.quantile(here["closest"], quantile, method="higher")) * (1 + margin)
    return limits


def fit_rule(paths: pd.DataFrame, truth: pd.Series, groups: pd.Series, template: StoppingRule) -> StoppingRule:
    """`template` with thresholds fitted on a second model's full pool (`paths` from `trajectories` with `own`;
    `truth`: prompt -> extracted by the full probe). The miss rate is estimated leaving each picture (`groups`:
    prompt -> picture) out in turn, its captions replayed against thresholds fitted without them, since captions of
    one picture move together."""
    checks, r = template.checks(), template

    def fitted(without: pd.Index) -> StoppingRule:
        limits = _thresholds(paths, truth.drop(without), checks, r.confirm, r.quantile, r.margin)
        return StoppingRule(**{**asdict(r), "futility": limits, "miss": None})

    found = truth[truth].index
    futile = without_copy = 0
    for picture in groups.reindex(found).unique():
        mine = found[groups.reindex(found).to_numpy() == picture]
        stops = replay(paths[paths["prompt"].isin(mine)], fitted(mine))
        futile += int((stops["stop"] == "futile").sum())
        without_copy += int(((stops["stop"] == "confirmed") & ~stops["copy"]).sum())
    missed = futile + without_copy
    low, high = clopper_pearson(missed, len(found))
    miss = Miss(missed, len(found), missed / len(found) if len(found) else math.nan, low, high, without_copy)
    return StoppingRule(**{**asdict(fitted(pd.Index([]))), "miss": asdict(miss)})


def check_rule(rule: StoppingRule, pipe: AuditPipeline, budget: int, confirm: int, edge_threshold: float,
               compare_size: int, setting: str) -> None:
    """Refuse a rule that would not stop captions the way it was fitted: fitted on the audited model itself (its
    labels would choose its thresholds), or for another budget, clique, comparison size or drawing."""
    if rule.fitted_on == pipe.model_hash():
        raise ConfigError(f"the stopping rule was fitted on the audited model ({rule.fitted_on}); fit it on a second "
                          "model (another training seed), never on the one it audits")
    want = {"budget N": budget, "clique": confirm, "clique edge": edge_threshold, "compare size": compare_size,
            "drawing": setting}
    have = {"budget N": rule.budget, "clique": rule.confirm, "clique edge": rule.edge_threshold,
            "compare size": rule.compare_size, "drawing": rule.setting}
    differ = [k for k in want if have[k] != want[k]]
    if differ:
        raise ConfigError("the stopping rule was fitted for " + ", ".join(f"{k} {have[k]}" for k in differ)
                          + "; this probe asks " + ", ".join(f"{k} {want[k]}" for k in differ))


def draw_sequentially(pipe: AuditPipeline, prompts: list[str], rule: StoppingRule, guidance: float,
                      sample_cfg: SampleConfig, out: Path, side: int, progress: Progress | None = None,
                      conditioning: Conditioning | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw each caption's generations round by round into `out` (a samples folder keyed like the full probe's, so
    either reuses the other's draws) until `rule` stops it. Returns the index rows drawn and, per caption, its draws
    and why it stopped."""
    open_, drawn_rows, stops, order = list(prompts), [], {}, rule.seeds()
    task = progress.add_task("sequential probe", total=len(prompts)) if progress else None
    for start in range(0, rule.budget, rule.round_size):
        seeds = order[start:start + rule.round_size]
        drawn = start + len(seeds)
        drawn_rows.append(generate(pipe, open_, seeds, [guidance], sample_cfg, out, conditioning=conditioning))
        rows = pd.concat(drawn_rows, ignore_index=True)
        images, index = load_samples(out, rows[rows["prompt"].isin(open_)], side)
        for prompt, group in index.groupby("prompt", sort=False):
            members, closest = draw_state(images[group.index.to_numpy()], rule.edge_threshold)
            why = decide(len(members), closest, drawn, rule)
            if why:
                stops[prompt] = (drawn, why)
        if task is not None:
            progress.advance(task, sum(p in stops for p in open_))
        open_ = [p for p in open_ if p not in stops]
        if not open_:
            break
    table = pd.DataFrame([(p, *stops[p]) for p in prompts], columns=["prompt", "draws", "stop"])
    return pd.concat(drawn_rows, ignore_index=True), table
