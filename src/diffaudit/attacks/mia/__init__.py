"""Membership-inference attacks on diffusion models, one per module, found by name in `ATTACKS`.

Each attack has `score(pipe, batch) -> per-sample scores` (higher = more likely a member) and `queries`,
the number of UNet evaluations it spends per sample on the target model.
"""

from collections.abc import Callable
from typing import Protocol

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


ATTACKS: dict[str, Callable[[], Attack]] = {
    "loss": lambda: LossAttack(timesteps=(100,), draws=4),  # Carlini et al. 2023: t = 100 of 1000
    "loss-avg": lambda: LossAttack(timesteps=tuple(range(50, 1000, 100)), draws=1),
    "pia": PIA,
    "secmi": SecMI,
    "clid": CLiD,
}
