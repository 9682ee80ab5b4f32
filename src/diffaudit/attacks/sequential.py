"""A sequential extraction probe: the full probe's generations drawn in small rounds, in seed order, so a caption stops
as soon as its draws settle it.

A caption stops *confirmed* once its draws hold a clique of the size the full probe asks at its budget N (then, as in
the full probe, the clique is matched against the training set), and *futile* once its two closest draws are farther
apart than the rule's threshold for that many draws. Only the generations stop a caption. No distribution-free bound is
small after a few draws (a caption whose N = 16 clique is exactly 3 has all three outside its first 4 draws with
probability C(13,4)/C(16,4) ~ 0.39), so the thresholds are fitted on a second model's full probe (`fit_rule`), never
on the evaluated model's labels, and the rule carries the miss rate estimated there.
"""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

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


@dataclass(frozen=True)
class StoppingRule:
    """When a caption stops. `futility[n]`: after n draws, stop when the closest pair of draws is farther than this."""
    budget: int  # the full probe's N
    round_size: int
    confirm: int  # clique size that flags a caption: the full probe's at N
    edge_threshold: float
    futility: dict[int, float]
    fitted_on: str  # model hash of the second model the thresholds were fitted on
    quantile: float  # of the fitting model's extracted captions' closest-pair distances, per check
    margin: float  # thresholds widened by this share
    miss: dict  # the miss rate estimated on the fitting model, leaving each picture out in turn

    def checks(self) -> list[int]:
        """Draw counts after which captions are looked at: every round, and the budget."""
        return sorted({*range(self.round_size, self.budget, self.round_size), self.budget})

    def save(self, path: Path) -> None:
        write_json(Path(path), asdict(self))

    @classmethod
    def load(cls, path: Path) -> "StoppingRule":
        try:
            raw = json.loads(Path(path).read_text())
            raw["futility"] = {int(n): float(t) for n, t in raw["futility"].items()}
            rule = cls(**raw)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ConfigError(f"{path} is not a stopping rule written by `diffaudit stopping-rule`: {err}") from err
        if not 1 <= rule.round_size <= rule.budget or rule.confirm < 2:
            raise ConfigError(f"{path}: round_size must be 1..budget and confirm at least 2")
        return rule


def draw_state(images: np.ndarray, threshold: float) -> tuple[int, float]:
    """A caption's draws so far: the size of their largest clique (pairs within `threshold`) and the distance of their
    closest pair (inf below two draws)."""
    if len(images) < 2:
        return len(images), math.inf
    d = copy_distance(images[:, None], images[None])
    upper = np.triu_indices(len(images), k=1)
    graph = nx.Graph()
    graph.add_nodes_from(range(len(images)))
    graph.add_edges_from(zip(*(u[d[upper] < threshold] for u in upper), strict=True))
    return max(len(c) for c in nx.find_cliques(graph)), float(d[upper].min())


def decide(clique: int, closest: float, drawn: int, rule: StoppingRule) -> str | None:
    """Why a caption stops after `drawn` draws, or None to draw another round."""
    if clique >= rule.confirm:
        return "confirmed"
    if drawn >= rule.budget:
        return "budget"
    limit = rule.futility.get(drawn)
    return "futile" if limit is not None and closest > limit else None


def trajectories(images: np.ndarray, index: pd.DataFrame, checks: list[int], threshold: float) -> pd.DataFrame:
    """Per caption and check n: its first n draws' (by seed) largest clique and closest pair, from a full pool."""
    rows = []
    for prompt, group in index.groupby("prompt", sort=False):
        order = group.sort_values("seed").index.to_numpy()
        for n in checks:
            if n <= len(order):
                clique, closest = draw_state(images[order[:n]], threshold)
                rows.append((prompt, n, clique, closest))
    return pd.DataFrame(rows, columns=["prompt", "drawn", "clique", "closest"])


def replay(paths: pd.DataFrame, rule: StoppingRule) -> pd.DataFrame:
    """Per caption: draws spent and why it stopped, replaying a full pool's trajectories (no new sampling)."""
    out, checks = [], set(rule.checks())
    for prompt, path in paths.groupby("prompt", sort=False):
        stop, drawn = "budget", rule.budget
        for row in path.sort_values("drawn").itertuples():
            if row.drawn in checks and (why := decide(row.clique, row.closest, row.drawn, rule)):
                stop, drawn = why, row.drawn
                break
        out.append((prompt, drawn, stop))
    return pd.DataFrame(out, columns=["prompt", "draws", "stop"])


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


