"""DP-SGD fine-tuning of the base model on the calibration split, with its privacy audit (see dp_finetune, dp_audit).

Epsilon = inf is the audit's positive control (the same fine-tune without clipping or noise): the study runs it
beside the arms through `PrivateFinetune.control`, not as an arm."""

import json
from dataclasses import asdict

from diffaudit.config import Preset
from diffaudit.io import jsonable
from diffaudit.mitigations.base import Context, Mitigation, Variant, trainable_copy
from diffaudit.mitigations.dp_audit import dp_audit
from diffaudit.mitigations.dp_finetune import DPConfig, dp_finetune
from diffaudit.model.arm import Arm
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.words import Description


def finetune_and_audit(eps: float, ctx: Context) -> tuple[AuditPipeline, dict]:
    """Fine-tune (or reuse a finished fine-tune made with the same settings) and audit its privacy empirically."""
    s = ctx.preset.study
    cfg = DPConfig(epsilon=eps, delta=s.dp_delta, steps=s.dp_steps, expected_batch=s.dp_expected_batch,
                   multiplicity=s.dp_multiplicity, lr=s.dp_lr, seed=ctx.seed)
    calibration = ctx.data.split("calibration")
    saved_path = ctx.folder / "dp_report.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    if saved and all(saved.get(k) == v for k, v in jsonable(asdict(cfg)).items()):  # else redone, not reused
        pipe, report = AuditPipeline.from_pretrained(ctx.folder / "model", ctx.preset.runtime), saved
    else:
        pipe, report = dp_finetune(trainable_copy(ctx.base()), calibration, cfg, ctx.folder, ctx.progress)
    audit = dp_audit(ctx.base(), pipe, calibration, ctx.data.split("nonmember"), eps, s.dp_delta, ctx.seed)
    return pipe, {"dp": report, "dp_audit": audit, "train_seconds": report["seconds"]}


class PrivateFinetune(Mitigation):
    kind = "dp"

    def control_name(self, preset: Preset) -> str | None:
        return "dp-nonprivate" if preset.study.dp_control else None

    def control(self, ctx: Context) -> dict:
        """The privacy audit's power check: the same fine-tune without clipping or noise."""
        return {"kind": self.kind, **finetune_and_audit(float("inf"), ctx)[1]}

    def variants(self, preset: Preset) -> list[Variant]:
        return [Variant(f"dp-eps{eps:g}", eps) for eps in preset.study.dp_epsilons]

    def apply(self, variant: Variant, ctx: Context) -> Arm:
        pipe, record = finetune_and_audit(float(variant.value), ctx)
        return Arm(pipe, ctx.preset.sample.guidance, record=record)

    def describe(self, variant: Variant, record: dict) -> Description:
        n = record["dp"]["calibration_examples"]
        return Description(f"Private fine-tuning (epsilon {variant.value:g})",
                           f"Extra training on {n} spare pictures with differential privacy.",
                           note=f"Its privacy guarantee covers only those {n} pictures, not the training set.")
