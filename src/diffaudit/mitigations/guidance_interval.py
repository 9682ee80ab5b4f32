"""Guidance kept out of the first sampling steps (Jain et al., CVPR 2025, "Classifier-free guidance inside the
attraction basin may cause memorization"): the best published form of mitigation (b), beside plain higher guidance.

Its start is a choice, so it is made where it cannot fit the audited model: on a base model trained with another seed,
by the same owner's check that judges the arm. The start with the fewest captions copying their own picture there
wins; ties go to the earlier start (more guidance, closer to what the scale asks for)."""

import json

from diffaudit.config import Preset
from diffaudit.io import write_json
from diffaudit.mitigations.base import Context, Mitigation, Variant
from diffaudit.model.arm import Arm
from diffaudit.words import Description


def choose_start(ctx: Context, guidance: float) -> dict:
    """The start of guidance, chosen on the second-seed model (kept in the arm's folder, so it is chosen once)."""
    path = ctx.folder / "start_choice.json"
    starts = list(ctx.preset.guidance.starts)
    if path.exists() and (saved := json.loads(path.read_text())).get("guidance") == guidance and [
            c["start"] for c in saved["candidates"]] == starts and saved["chosen_on"] == f"seed {ctx.second_seed}":
        return saved  # chosen already, for this scale, these candidates and this second seed
    pipe, candidates = ctx.second_base(), []
    for start in starts:
        summary = ctx.copies(pipe, guidance, {"guidance_start": start}, ctx.folder / "choice" / f"start-{start:g}")
        candidates.append({"start": start, "owner_prompts": summary["oracle_memorized_prompts"],
                           "probe_prompts": summary["prompts_with_copy"]})
    best = min(candidates, key=lambda c: (c["owner_prompts"], c["start"]))
    choice = {"start": best["start"], "guidance": guidance, "candidates": candidates,
              "chosen_on": f"seed {ctx.second_seed}",
              "model_hash": pipe.model_hash()}
    write_json(path, choice)
    return choice


class GuidanceInterval(Mitigation):
    kind = "guidance-interval"

    def variants(self, preset: Preset) -> list[Variant]:
        return [Variant(f"guidance-interval-{g:g}", g) for g in preset.guidance.interval]

    def apply(self, variant: Variant, ctx: Context) -> Arm:
        guidance = float(variant.value)
        choice = choose_start(ctx, guidance)
        return Arm(ctx.base(), guidance, mia=False, sampling={"guidance_start": choice["start"]},
                   record={"start_choice": choice})

    def describe(self, variant: Variant, record: dict) -> Description:
        start = record["start_choice"]["start"]
        return Description(f"Guidance after the first steps (scale {variant.value:g})",
                           f"Same model; guidance switched on only after the first {start:.0%} of the drawing steps.",
                           undone_by="anyone who holds the model file or can choose the sampling settings",
                           lasts="setting",
                           note=f"Its start was chosen on a model trained with another seed "
                                f"({record['start_choice']['chosen_on']}), not on the audited one.")