def fit_rule(paths: pd.DataFrame, truth: pd.Series, groups: pd.Series, budget: int, round_size: int, confirm: int,
             edge_threshold: float, fitted_on: str, quantile: float = 1.0, margin: float = 0.1) -> StoppingRule:
    """Thresholds from a second model's full pool (`paths` from `trajectories`, `truth`: prompt -> extracted by the
    full probe). The miss rate is estimated leaving each picture (`groups`: prompt -> picture) out in turn: its
    captions are replayed against thresholds fitted without them, since captions of one picture move together."""
    checks = sorted({*range(round_size, budget, round_size), budget})
    rule = StoppingRule(budget, round_size, confirm, edge_threshold,
                        _thresholds(paths, truth, checks, confirm, quantile, margin), fitted_on, quantile, margin, {})
    found = truth[truth].index
    missed = 0
    for picture in groups.reindex(found).unique():
        mine = found[groups.reindex(found).to_numpy() == picture]
        held = StoppingRule(**{**asdict(rule), "futility": _thresholds(paths, truth.drop(mine), checks, confirm,
                                                                       quantile, margin)})
        stops = replay(paths[paths["prompt"].isin(mine)], held)
        missed += int((stops["stop"] == "futile").sum())
    low, high = clopper_pearson(missed, len(found))
    miss = {"missed": missed, "of": len(found), "rate": missed / len(found) if len(found) else float("nan"),
            "ci_low": low, "ci_high": high, "how": "leave one picture out, on the fitting model"}
    return StoppingRule(**{**asdict(rule), "miss": miss})


def check_rule(rule: StoppingRule, pipe: AuditPipeline, budget: int, edge_threshold: float) -> None:
    """Refuse a rule that would not stop captions the way it was fitted: fitted on the audited model itself (its
    labels would choose its thresholds), for another budget N or another clique edge."""
    if rule.fitted_on == pipe.model_hash():
        raise ConfigError(f"the stopping rule was fitted on the audited model ({rule.fitted_on}); fit it on a second "
                          "model (another training seed), never on the one it audits")
    if rule.budget != budget or not math.isclose(rule.edge_threshold, edge_threshold):
        raise ConfigError(f"the stopping rule was fitted for N = {rule.budget} generations and clique edge "
                          f"{rule.edge_threshold:g}; this probe asks N = {budget}, edge {edge_threshold:g}")


def draw_sequentially(pipe: AuditPipeline, prompts: list[str], rule: StoppingRule, guidance: float,
                      sample_cfg: SampleConfig, out: Path, side: int, progress: Progress | None = None,
                      conditioning: Conditioning | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw each caption's generations round by round into `out` (a samples folder keyed like the full probe's, so
    either reuses the other's draws) until `rule` stops it. Returns the index rows drawn and, per caption, its draws
    and why it stopped."""
    open_, drawn_rows, stops = list(prompts), [], {}
    task = progress.add_task("sequential probe", total=len(prompts)) if progress else None
    for start in range(0, rule.budget, rule.round_size):
        seeds = list(range(start, min(start + rule.round_size, rule.budget)))
        drawn_rows.append(generate(pipe, open_, seeds, [guidance], sample_cfg, out, conditioning=conditioning))
        rows = pd.concat(drawn_rows, ignore_index=True)
        images, index = load_samples(out, rows[rows["prompt"].isin(open_)], side)
        for prompt, group in index.groupby("prompt", sort=False):
            why = decide(*draw_state(images[group.index.to_numpy()], rule.edge_threshold), seeds[-1] + 1, rule)
            if why:
                stops[prompt] = (seeds[-1] + 1, why)
        if task is not None:
            progress.advance(task, sum(p in stops for p in open_))
        open_ = [p for p in open_ if p not in stops]
        if not open_:
            break
    table = pd.DataFrame([(p, *stops[p]) for p in prompts], columns=["prompt", "draws", "stop"])
    return pd.concat(drawn_rows, ignore_index=True), table
