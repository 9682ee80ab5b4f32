"""Each audit's result as a typed record: what one arm's extraction, membership and utility audits, the tiered audit
and the copy threshold's calibration return, so the study builds a results row from records instead of copying keys
by hand (`study.results_record` puts them together as results.json)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffaudit.config import SampleConfig

Interval = tuple[float | None, float | None]  # a 95% interval; null where undefined (written NaN)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateAt(Record):
    """A rate with its interval at one copy threshold."""

    delta: float
    hits: int
    n: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None


class BucketRate(Record):
    """Extraction among the attacked captions of one duplication bucket ("1", "2-3", ..., "64+")."""

    dup_bucket: str
    hits: int
    prompts: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None


class SweepPoint(Record):
    """The probe's flags at one (samples, clique size): how the clique rule trades recall for draws."""

    samples_per_prompt: int
    clique_size: int
    flagged: int
    extracted: int
    recall: float | None
    study_rule: bool


class NearMisses(Record):
    """Generations closest to their own picture yet beyond delta: copies the test may miss."""

    generations: int
    prompts: int
    saturated_share: float | None
    grid: str | None


class Sampling(Record):
    sampler: str
    steps: int
    guidance_start: float
    early_guidance: float


class OracleBuckets(Record):
    """What the technical report reads from an extraction folder's `summary.json` beyond the row: the owner's check
    by duplication bucket (the row carries the probe's); the rest of the summary rides along."""

    model_config = ConfigDict(extra="allow", frozen=True)
    oracle_by_dup: list[BucketRate]


class ExtractionRecord(Record):
    """The extraction audit of one arm under one (sampler, guidance) setting: the outsider's probe (confirmed cliques
    holding a copy of their own picture), the owner's oracle check, the copy test's settings and its cost."""

    model_hash: str
    guidance: float
    sampler: str  # e.g. "ddim-unclamped-25"
    setting: str  # e.g. "ddim-unclamped-25 g3": how verdicts and nulls name it
    sampling: Sampling
    delta: float
    attacked_prompts: int
    prompts_with_copy: int
    extraction_rate: float | None
    extraction_ci: Interval
    extracted_images: int
    extracted_families: int
    family_prompts: int
    other_prompts: int
    oracle_memorized_prompts: int
    oracle_rate: float | None
    oracle_ci: Interval
    oracle_family_hit_prompts: int
    extraction_by_delta: list[RateAt]
    oracle_by_delta: list[RateAt]
    probe_sweep: list[SweepPoint]
    probe_precision: float | None
    probe_recall: float | None
    by_dup: list[BucketRate]
    near_misses: NearMisses
    extraction_unet_evals: int

    @classmethod
    def of(cls, summary: dict, delta: float, guidance: float, model_hash: str, sampling: SampleConfig,
           setting: str) -> "ExtractionRecord":
        """From `run_extraction`'s summary: the one place its keys are renamed for a results row."""
        return cls(
            model_hash=model_hash, guidance=guidance, sampler=f"{sampling.sampler}-{sampling.steps}", setting=setting,
            sampling=Sampling(**sampling.model_dump(include=set(Sampling.model_fields))), delta=delta,
            attacked_prompts=summary["attacked_prompts"], prompts_with_copy=summary["prompts_with_copy"],
            extraction_rate=summary["rate"], extraction_ci=(summary["ci_low"], summary["ci_high"]),
            extracted_images=summary["extracted_images"], extracted_families=summary["extracted_families"],
            family_prompts=summary["family_prompts"], other_prompts=summary["other_prompts"],
            oracle_memorized_prompts=summary["oracle_memorized_prompts"], oracle_rate=summary["oracle_rate"],
            oracle_ci=summary["oracle_ci"], oracle_family_hit_prompts=summary["oracle_family_hit_prompts"],
            extraction_by_delta=summary["extraction_by_delta"], oracle_by_delta=summary["oracle_by_delta"],
            probe_sweep=summary["probe_sweep"], probe_precision=summary["precision"],
            probe_recall=summary["recall"], by_dup=summary["by_dup"], near_misses=summary["near_misses"],
            extraction_unet_evals=summary["unet_evaluations"])


class LossGap(Record):
    """Members' against held-out images' denoising loss (relative gap: over the held-out loss)."""

    gap: float | None
    member_loss: float | None
    nonmember_loss: float | None
    relative_gap: float | None


class PairedAuc(Record):
    """One attack's AUC minus the loss attack's, paired on the same images, with its bootstrap interval."""

    difference: float | None
    ci: Interval
    p_value: float | None
    samples: int


