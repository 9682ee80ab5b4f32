"""The controls and probes beside the audits, as typed records: the membership attacks' positive and negative
controls, the DP fine-tune's privacy report and empirical audit (with its non-private power check), and the adaptive
probes with the embedding search's negative control. results.json holds them as written; the reports read these
fields, so a renamed or missing one fails when the run is loaded, naming it."""

from typing import Any, Literal

from pydantic import ConfigDict, Field

from diffaudit.study.audit_records import Interval, LossGap, MiaRun, RateAt, Record


class ExposurePoint(Record):
    """One attack on one snapshot of the positive control's training run."""

    step: int
    epochs: float
    attack: str
    auc: float | None
    auc_low: float | None
    auc_high: float | None
    tpr_at_1pct_fpr: float | None
    direction: int
    loss_gap: float | None
    relative_loss_gap: float | None


class ControlBar(Record):
    every_attack_auc_lower_bound: float
    best_auc: float
    best_tpr_at_1pct_fpr: float


class PositiveVerdict(Record):
    """Which attacks found the leaking model, in which direction, and whether the best cleared its bar."""

    passed: dict[str, bool]
    direction: dict[str, Literal["as published", "reversed"]]
    best: str
    best_auc: float | None
    best_tpr_at_1pct_fpr: float | None
    best_tpr_is_zero_fp: bool
    best_passed: bool
    bar: ControlBar


class PositiveControl(Record):
    """A small model trained to leak, on the audited architecture: every attack must find its members."""

    preset: str
    members: int
    train_steps: int
    batch_size: int
    epochs: float
    exposure: list[ExposurePoint]
    final: MiaRun
    verdict: PositiveVerdict
    figure: str  # relative to the run's mia-controls folder


class NegativeAttack(Record):
    auc: float | None
    auc_ci_99: Interval
    covers_half: bool
    choice: dict[str, Any]


class NegativeControl(Record):
    """Never-trained halves on the audited model: every attack's 99% interval must cover 0.5."""

    per_side: int
    tune_per_side: int
    attacks: dict[str, NegativeAttack]
    passed: bool
    loss_gap: LossGap


class MiaControls(Record):
    positive: PositiveControl | None = None  # none when `membership.control_preset` is unset
    negative: NegativeControl | None = None


class DpReport(Record):
    """The DP fine-tune's privacy accounting: its settings, the noise it needed and the epsilon it spent (null for the
    non-private control)."""

    epsilon: float | None
    delta: float
    steps: int
    expected_batch: int
    max_grad_norm: float
    multiplicity: int
    lr: float
    caption_dropout: float
    accountant: str
    seed: int
    noise_multiplier: float
    sample_rate: float
    epsilon_spent: float | None
    calibration_examples: int
    seconds: float
    model_hash: str
    scope: str


class DpTest(Record):
    """One membership test of the DP audit: threshold chosen on half the families, bounds measured on the other."""

    auc: float | None
    auc_ci: Interval
    tpr: float
    fpr: float
    measured_members: int
    measured_heldout: int
    selection_bound: float
    epsilon_lower_bound: float


class DpAudit(Record):
    """The empirical epsilon the calibration images' membership rules out, beside the theoretical one."""

    theoretical_epsilon: float | None
    delta: float
    members: int
    heldout: int
    tests: dict[str, DpTest]
    chosen_test: str
    empirical_epsilon: float
    violates_theory: bool
    split_shift: bool
    scope: str
    assumption: str


class DpControl(Record):
    """The same fine-tune without clipping or noise: the DP audit has power only if it can see this one leak."""

    kind: Literal["dp"]
    dp: DpReport
    dp_audit: DpAudit
    train_seconds: float


class ProbeCount(Record):
    """Target captions whose probe got a copy of their own picture."""

    extracted: int
    targets: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None


class ProbeResult(Record):
    """One adaptive probe against one arm, at the static probe's budget: alone, against the static probe (paired by
    caption), and an attacker keeping both."""

    title: str
    access: str
    guidance: float
    sampling: dict[str, Any]  # the arm's sampling fields the probe keeps
    conditioning: str
    static: ProbeCount
    alone: ProbeCount
    union: ProbeCount
    stopped: int
    started: int
    p_value: float | None
    same_as_static: bool
    unet_evaluations: int
    reused_samples: str | None


class AdaptiveRecord(Record):
    """Every configured probe against one arm (a results row's `adaptive`)."""

    targets: int
    min_dup: int
    static: ProbeCount
    probes: dict[str, ProbeResult]


class NullRate(RateAt):
    unet_evaluations: int


class AdaptiveControl(Record):
    """The embedding search on never-trained captions against their own never-seen pictures, beside plain text: it
    must stay at the floor the copy threshold was chosen for, or its copies are invented."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)
    text: NullRate
    search: NullRate = Field(alias="embedding-search")
    target: float
    bound: float
    passed: bool
