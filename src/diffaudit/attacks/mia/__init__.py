"""Membership-inference attacks on diffusion models, one per module, found by name in `ATTACKS`.

Each attack has `score(pipe, batch) -> per-sample scores` (higher = more likely a member) and `queries`,
the number of UNet evaluations it spends per sample on the target model. Timesteps are given in the papers'
linear-schedule units and matched to the audited model's schedule by noise level (`common.matched_timestep`).
Each entry's `grid` lists the settings `tuning.tune` may choose among, on labelled data kept apart from the scored
samples.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from diffaudit.attacks.mia.clid import CLiD
from diffaudit.attacks.mia.common import QueryBatch
from diffaudit.attacks.mia.loss import LossAttack
from diffaudit.attacks.mia.pia import PIA
from diffaudit.attacks.mia.secmi import SecMI
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.registry import Registry


class Attack(Protocol):
    queries: int

    def score(self, pipe: AuditPipeline, batch: QueryBatch) -> np.ndarray: ...


@dataclass(frozen=True)
class AttackKind:
    """A registered attack: how to build it with given settings, the settings `tuning.tune` may choose among (the
    paper's default first), and what it needs from the model (the assumptions register and the memo's wording)."""

    make: Callable[..., Attack]
    grid: list[dict[str, Any]]
    access: str


# The grids span the noise levels where each attack's signal was seen to move (SecMI's direction flips between linear
# t = 10 and 100 on our model). CLiD chooses its alpha inside `fit`; its timesteps are in Stable Diffusion's
# schedule, the others' in DDPM's linear one.
ATTACKS: Registry[AttackKind] = Registry("membership attack", "membership.attacks", {
    "loss": AttackKind(LossAttack, [{"timesteps": (t,)} for t in (100, 20, 50, 200, 300)],  # Carlini et al. 2023
                       "white-box: noise predictions at chosen timesteps for (image, training caption) pairs"),
    "loss-avg": AttackKind(lambda **kw: LossAttack(**{"timesteps": tuple(range(50, 1000, 100)), "draws": 1, **kw}),
                           [{}], "white-box: noise predictions at ten timesteps for (image, training caption) pairs"),
    "pia": AttackKind(PIA, [{"t": t} for t in (200, 50, 100, 300)],
                      "white-box: noise predictions at t = 0 and one later step for (image, training caption) pairs"),
    "secmi": AttackKind(SecMI, [{"t": t} for t in (100, 20, 50, 200)],
                        "white-box: deterministic DDIM inversion of the image (11 noise predictions with its caption)"),
    "clid": AttackKind(CLiD, [{"timesteps": (c - 10, c, c + 10)} for c in (495, 100, 200, 300)],
                       "white-box: noise predictions with the training caption and four reduced captions"),
})

# LiRA is not a per-sample scorer (it trains shadow models: study.mia_audit runs it); its access is said the same way.
LIRA_ACCESS = {
    "lira-online": "white-box noise predictions, plus shadow models trained with the target's recipe on halves of "
                   "a pool that contains the candidates",
    "lira-offline": "white-box noise predictions, plus shadow models trained with the target's recipe on data "
                    "that excludes the candidate",
}


def access(name: str) -> str:
    """What attack `name` (a registered one or LiRA) needs from the model."""
    return LIRA_ACCESS[name] if name in LIRA_ACCESS else ATTACKS[name].access