class Roc(Record):
    """An attack's ROC summary with its intervals (how they were drawn rides along)."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, serialize_by_alias=True)
    auc: float | None
    auc_ci: Interval
    tpr_at_1pct_fpr: float | None
    tpr_at_1pct_fpr_ci: Interval
    tpr_at_1pct_fpr_is_zero_fp: bool = False
    tpr_at_01pct_fpr: float | None = Field(None, alias="tpr_at_0.1pct_fpr")  # with 1,000 non-members or more
    members: int
    nonmembers: int


class AttackRun(Record):
    """One attack as `run_mia` scored it: its access, the settings chosen on the tuning set, its ROC on every member
    and on the singleton members."""

    model_config = ConfigDict(extra="allow", frozen=True)
    access: str
    all: Roc
    singleton_members: Roc | None = None
    choice: dict[str, Any]
    queries_per_sample: float


class SplitCheck(Record):
    """A classifier on pixels and caption embeddings alone, members against held-out: at chance when the split is
    sound."""

    model_config = ConfigDict(extra="allow", frozen=True)
    auc: float | None
    auc_ci: Interval
    at_chance: bool


class MiaRun(Record):
    """`run_mia`'s whole result on one model (its `summary.json`): every attack, each paired against the loss attack;
    its assumptions, split check and the rest ride along."""

    model_config = ConfigDict(extra="allow", frozen=True)
    attacks: dict[str, AttackRun]
    paired: dict[str, PairedAuc]
    per_side: int
    split_check: SplitCheck
    loss_gap: LossGap


class AttackSummary(Record):
    """One membership attack on one arm: ROC AUC with its interval, TPR at 1% FPR, and the settings it was scored
    with (chosen on the labelled tuning set)."""

    auc: float | None
    auc_ci: Interval
    tpr_at_1pct_fpr: float | None
    choice: dict[str, Any]


class MembershipRecord(Record):
    """The membership audit of one arm: every attack, the members' loss gap, each attack paired against the loss
    attack, and the split check (an attack on two never-trained halves: AUC near 0.5 when the splits are sound)."""

    mia: dict[str, AttackSummary]
    mia_loss_gap: LossGap
    mia_paired: dict[str, PairedAuc]
    split_check_auc: float | None

    @classmethod
    def of(cls, result: dict) -> "MembershipRecord":
        """From `run_mia`'s result."""
        return cls(mia={k: {"auc": v["all"]["auc"], "auc_ci": v["all"]["auc_ci"],
                            "tpr_at_1pct_fpr": v["all"]["tpr_at_1pct_fpr"], "choice": v["choice"]}
                        for k, v in result["attacks"].items()},
                   mia_loss_gap=result["loss_gap"], mia_paired=result["paired"],
                   split_check_auc=result["split_check"]["auc"])


class UtilityRecord(Record):
    """What a fix costs in quality: held-out denoising loss and the Fréchet distance of held-out captions' samples."""

    heldout_loss: float | None
    frechet_distance: float | None
    utility_prompts: int
    utility_unet_evaluations: int


class DetectionRecord(Record):
    """The tiered audit: a one-step detector ranks the captions, the full probe confirms the top share."""

    detector: str
    detector_queries_per_prompt: int
    prompts_scored: int
    prompts_confirmed: int
    unet_evaluations: int
    extracted_images: int
    full_probe_extracted_prompts: int | None = None
    recovered: int | None = None
    recall_vs_full: float | None = None
    cost_ratio_vs_full: float | None = None
    detector_vs_oracle: dict[str, Any] | None = None


def row_of(*records: BaseModel) -> dict:
    """A results row's audit fields: the records side by side (plain Python; the step writer makes them JSON, numpy
    numbers in free-form fields included)."""
    return {k: v for r in records for k, v in r.model_dump().items()}


class CaptionFollowing(Record):
    """Does the caption decide the picture more than the seed (never-trained captions; ratio >= 1: it does)?"""

    same_seed_other_caption: float | None
    same_caption_other_seed: float | None
    ratio: float | None


class CalibrationRecord(Record):
    """The copy threshold, chosen before any arm is scored (`study.calibration`): the largest delta up to the cap whose
    model null (never-trained captions 'copying' their own unseen picture) stays within target and bound, the null at
    every delta of the grid, the image null, and whether the caption decides the picture."""

    delta: float
    calibrated: bool
    met: bool
    reason: str
    cap: float
    target: float
    bound: float
    captions_needed: int
    model_null: RateAt
    model_null_by_delta: list[RateAt]
    image_null: dict[str, float]
    null_prompts: int
    samples_per_prompt: int
    guidance: float
    model_hash: str
    caption_following_nonmember: CaptionFollowing
    unet_evaluations: int


class VariantRecord(Record):
    """A mitigation arm's typed setting (`mitigations.base.Variant`): its name and the scale, epsilon or method."""

    name: str
    value: float | str


def json_schema_of(record: type[BaseModel]) -> dict:
    """A record's JSON Schema (draft 2020-12) in its serialized form (a record whose config asks for it marks every
    field with a default required too, as written files always hold them)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **record.model_json_schema(mode="serialization")}


def invalid_fields(exc: ValidationError) -> str:
    """The first three fields a record refused, each with why, for a one-line error."""
    return "; ".join(".".join(map(str, e["loc"])) + f": {e['msg']}" for e in exc.errors()[:3])
