"""The white-box attacker who searches the text-embedding space (after Wen et al. 2024 and "Finding Dori", 2025):
from each target caption's embedding, climb the memorization signal for a fixed budget of Adam steps, then sample
through the arm's own settings. The search never sees the target picture; its negative control (the same search
on never-trained captions, `study.adaptive_audit`) measures how often it "finds" a picture the model never saw."""

from diffaudit.attacks.adaptive.base import Probe, Query
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.model.arm import Arm
from diffaudit.model.conditioning import EmbeddingSearch


class EmbeddingSearchProbe(Probe):
    name = "embedding-search"
    title = "someone who tunes the caption's internal form with the model file"
    short = "tuning with the model file"
    access = "weights"

    def query(self, arm: Arm, preset: Preset, data: ImageDataset, targets: list[str]) -> Query:
        return Query(arm.conditioning(search(preset)), arm.guidance, arm.sampling)


def search(preset: Preset) -> EmbeddingSearch:
    return EmbeddingSearch(preset.adaptive.search_steps, preset.adaptive.search_step,
                           sampling_steps=preset.sample.steps)
