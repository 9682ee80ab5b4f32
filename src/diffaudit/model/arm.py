"""What an audit is run against: a model and how it is sampled (the study's base, a mitigation's output)."""

from collections.abc import Callable
from dataclasses import dataclass, field

from diffaudit.data.imagefolder import ImageDataset
from diffaudit.model.conditioning import Conditioning
from diffaudit.model.pipeline import AuditPipeline


@dataclass(frozen=True)
class Arm:
    """A mitigated model ready to audit. `members` is the arm's own training set when it differs from the study's
    (membership is then measured on what this model saw); `record` is what the mitigation did and cost. `wrap` is
    an inference-time setting: it transforms whatever conditioning a user sends (the caption's text, or an
    attacker's), as a hosted service would."""

    pipe: AuditPipeline
    guidance: float
    members: ImageDataset | None = None
    mia: bool = True  # false: the same weights as the base (membership cannot differ), so it is not re-measured
    record: dict = field(default_factory=dict)
    wrap: Callable[[Conditioning], Conditioning] | None = None
    sampling: dict = field(default_factory=dict)  # SampleConfig fields the arm sets (e.g. guidance_start)

    def conditioning(self, inner: Conditioning) -> Conditioning:
        """What the model is conditioned on when a user sends `inner` to this arm."""
        return inner if self.wrap is None else self.wrap(inner)
