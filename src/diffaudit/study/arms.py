"""The study's rows as one list of arms: the base model, the tiered audit of it, and each mitigation variant.

The runner loops over this list and asks each arm what it is (a model every sampler, probe and control audits, or the
tiered audit, which ranks captions of the base's own samples); no other module lists the arms or names them.
"""

from dataclasses import dataclass

from diffaudit.config import Preset
from diffaudit.mitigations.base import Mitigation, Variant
from diffaudit.mitigations.registry import MITIGATIONS

BASE = "base"  # the model every mitigation is compared with; its samples are the ones the tiered audit re-ranks
TIERED = f"{BASE}-tiered"
NO_MITIGATION = "none"  # the base row's kind
DETECTION = "detection"  # the tiered row's kind


@dataclass(frozen=True)
class StudyArm:
    """One row of the study: its name, the kind its row carries and, for a mitigation, what it applies."""

    name: str
    kind: str
    mitigation: Mitigation | None = None
    variant: Variant | None = None

    @property
    def is_model(self) -> bool:
        """A model audited like the base (samplers, probes, controls); the tiered audit only re-ranks captions."""
        return self.kind != DETECTION

    @property
    def on_reference_samplers(self) -> bool:
        """Measured under the reference samplers too: the base, and a mitigation that is a sampling setting."""
        return self.is_model and (self.mitigation is None or self.mitigation.on_reference_samplers)

    def record(self) -> dict:
        """The row's typed mitigation setting (`variant`), for the readers that describe it; none without one."""
        return {"variant": self.variant.as_record()} if self.variant else {}


def study_arms(preset: Preset) -> dict[str, StudyArm]:
    """Every arm of a study under `preset`, by name, in the order they run: the base and its tiered audit first, then
    each configured mitigation's variants."""
    arms = [StudyArm(BASE, NO_MITIGATION), StudyArm(TIERED, DETECTION)]
    arms += [StudyArm(v.name, kind, MITIGATIONS[kind], v) for kind in preset.study.mitigations
             for v in MITIGATIONS[kind].variants(preset)]
    return {arm.name: arm for arm in arms}
