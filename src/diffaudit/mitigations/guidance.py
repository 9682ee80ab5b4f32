"""Higher classifier-free guidance at sampling: the same weights, another setting (Carlini et al. 2023 report fewer
copies at higher guidance on Stable Diffusion; Ho & Salimans 2022 define the scale)."""

from diffaudit.config import SD_DEFAULT_GUIDANCE, Preset
from diffaudit.mitigations.base import Context, Mitigation, Variant
from diffaudit.model.arm import Arm
from diffaudit.words import Description


class Guidance(Mitigation):
    kind = "guidance"
    on_reference_samplers = True

    def variants(self, preset: Preset) -> list[Variant]:
        return [Variant(f"guidance-{g:g}", g) for g in preset.guidance.sweep if g != preset.sample.guidance]

    def apply(self, variant: Variant, ctx: Context) -> Arm:
        return Arm(ctx.base(), float(variant.value), mia=False)

    def describe(self, variant: Variant, record: dict) -> Description:
        return Description(f"Stronger guidance (scale {variant.value:g})",
                           "Same model; a different setting when making pictures.",
                           undone_by="anyone who holds the model file or can choose the sampling settings",
                           lasts="setting",
                           note="It protects only a hosted service whose users cannot change the setting, and none "
                                "once the model file is released, and its effect depends on the sampler. Stable "
                                f"Diffusion tools already default to scale {SD_DEFAULT_GUIDANCE:g}.")
