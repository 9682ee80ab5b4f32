"""Choose an attack's free settings (timestep, direction, CLiD's alpha and scalers) on labelled tuning data.

The papers fix these on their own models; on ours SecMI's direction flips with the timestep, so a fixed
choice can report chance, or worse, whatever the model memorized. The choice is made on a tuning set that
shares no sample and no near-duplicate family with the scored one, and it is written down beside the result.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffaudit.attacks.metrics import roc_summary
from diffaudit.attacks.mia import ATTACKS, Attack
from diffaudit.attacks.mia.common import QueryBatch
from diffaudit.model.pipeline import AuditPipeline


@dataclass
class Oriented:
    """An attack with its direction: sign -1 when, on the tuning set, members scored lower."""

    attack: Attack
    sign: int = 1
    choice: dict[str, Any] = field(default_factory=dict)

    @property
    def queries(self) -> int:
        return self.attack.queries

    def score(self, pipe: AuditPipeline, batch: QueryBatch) -> np.ndarray:
        return self.sign * self.attack.score(pipe, batch)


def paper_default(name: str) -> Oriented:
    """The attack as published: first grid entry, members score higher."""
    kind = ATTACKS[name]
    return Oriented(kind.make(**kind.grid[0]), 1, {"tuned": False, **kind.grid[0], "sign": 1})


def tune(name: str, pipe: AuditPipeline, batch: QueryBatch, labels: np.ndarray, seed: int = 0) -> Oriented:
    """The grid setting and direction with the highest tuning-set AUC (ties: the earlier, i.e. the paper's).

    The paper's direction is kept unless the tuning data reject it: a setting is reversed only when its AUC's
    upper 95% bound is below 0.5. With a few dozen tuning samples, a bare "AUC < 0.5" is often noise, and
    reversing on noise turns a weak true signal into a confident wrong one (seen on the overfit preset's earliest
    snapshot: loss AUC 0.68 scored as 0.32)."""
    best: tuple[float, Oriented] | None = None
    for params in ATTACKS[name].grid:
        attack = ATTACKS[name].make(**params)
        fitted = attack.fit(pipe, batch, labels) if hasattr(attack, "fit") else {}
        summary = roc_summary(labels, attack.score(pipe, batch), seed=seed)
        reversed_ = summary["auc_ci"][1] < 0.5
        value = 1 - summary["auc"] if reversed_ else summary["auc"]
        if best is None or value > best[0]:
            sign = -1 if reversed_ else 1
            best = (value, Oriented(attack, sign, {"tuned": True, **params, **fitted, "sign": sign,
                                                   "tuning_auc": value, "tuning_auc_ci": summary["auc_ci"]}))
    assert best is not None  # every grid has at least the paper's setting
    best[1].choice["tuning_samples"] = len(labels)
    return best[1]
