"""The attacker who holds the model file: samples the weights at the guidance they choose (the base setting, where
the static probe copied most), with the caption as written and no inference-time setting in the way."""

from diffaudit.attacks.adaptive.base import Probe, Query
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.model.arm import Arm
from diffaudit.model.conditioning import Text


class WeightsHolder(Probe):
    name = "weights-holder"
    title = "someone with the model file, using their own settings"
    short = "the model file"
    access = "weights"

    def query(self, arm: Arm, preset: Preset, data: ImageDataset, targets: list[str]) -> Query:
        return Query(Text(), preset.sample.guidance)
