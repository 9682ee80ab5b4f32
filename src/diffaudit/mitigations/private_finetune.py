"""DP-SGD fine-tuning of the base model on the calibration split, with its privacy audit (see dp_finetune, dp_audit).

Epsilon = inf is the audit's positive control (the same fine-tune without clipping or noise): the study runs it
beside the arms through `PrivateFinetune.control`, not as an arm."""

import json
from dataclasses import asdict
from pathlib import Path

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
    s = ctx.preset.dp
    cfg = DPConfig(epsilon=eps, delta=s.delta, steps=s.steps, expected_batch=s.expected_batch,
                   multiplicity=s.multiplicity, lr=s.lr, seed=ctx.seed)
    calibration = ctx.data.split("calibration")
    done = _finished(ctx.folder / "dp_report.json", cfg)
    if done is not None:
        pipe, report = AuditPipeline.from_pretrained(ctx.folder / "model", ctx.preset.runtime), done
    elif (committed := _committed(ctx, cfg)) is not None:
        if ctx.progress is not None:
            ctx.progress.console.print(f"model: {committed} (committed DP fine-tune)")
        pipe = AuditPipeline.from_pretrained(committed, ctx.preset.runtime)
        report = json.loads((committed / "dp_report.json").read_text())
    else:
        pipe, report = dp_finetune(trainable_copy(ctx.base()), calibration, cfg, ctx.folder, ctx.progress)
    audit = dp_audit(ctx.base(), pipe, calibration, ctx.data.split("nonmember"), eps, s.delta, ctx.seed)
    return pipe, {"dp": report, "dp_audit": audit, "train_seconds": report["seconds"]}


def _finished(path: Path, cfg: DPConfig) -> dict | None:
    """The report of a fine-tune made with exactly `cfg` (any other is redone, not reused)."""
    saved = json.loads(path.read_text()) if path.exists() else {}
    return saved if saved and all(saved.get(k) == v for k, v in jsonable(asdict(cfg)).items()) else None


def _committed(ctx: Context, cfg: DPConfig) -> Path | None:
    """A committed fine-tune (model.prepare.library) made with `cfg` from this base model on this dataset: its
    `committed.json` names the inputs it was made from."""
    inputs = {"base_model_hash": ctx.base().model_hash(), "dataset_version": ctx.data.version}
    for folder in ctx.library:
        made_from = folder / "committed.json"
        if _finished(folder / "dp_report.json", cfg) is None or not made_from.exists():
            continue
        recorded = json.loads(made_from.read_text())  # read once, not once per input
        if {k: recorded.get(k) for k in inputs} == inputs:
            return folder
    return None


class PrivateFinetune(Mitigation):
    kind = "dp"

    def control_name(self, preset: Preset) -> str | None:
        return "dp-nonprivate" if preset.dp.control else None

    def control(self, ctx: Context) -> dict:
        """The privacy audit's power check: the same fine-tune without clipping or noise."""
        return {"kind": self.kind, **finetune_and_audit(float("inf"), ctx)[1]}

    def variants(self, preset: Preset) -> list[Variant]:
        return [Variant(f"dp-eps{eps:g}", eps) for eps in preset.dp.epsilons]

    def apply(self, variant: Variant, ctx: Context) -> Arm:
        pipe, record = finetune_and_audit(float(variant.value), ctx)
        return Arm(pipe, ctx.preset.sample.guidance, record=record)

    def describe(self, variant: Variant, record: dict) -> Description:
        n = record["dp"]["calibration_examples"]
        return Description(f"Private fine-tuning (epsilon {variant.value:g})",
                           f"Extra training on {n} spare pictures with differential privacy.",
                           note=f"Its privacy guarantee covers only those {n} pictures, not the training set.")
