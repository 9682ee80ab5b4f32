"""The interface of an adaptive probe: what an attacker who tries harder sends to a mitigated model.

A probe turns an arm (weights, guidance, inference-time setting) into a `Query`: the conditioning and guidance its
generations are drawn with. The extraction itself (generation, clique filter, copy test against the target
caption's own image, the UNet-evaluation counter) is the static probe's, unchanged, so the two rates compare.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.model.arm import Arm
from diffaudit.model.conditioning import Conditioning


@dataclass(frozen=True)
class Query:
    conditioning: Conditioning
    guidance: float
    sampling: dict = field(default_factory=dict)  # SampleConfig fields drawn with (an arm's setting kept, or not)


class Probe(ABC):
    name: ClassVar[str]
    title: ClassVar[str]  # plain words for the memo: "someone with the model file", ...
    short: ClassVar[str]  # the same in two or three words, for a table cell: "the model file"
    access: ClassVar[str]  # "weights" (white-box) or "service" (can only send captions)

    @abstractmethod
    def query(self, arm: Arm, preset: Preset, data: ImageDataset, targets: list[str]) -> Query:
        """What this attacker sends to `arm` for the target captions."""
