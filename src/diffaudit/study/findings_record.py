"""findings.json as typed records: what the study decided (`study.findings`), in the shape the reports read it, so a
report names a field (`cell.owner_pictures`) instead of a key, and a misnamed or missing one fails when the run is
loaded, naming it. Each fix's effect is read back as `records.ArmEffect`."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from diffaudit.study.audit_records import BucketRate, Interval

# findings.json's shape: 2 added the verdicts decided once for the reports (strongest attack, probe words, DP power);
# 3 the membership verdicts (detectable, the split check's pictures alike).
FINDINGS_SCHEMA = 3


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingNull(Part):
    """Never-trained captions that 'copy' their own unseen picture at the calibrated delta, under one setting: the
    copy test is valid there when the upper bound stays under `calibration.null_bound`. A setting's own details
    (sampler, guidance, its cost) ride along."""

    model_config = ConfigDict(extra="allow", frozen=True)
    hits: int
    n: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    delta: float
    valid: bool
    source: Literal["calibration", "setting null"]


class CellCounts(Part):
    """One (arm, sampler, seed): captions and pictures copied, owner's check and outsider's probe, each with exact
    95% intervals (and the caption rate's cluster interval over pictures), the setting's null and the near misses."""

    arm: str
    kind: str
    sampler: str
    seed: int
    setting: str
    prompts: int
    pictures: int
    frechet_distance: float | None
    owner_prompts: int
    owner_rate: float | None
    owner_ci: Interval
    owner_pictures: int
    owner_picture_ci: Interval
    owner_cluster_ci: Interval
    outsider_prompts: int
    outsider_rate: float | None
    outsider_ci: Interval
    outsider_pictures: int
    outsider_picture_ci: Interval
    outsider_cluster_ci: Interval
    null: SettingNull | None
    miss_captions: int
    misses_too_much: bool


class SamplerSwitch(Part):
    """A setting-only fix against an attacker who switches the sampler: paired by picture against the base."""

    arm: str
    sampler: str
    setting: str
    pictures: int
    arm_pictures: int
    base_pictures: int
    stopped: int
    started: int
    started_pictures: list[str]
    raw_p_value: float | None
    p_value: float | None
    valid: bool
    verdict: str


class ProbeEffect(Part):
    """One adaptive probe against one arm, pooled over seeds: the static probe, the probe alone and the attacker who
    keeps both, on the same targets; the one-sided paired test and its verdict."""

    arm: str
    probe: str
    title: str
    access: str
    same_as_static: bool
    same_as_base: bool
    targets: int
    static: int
    alone: int
    union: int
    static_rate: float | None
    alone_rate: float | None
    union_rate: float | None
    static_ci: Interval
    alone_ci: Interval
    union_ci: Interval
    stopped: int
    started: int
    unet_evaluations: int
    raw_p_value: float | None
    p_value: float | None = None  # Holm-adjusted; only for the arms and probes in the tested family
    verdict: str


class Trend(Part):
    """Does copying rise with duplication (Mann-Whitney over every caption), with the buckets the memo quotes."""

    low: BucketRate
    high: BucketRate
    p_value: float
    clear: bool
    rises: bool


class FlagPrecision(Part):
    """Of the captions the clique filter flagged, how many the owner's check says copy."""

    flagged: int
    true: int
    precision: float


class Extent(Part):
    """Distinct training pictures and subjects some generation of the base copied (the owner's ceiling)."""

    images: int
    families: int


class DpPowerAtSeed(Part):
    empirical_epsilon: float
    smallest_theoretical: float | None
    has_power: bool


class DpPower(Part):
    """Can the DP audit see a violation of the smallest theoretical epsilon (its non-private control's empirical
    epsilon above it), per seed with a control."""

    sanity_test: str
    seeds: dict[str, DpPowerAtSeed]


class Strongest(Part):
    auc: str | None
    tpr_at_1pct_fpr: str | None


class MembershipVerdict(Part):
    detectable: bool | None
    by: str | None
    split_alike: bool | None


class PooledArm(Part):
    """One arm under the headline sampler, pooled over the training seeds it was measured at (`findings.pooled_arms`):
    the outsider's and the owner's caption rates with picture-clustered 95% intervals, distinct pictures and subjects,
    the spread over seeds, and what the arm cost."""

    arm: str
    kind: str
    guidance: float
    extracted: int
    prompts: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    owner_prompts: int
    owner_rate: float | None
    owner_ci: Interval
    owner_pictures: list[int]  # per seed
    pictures: int
    images: int
    families: int
    owner_images: int
    owner_families: int
    family_prompts: int
    seed_list: list[int]
    seeds: int
    seed_min: float | None
    seed_max: float | None
    owner_seed_min: float | None
    owner_seed_max: float | None
    mia_auc: float | None  # the strongest attack's AUC, averaged over the seeds that measured membership
    frechet_distance: float | None
    heldout_loss: float | None
    train_seconds: float | None


class ProbeWords(Part):
    title: str
    short: str


class FindingsRecord(BaseModel):
    """findings.json as the study writes it (`FINDINGS_SCHEMA`; its JSON Schema ships in `schemas/`): the study checks
    what it writes against it, and the reports read it as this record."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)

    schema_version: Literal[3]
    alpha: float
    arms: list[PooledArm]
    cells: list[CellCounts]
    setting_nulls: dict[str, SettingNull]
    effects: list[dict[str, Any]]  # each fix against the base, its worst-case verdict (read as records.ArmEffect)
    ranking: list[str]  # the fixes that held, most durable first
    best_arm: str | None
    switch_sampler: list[SamplerSwitch]
    duplication_trend: dict[str, Trend | None]
    flag_precision: dict[str, FlagPrecision | None]
    oracle_extent: dict[str, Extent]
    adaptive: list[ProbeEffect]
    strongest_attack: dict[str, Strongest]  # "arm@seed" -> by AUC and by TPR at 1% FPR
    membership: dict[str, MembershipVerdict]  # "arm@seed" -> detectable, by, split_alike
    probe_words: dict[str, ProbeWords]
    dp_power: DpPower
