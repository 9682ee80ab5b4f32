"""Membership-inference attacks on diffusion models, one per module, found by name in `ATTACKS`.

Each attack has `score(pipe, batch) -> per-sample scores` (higher = more likely a member) and `queries`,
the number of UNet evaluations it spends per sample on the target model. Timesteps are given in the papers'
linear-schedule units and matched to the audited model's schedule by noise level (`common.matched_timestep`).
`GRIDS` lists the settings `tuning.tune` may choose among, on labelled data kept apart from the scored samples.
"""

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from diffaudit.attacks.mia.clid import CLiD
from diffaudit.attacks.mia.common import QueryBatch
from diffaudit.attacks.mia.loss import LossAttack
from diffaudit.attacks.mia.pia import PIA
from diffaudit.attacks.mia.secmi import SecMI
from diffaudit.model.pipeline import AuditPipeline


class Attack(Protocol):
    queries: int

    def score(self, pipe: AuditPipeline, batch: QueryBatch) -> np.ndarray: ...


ATTACKS: dict[str, Callable[..., Attack]] = {
    "loss": LossAttack,  # Carlini et al. 2023: t = 100 of 1000, 4 draws
    "loss-avg": lambda **kw: LossAttack(**{"timesteps": tuple(range(50, 1000, 100)), "draws": 1, **kw}),
    "pia": PIA,
    "secmi": SecMI,
    "clid": CLiD,
}

# The papers' defaults come first; the rest span the noise levels where each attack's signal was seen to move
# (SecMI's direction flips between linear t = 10 and 100 on our model). CLiD chooses its alpha inside `fit`; its
# timesteps are in Stable Diffusion's schedule, the others' in DDPM's linear one.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "loss": [{"timesteps": (t,)} for t in (100, 20, 50, 200, 300)],
    "loss-avg": [{}],
    "pia": [{"t": t} for t in (200, 50, 100, 300)],
    "secmi": [{"t": t} for t in (100, 20, 50, 200)],
    "clid": [{"timesteps": (c - 10, c, c + 10)} for c in (495, 100, 200, 300)],  # Stable Diffusion's schedule
}

# What each attack needs from the model: written to the assumptions register and echoed in the memo's wording.
ACCESS: dict[str, str] = {
    "loss": "white-box: noise predictions at chosen timesteps for (image, training caption) pairs",
    "loss-avg": "white-box: noise predictions at ten timesteps for (image, training caption) pairs",
    "pia": "white-box: noise predictions at t = 0 and one later step for (image, training caption) pairs",
    "secmi": "white-box: deterministic DDIM inversion of the image (11 noise predictions with its caption)",
    "clid": "white-box: noise predictions with the training caption and four reduced captions",
    "lira-online": "white-box noise predictions, plus shadow models trained with the target's recipe on halves of "
                   "a pool that contains the candidates",
    "lira-offline": "white-box noise predictions, plus shadow models trained with the target's recipe on data "
                    "that excludes the candidate",
}
