"""What docs/architecture.md promises a contributor: a sampler, a membership attack and a mitigation are each one
class (or none, for a sampler) plus one registry line, and the study, its findings and the reports pick them up by
name with nothing else touched. The three here live in this file; the registry lines are the `setitem` calls."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import loose_study
from diffusers import DEISMultistepScheduler

from diffaudit.attacks.mia import ATTACKS, AttackKind
from diffaudit.attacks.mia.common import QueryBatch, batched, matched_timestep, per_sample, scores
from diffaudit.config import Preset, SamplerSetting
from diffaudit.mitigations.base import Context, Mitigation, Variant
from diffaudit.mitigations.registry import MITIGATIONS
from diffaudit.model.arm import Arm
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.progress import make_progress
from diffaudit.report.technical import write_technical
from diffaudit.samplers import SAMPLERS, Sampler
from diffaudit.study.records import StudyResults
from diffaudit.study.runner import run_study
from diffaudit.words import Description


class NoisePrediction:
    """A toy attack: members' noise predictions at one timestep are smaller (a guess, not a published attack)."""

    queries = 1

    def __init__(self, t: int = 100):
        self.t = t

    @torch.inference_mode()
    def score(self, pipe: AuditPipeline, batch: QueryBatch) -> np.ndarray:
        total, t = scores(pipe, len(batch)), matched_timestep(pipe, self.t)
        for sl, x0, cond in batched(batch, 16):
            total[sl] += per_sample(pipe.denoiser(x0, t, cond))
        return -total.cpu().float().numpy()


class HalfGuidance(Mitigation):
    """A toy fix: the same weights, sampled at half the headline guidance."""

    kind = "half-guidance"

    def variants(self, preset: Preset) -> list[Variant]:
        return [Variant("half-guidance", preset.sample.guidance / 2)]

    def apply(self, variant: Variant, ctx: Context) -> Arm:
        return Arm(ctx.base(), float(variant.value), mia=False, record={"halving": {"scale": variant.value}})

    def describe(self, variant: Variant, record: dict) -> Description:
        return Description(f"Half the guidance (scale {variant.value:g})", "Same model; a weaker setting.",
                           undone_by="anyone who can choose the sampling settings", lasts="setting")


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SAMPLERS._entries, "deis", Sampler(DEISMultistepScheduler, "DEIS"))
    monkeypatch.setitem(ATTACKS._entries, "noise-norm", AttackKind(NoisePrediction, [{"t": 100}, {"t": 300}],
                                                                  "white-box: one noise prediction per pair"))
    monkeypatch.setitem(MITIGATIONS._entries, HalfGuidance.kind, HalfGuidance())


def test_a_sampler_an_attack_and_a_mitigation_are_one_registry_line_each(registered: None, tiny: Preset,
                                                                          tiny_model_dir: Path, tmp_path: Path) -> None:
    loose = loose_study(tiny)
    preset = loose.model_copy(update={
        "study": loose.study.model_copy(update={"mitigations": ("half-guidance",), "reference_samplers": (),
                                                "samplers": (SamplerSetting(name="ddim-unclamped", steps=3),
                                                             SamplerSetting(name="deis", steps=3))}),
        "membership": loose.membership.model_copy(update={"attacks": ("loss", "noise-norm"), "control_preset": None}),
        "adaptive": loose.adaptive.model_copy(update={"probes": ()}),
        "forget": loose.forget.model_copy(update={"in_study": False})})
    run_study(preset, tmp_path / "run", tiny_model_dir, make_progress(disable=True))
    res = StudyResults.load(tmp_path / "run")
    fix = res.row("half-guidance")
    assert fix.variant is not None and fix.variant.value == preset.sample.guidance / 2
    assert fix.extras == {"halving": {"scale": preset.sample.guidance / 2}}
    assert {r.sampler for r in res.sampler_rows} == {"deis-3"}, "every arm is measured under the new sampler too"
    assert "noise-norm" in (res.row("base").mia or {}) and "noise-norm" in res.mia_controls.negative.attacks
    effect = next(e for e in res.effects() if e.arm == "half-guidance")
    assert effect.description.title == f"Half the guidance (scale {preset.sample.guidance / 2:g})"
    assert effect.by_sampler, "the fix is judged under every sampler, the new one included"
    page = write_technical(tmp_path / "run").read_text()
    assert "noise-norm" in page and "deis" in page and "halving report" in page
