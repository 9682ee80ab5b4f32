"""Training-time caption randomization (Somepalli et al. 2023b, "Understanding and Mitigating Copying in Diffusion
Models"): captions are perturbed while training so that one exact caption is tied less tightly to one image.

Each member row gets `variants` caption variants, drawn once and seeded: with probability `replace_prob` the
caption is replaced by random words of the training vocabulary, else `insert_words` random words are inserted with
probability `insert_prob` (with the defaults, 45% of variants stay the original caption). Training samples rows
uniformly, so each image keeps its share of the training draws (its exposure in expectation) and a step sees one of
its variants at random. The audit probes with the original captions, as a user types them.
"""

import numpy as np
import pandas as pd

from diffaudit.config import CaptionRandomizationConfig, Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.mitigations.base import Context, Mitigation, Variant
from diffaudit.model.arm import Arm
from diffaudit.words import Description

NAME = "caption-random"


def _perturb(text: str, vocab: list[str], rng: np.random.Generator, cfg: CaptionRandomizationConfig) -> str:
    words = text.split()
    if rng.random() < cfg.replace_prob:
        return " ".join(rng.choice(vocab, size=len(words)))
    if rng.random() < cfg.insert_prob:
        for _ in range(cfg.insert_words):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(vocab)))
    return " ".join(words)


def randomized_captions(data: ImageDataset, cfg: CaptionRandomizationConfig) -> ImageDataset:
    """`data` with every member row repeated `variants` times under perturbed captions; other splits unchanged."""
    members = data.split("member")
    vocab = sorted({w for t in members.texts for w in t.split()})
    rng = np.random.default_rng([cfg.seed, 2023])
    parts = [members.table.assign(text=[_perturb(t, vocab, rng, cfg) for t in members.texts],
                                  id=members.table["id"] + f"~{v}") for v in range(cfg.variants)]
    rest = data.table["split"] != "member"
    table = pd.concat([*parts, data.table[rest]], ignore_index=True)
    images = np.concatenate([*[members.images] * cfg.variants, data.images[rest.to_numpy()]])
    return ImageDataset(data.root, images, table)


class CaptionRandomization(Mitigation):
    kind = "caption-randomization"

    def variants(self, preset: Preset) -> list[Variant]:
        return [Variant(NAME, NAME)]

    def apply(self, variant: Variant, ctx: Context) -> Arm:
        data = randomized_captions(ctx.data, ctx.preset.caption_randomization)
        pipe, seconds = ctx.retrain(data, ctx.folder / "train")
        return Arm(pipe, ctx.preset.sample.guidance, record={"dataset_version": data.version, "train_seconds": seconds,
                                                              "caption_randomization":
                                                                  ctx.preset.caption_randomization.model_dump()})

    def describe(self, variant: Variant, record: dict) -> Description:
        cfg = record["caption_randomization"]
        altered = cfg["replace_prob"] + (1 - cfg["replace_prob"]) * cfg["insert_prob"]
        return Description("Randomize captions while training",
                           f"A new model, trained with {cfg['variants']} versions of each caption, about "
                           f"{altered:.0%} of them altered at random.")
