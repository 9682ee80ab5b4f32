"""The deletion request's records, typed: what `unlearning.record.audit_record` writes for one method (beside the
unlearned model, and in the study's results), and the study's whole request (every method, the retrain reference
and the protocol's control). The reports read these fields, so a renamed or missing one fails when the run is
loaded, naming it."""

from typing import Any, Literal

from pydantic import ConfigDict

from diffaudit.study.audit_records import Interval, Record


class CopyCount(Record):
    """Forgotten captions (and pictures) with a generation within delta of a forgotten picture."""

    captions: int
    captions_with_copy: int
    rate: float
    ci: Interval
    generations: int
    generations_copying: int
    pictures: int
    pictures_copied: int
    unet_evaluations: int


class PictureScore(Record):
    sha256: str
    pairs: int
    mean_percentile: float


class DeletionMembership(Record):
    """The forgotten (picture, caption) pairs ranked among the same model's never-trained images."""

    attack: str
    settings: dict[str, Any]
    pairs: int
    nonmembers: int
    auc: float | None
    auc_ci: Interval
    mean_percentile: float | None  # null where a score was undefined (a diverged model)
    percentiles: list[float | None]
    by_picture: list[PictureScore]


class Measures(Record):
    """Every number of the protocol for one model."""

    model_hash: str
    copies: CopyCount
    paraphrase_copies: CopyCount
    membership: DeletionMembership
    neighbour_loss: float | None  # null where undefined: a diverged model is measured and fails, not refused
    neighbours: int
    heldout_loss: float | None
    frechet_distance: float | None
    utility_prompts: int
    utility_unet_evaluations: int


class Check(Record):
    """One check of a model against the reference: a value under its limit, or the membership test."""

    model_config = ConfigDict(extra="allow", frozen=True)
    passed: bool
    value: float | None = None
    limit: float | None = None
    p: float | None = None  # the membership check: its p-value against alpha, and which way it leans
    alpha: float | None = None
    direction: str | None = None


class Judgement(Record):
    """Pass or fail against the reference, check by check (`unlearning.verify.judge`)."""

    checks: dict[str, Check]
    passed: bool | None  # none: the model is the reference itself
    verdict: Literal["pass", "fail", "reference"]
    failed: list[str]
    fallback: str


class Protocol(Record):
    delta: float
    guidance: float
    samples_per_caption: int
    paraphrases_per_caption: int
    membership_unit: str
    pairs: int
    never_trained_rows: int
    utility_prompts: int
    neighbours: int
    thresholds: dict[str, Any]  # the run's `[forget]` section as it was read
    thresholds_hash: str


class ModelRef(Record):
    path: str
    model_hash: str


class ReferenceRef(Record):
    method: str
    unlearned: ModelRef
    seconds: float | None = None  # its training time, where the reference's summary has one


class SubjectShare(Record):
    """Share of SISA's stages one subject's deletion retrains, over the subjects (by where the plan put them)."""

    mean: float
    min: float
    max: float
    subjects: int


class ShardingCost(Record):
    sharded: float | None
    unsharded: float | None


class DeletionRecord(Record):
    """One method's verified deletion: what was asked and removed (by content hash), the models, the protocol, every
    model's measures, its verdict and the positive control's (the original must fail)."""

    request: dict[str, Any]
    method: str
    title: str
    rows: int
    pictures: int
    captions: int
    families: list[str]
    forgotten_ids: list[str]
    forgotten_sha256: list[str]
    data_before: str
    data_after: str
    original: ModelRef
    unlearned: ModelRef
    seconds: float
    method_record: dict[str, Any]  # the method's own account (steps, shards retrained, retrained share)
    reference: ReferenceRef
    protocol: Protocol
    measures: dict[Literal["original", "reference", "unlearned"], Measures]
    verification: Judgement
    original_against_reference: Judgement
    created: str | None = None  # on disk beside the model; the study's results drop when and where it was logged
    mlflow_run_id: str | None = None
    single_subject_share: SubjectShare | None = None  # SISA's own (`Unlearner.annotate`)
    sharding_cost: dict[str, ShardingCost] | None = None

    @property
    def retrained_share(self) -> float | None:
        return self.method_record.get("retrained_share")


class ForgetStudy(Record):
    """The study's deletion request: every configured method, the retrain reference's cost, the control retrain."""

    request: dict[str, Any]
    rows: int
    methods: dict[str, DeletionRecord]
    reference_seconds: float
    control: DeletionRecord | None = None

    @property
    def first(self) -> DeletionRecord:
        """The first method's record: the request, protocol and original are the same in every one."""
        return next(iter(self.methods.values()))
