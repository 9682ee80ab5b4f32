"""Deduplicate the training set (by caption, or by image) and retrain from scratch by the base recipe."""

import json

from diffaudit.config import Preset
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.mitigations.base import Context, Mitigation, Variant
from diffaudit.mitigations.dedup import DedupConfig, deduplicate
from diffaudit.model.arm import Arm
from diffaudit.words import Description

TITLES = {"caption": "Remove repeated captions", "image": "Remove repeated pictures"}


class RetrainDeduplicated(Mitigation):
    kind = "dedup"

    def variants(self, preset: Preset) -> list[Variant]:
        return [Variant(f"dedup-{target}", target) for target in preset.dedup.targets]

    def apply(self, variant: Variant, ctx: Context) -> Arm:
        methods = ctx.preset.dedup.methods if variant.value == "caption" else ("image",)
        folder = ctx.folder / "data"
        if not (folder / "dedup_report.json").exists():
            deduplicate(ctx.data, folder, tuple(methods), DedupConfig(), encode=ctx.base().encode_text)
        report = json.loads((folder / "dedup_report.json").read_text())
        data = load_imagefolder(folder)
        pipe, seconds = ctx.retrain(data, ctx.folder / "train")
        return Arm(pipe, ctx.preset.sample.guidance, members=data,
                   record={"dataset_version": data.version, "dedup": report, "train_seconds": seconds})

    def describe(self, variant: Variant, record: dict) -> Description:
        report = record["dedup"]
        removed, before = report["member_rows_removed"], report.get("member_rows_before")
        share = f" ({removed / before:.0%} of the {before:,} training rows)" if before else ""
        return Description(TITLES[str(variant.value)], f"A new model, trained without {removed:,} repeated entries.",
                           lasts="data", note=f"It removed {removed:,} training entries{share}.")
