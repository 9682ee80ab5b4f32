"""Every mitigation the study can run, by kind; `study.mitigations` picks and orders them."""

from diffaudit.mitigations.base import Mitigation, Variant
from diffaudit.mitigations.caption_randomization import CaptionRandomization
from diffaudit.mitigations.guidance import Guidance
from diffaudit.mitigations.guidance_interval import GuidanceInterval
from diffaudit.mitigations.inference import InferenceTime
from diffaudit.mitigations.private_finetune import PrivateFinetune
from diffaudit.mitigations.retrain_dedup import RetrainDeduplicated
from diffaudit.registry import Registry
from diffaudit.words import Description

MITIGATIONS: Registry[Mitigation] = Registry("mitigation", "study.mitigations", {m.kind: m for m in (
    Guidance(), GuidanceInterval(), RetrainDeduplicated(), PrivateFinetune(), CaptionRandomization(), InferenceTime())})


def describe(row: dict) -> Description:
    """Plain words for a results row (its `kind` names the mitigation, its `variant` the arm's typed setting)."""
    return MITIGATIONS[row["kind"]].describe(Variant(**row["variant"]), row)
