"""Inference-time mitigations: the same weights, sampled through a setting that changes the conditioning.

- Somepalli et al. 2023b: Gaussian noise on the text embedding (GNI) and random word insertion (RT), fresh for
  every generation;
- Wen et al. 2024: lower the text-guidance norm of the conditioning by a few Adam steps until it is below a
  threshold, chosen here as a quantile of never-trained (calibration-split) captions' norms, never on the audited
  captions.
Each wraps whatever conditioning a user sends, so an attacker's paraphrase passes through it too; anyone who holds
the weights samples without it.
"""

import numpy as np
import torch

from diffaudit.attacks.detect.wen import WenTextNorm
from diffaudit.config import Preset
from diffaudit.mitigations.base import Context, Mitigation, Variant
from diffaudit.model.arm import Arm
from diffaudit.model.conditioning import EmbeddingNoise, NormMinimised, RandomWords
from diffaudit.words import Description

NOISE, WORDS, NORM = "embedding-noise", "random-words", "norm-minimised"
SETTING = dict(undone_by="anyone who holds the model file or can choose the sampling settings", lasts="setting",
               note="It protects only a hosted service whose users cannot change the setting, and none once the "
                    "model file is released.")


class InferenceTime(Mitigation):
    kind = "inference"

    def variants(self, preset: Preset) -> list[Variant]:
        return [Variant(name, name) for name in (NOISE, WORDS, NORM)]

    def apply(self, variant: Variant, ctx: Context) -> Arm:
        cfg, base = ctx.preset.inference, ctx.base()
        if variant.value == NOISE:
            with torch.inference_mode():
                spread = float(base.encode_text(list(ctx.data.split("member").texts)).float().std())
            sigma = cfg.noise_scale * spread
            return Arm(base, ctx.preset.sample.guidance, mia=False, wrap=lambda inner: EmbeddingNoise(inner, sigma),
                       record={"inference": {"sigma": sigma, "embedding_std": spread}})
        if variant.value == WORDS:
            vocab = sorted({w for t in ctx.data.split("member").texts for w in t.split()})
            return Arm(base, ctx.preset.sample.guidance, mia=False,
                       wrap=lambda inner: RandomWords.wrap_typed(inner, vocab, cfg.random_words),
                       record={"inference": {"words": cfg.random_words, "vocabulary": len(vocab)}})
        with base.denoiser.counting() as spent:
            norms = WenTextNorm(generations=2, steps=1, sampling_steps=ctx.preset.sample.steps).score(
                base, list(ctx.data.split("calibration").texts))
        threshold = float(np.quantile(norms, cfg.norm_quantile))
        return Arm(base, ctx.preset.sample.guidance, mia=False,
                   wrap=lambda inner: NormMinimised(inner, threshold, cfg.norm_steps, cfg.norm_lr,
                                                    sampling_steps=ctx.preset.sample.steps),
                   record={"inference": {"threshold": threshold, "quantile": cfg.norm_quantile,
                                         "calibration_captions": len(norms), "steps": cfg.norm_steps,
                                         "threshold_unet_evaluations": spent.evaluations}})

    def describe(self, variant: Variant, record: dict) -> Description:
        info = record["inference"]
        if variant.value == NOISE:
            return Description("Add noise to the caption's meaning", "Same model; random noise added to the "
                               "caption's internal form for each picture.", **SETTING)
        if variant.value == WORDS:
            return Description("Add random words to the caption", f"Same model; {info['words']} random words added "
                               "to each caption before making each picture.", **SETTING)
        return Description("Weaken captions that pull too hard", "Same model; each caption's pull on the picture "
                           "is reduced to a typical level before making pictures.", **SETTING)
