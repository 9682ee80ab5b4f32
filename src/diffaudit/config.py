"""Typed configs and presets. CLI flags and config files map one-to-one onto these fields."""

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from diffaudit.errors import ConfigError
from diffaudit.samplers import SAMPLERS

# UNet rows per forward call. At 16 px on 2 CPU cores, 32-64 rows ran 1.3x faster than 256 (cache-resident
# activations; measured 2026-11-25, quick model, DDIM-25), and a sample's pixels do not depend on the batch.
UNET_ROWS = 64
MIN_RESOLUTION = 8  # the UNet downsamples twice or more; smaller images carry no glyph detail to audit

MAX_SEED = 2**32 - 1  # numpy and torch generators both take it; larger overflow inside torch
# What a deletion must not cost (unlearning.verify): the measures of quality a forget verification compares.
UTILITY = ("heldout_loss", "frechet_distance", "neighbour_loss")
TILE_GRID = 4  # Carlini et al. 2023 §4.2: the image is cut into TILE_GRID x TILE_GRID tiles
CARLINI_DELTA = 0.15  # Carlini et al. 2023 §4.2: (l2, delta)-extraction on [0,1] pixels, tiled distance
CARLINI_SAMPLES = 500  # Carlini et al. 2023 §4.2: generations per attacked caption
SD_DEFAULT_GUIDANCE = 7.5  # diffusers' StableDiffusionPipeline default guidance_scale

# Bounded, strictly typed settings: a value outside its bounds, or of the wrong type ("3" or true for an
# integer), is refused when the config is read, before any work starts. Integers are accepted as floats.
Positive = Annotated[int, Field(strict=True, ge=1)]
NonNegative = Annotated[int, Field(strict=True, ge=0)]
Seed = Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)]
PositiveFloat = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
OpenFraction = Annotated[float, Field(strict=True, gt=0, le=1, allow_inf_nan=False)]
Guidance = Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)]
Distance = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]  # tiled RMS on [0,1] pixels
Copies = Annotated[int, Field(strict=True, ge=2)]  # a planted duplicate appears at least twice
AtLeastTwo = Annotated[int, Field(strict=True, ge=2)]
Rate = Annotated[float, Field(strict=True, gt=0, le=1, allow_inf_nan=False)]  # learning rates
Steps = Annotated[int, Field(strict=True, ge=1, le=1000)]


def _registered_sampler(name: str) -> str:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return name


SamplerName = Annotated[str, AfterValidator(_registered_sampler)]  # a name of samplers.SAMPLERS


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class SceneConfig(_Frozen):
    """Compositional scenes (data/scenes.py): 1-2 OpenMoji glyphs on a named background, each concept in many
    pictures."""

    glyphs: Positive = 56  # glyphs drawn in member scenes
    unseen_glyphs: NonNegative = 8  # glyphs kept out of every member scene: the never-seen-concept test
    scenes_per_glyph: Positive = 32  # member scenes drawn until every seen glyph appears in at least this many
    glyph_px: tuple[Positive, Positive] = (10, 12)  # smallest and largest glyph side, in pixels of the dataset
    two_glyph_share: Fraction = 0.7
    heldout_families: NonNegative = 120  # (glyph pair, axis) families no member scene shows, for each held-out split
    heldout_scenes: Positive = 300  # nonmember scenes of those families: unseen combinations of seen glyphs
    unseen_scenes: NonNegative = 100  # nonmember scenes of the unseen glyphs


class DataConfig(_Frozen):
    """OpenMoji dataset: splits and the planted, LAION-like duplication plan (or compositional scenes, `scenes`)."""

    resolution: Annotated[int, Field(strict=True, ge=MIN_RESOLUTION, le=1024)] = 32
    seed: Seed = 0
    n_member: Positive = 400  # unique member images before duplication
    n_nonmember: Positive = 400  # IID hold-out for membership inference
    n_calibration: Positive = 64  # disjoint set for DP fine-tuning
    # Images closer than this (tiled RMS) are one near-duplicate family, as are codepoint variants; splits
    # keep families apart. At CARLINI_DELTA the quick pool has no giant component (largest family ~5%).
    family_join: Distance = CARLINI_DELTA
    # A family larger than this cannot go to one side of a split without shifting it (at 16 px every person
    # glyph joins one 186-image family): such families are left out of every split.
    max_family: Positive = 20
    # Carlini et al. 2023 §4: extraction concentrates on images duplicated ~100+ times in LAION;
    # a doubling ladder of copy counts lets the audit measure memorization against duplication.
    exact_counts: tuple[Copies, ...] = (2, 4, 8, 16, 32, 64)  # same image + same caption
    exact_per_count: NonNegative = 6
    image_counts: tuple[Copies, ...] = (4, 16, 64)  # same image + different captions
    image_per_count: NonNegative = 2
    caption_counts: tuple[Copies, ...] = (4, 16)  # same caption + different images
    caption_per_count: NonNegative = 2
    scenes: SceneConfig | None = None  # None: one glyph per picture, as OpenMoji draws it

    @model_validator(mode="after")
    def _fits(self) -> "DataConfig":
        planted = (
            self.exact_per_count * len(self.exact_counts)
            + self.image_per_count * len(self.image_counts)
            + self.caption_per_count * sum(self.caption_counts)
        )
        if planted > self.n_member:
            raise ValueError(f"duplication plan needs {planted} member images but n_member={self.n_member}")
        return self


class ModelConfig(_Frozen):
    """Pixel-space UNet2DConditionModel conditioned on MiniLM token embeddings."""

    block_out_channels: tuple[Positive, ...] = Field(default=(64, 128), min_length=1)
    down_block_types: tuple[Literal["DownBlock2D", "CrossAttnDownBlock2D"], ...] = ("DownBlock2D",
                                                                                     "CrossAttnDownBlock2D")
    up_block_types: tuple[Literal["UpBlock2D", "CrossAttnUpBlock2D"], ...] = ("CrossAttnUpBlock2D", "UpBlock2D")
    layers_per_block: Positive = 1
    attention_head_dim: Positive = 8
    norm_num_groups: Positive = 32
    # Emoji captions are short; MiniLM pads or truncates to this.
    max_text_tokens: Annotated[int, Field(strict=True, ge=2, le=512)] = 16
    num_train_timesteps: Annotated[int, Field(strict=True, ge=2)] = 1000  # Ho et al. 2020
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"  # Nichol & Dhariwal
    # 2021: better than linear at low resolution

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        """What diffusers would otherwise reject mid-run, with a traceback."""
        levels = {len(self.block_out_channels), len(self.down_block_types), len(self.up_block_types)}
        if len(levels) != 1:
            raise ValueError("block_out_channels, down_block_types and up_block_types need one entry per level")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"norm_num_groups={self.norm_num_groups} must divide every block_out_channels "
                             f"{self.block_out_channels}")
        return self


class TrainConfig(_Frozen):
    steps: Positive = 1000
    batch_size: Positive = 64
    lr: Rate = 5e-4
    weight_decay: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] = 1e-2
    warmup_steps: NonNegative = 50
    ema_decay: Annotated[float, Field(strict=True, ge=0, lt=1, allow_inf_nan=False)] = 0.99
    caption_dropout: Fraction = 0.1  # Ho & Salimans 2022: ~10% unconditional for classifier-free guidance
    seed: Seed = 0
    checkpoint_every: Positive = 100
    log_every: Positive = 10
    keep_checkpoints: Positive = 2


class SampleConfig(_Frozen):
    sampler: SamplerName = "ddim-unclamped"  # as deployed Stable Diffusion pipelines run DDIM (samplers.py)
    steps: Steps = 25
    guidance: Guidance = 1.0
    # Jain et al. (CVPR 2025): guidance only from this share of the steps on; before it, `early_guidance` (0: the
    # unconditional prediction, their "no guidance"). 0 guides every step, as plain classifier-free guidance does.
    guidance_start: Annotated[float, Field(strict=True, ge=0, lt=1, allow_inf_nan=False)] = 0.0
    early_guidance: Guidance = 0.0
    batch_size: Positive = UNET_ROWS  # UNet rows per call; guided sampling fits half as many prompts
    seeds: Annotated[int, Field(strict=True, ge=1, le=MAX_SEED)] = 4  # `diffaudit generate`: seeds 0..N-1 per prompt


class SamplerSetting(_Frozen):
    """One way of drawing: a registered sampler at a step count."""

    name: SamplerName
    steps: Steps

    @property
    def key(self) -> str:
        """How files and results name it, e.g. "ddim-unclamped-25"."""
        return f"{self.name}-{self.steps}"


class StudyConfig(_Frozen):
    """Which arms `diffaudit study` runs, at which training seeds, under which samplers. Each audit and mitigation
    reads its own section (`[extraction]`, `[calibration]`, `[membership]`, ...); every threshold is fixed there,
    before any arm runs."""

    seeds: tuple[Seed, ...] = Field(default=(0,), min_length=1)  # training seeds of base and retrained arms
    # Arms trained or audited at every seed; None: all of them. The others run at the first seed only (and are labelled
    # so); extra seeds measure extraction under the headline sampler, not membership or quality.
    seed_arms: tuple[str, ...] | None = None
    # Every arm's extraction and quality are measured under each of these; the first is the headline (the copy
    # threshold is calibrated under it). A verdict must hold under all of them. Deployers sample unclamped DDIM at
    # 25 steps or DPM-Solver++ at 10-25 (diffusers' defaults).
    samplers: tuple[SamplerSetting, ...] = Field(default=(SamplerSetting(name="ddim-unclamped", steps=25),
                                                          SamplerSetting(name="dpmsolver++", steps=10)), min_length=1)
    # Measured for the base and the guidance arms only, outside every verdict: how numbers moved from the clamped DDIM
    # of earlier studies, and a 50-step sensitivity row.
    reference_samplers: tuple[SamplerSetting, ...] = (SamplerSetting(name="ddim", steps=25),
                                                      SamplerSetting(name="ddim-unclamped", steps=50))
    # Mitigation arms, in order, by kind (registered in diffaudit.mitigations.registry); each reads its own section.
    mitigations: tuple[str, ...] = ("guidance", "guidance-interval", "dedup", "dp", "caption-randomization",
                                    "inference")


class ProbeConfig(_Frozen):
    """The extraction probe (`[extraction]`; Carlini et al. 2023): which captions, how many generations of each, and
    the clique filter between generations."""

    prompts_top: Positive = 96  # Carlini et al. 2023 attack the most-duplicated captions
    samples_per_prompt: AtLeastTwo = 16  # Carlini: 500; scaled down for CPU; a clique needs 2+
    edge_threshold: Distance = CARLINI_DELTA  # Carlini use the copy distance between generations too
    min_clique: AtLeastTwo = 3
    # `diffaudit extract`: side in pixels at which generations and training images are compared (the study compares at
    # the model's resolution). None: the model's resolution. A Stable Diffusion audit against a small reference
    # states it here instead of upscaling the reference silently.
    compare_size: Annotated[int, Field(strict=True, ge=MIN_RESOLUTION, le=1024)] | None = None


class CalibrationConfig(_Frozen):
    """The copy threshold (`[calibration]`), calibrated on the base model by study.calibration.copy_threshold: the
    largest delta of the grid up to `delta` whose model null (never-trained captions "copying" their own unseen image)
    is <= null_target, with its upper 95% bound <= null_bound. `extract`, `study` and `verify-forget` all use it."""

    delta: Distance = CARLINI_DELTA
    calibrate: bool = True  # false: use delta as given; both nulls are still measured and reported
    null_target: Fraction = 0.02
    null_bound: Fraction = 0.04
    null_prompts: Positive = 300  # never-trained captions generated for the model null
    # Every (sampler, guidance) setting other than the headline gets its own model null on this many never-trained
    # captions (0 of 100 has an upper 95% bound of 3.6%); a setting whose bound exceeds null_bound is left out.
    setting_null_prompts: Positive = 100


class TriageConfig(_Frozen):
    """Cheaper ways to the probe's answer (`[triage]`): a one-step detector in front of it (the tiered audit), and the
    sequential probe's stopping rule."""

    detector: str = "wen"  # names are checked against the registries in study.runner.check_names
    tiered: bool = False  # `diffaudit extract`: score prompts with the detector first, probe only the top share
    confirm_fraction: OpenFraction = 0.1
    # `diffaudit stopping-rule`: the sequential probe draws this many generations per prompt per round; each check's
    # futility threshold is this quantile of the second model's extracted prompts' closest-pair distances (1: all of
    # them keep drawing), widened by this share (benchmarks/sequential.py walks all three).
    sequential_round: Positive = 2
    sequential_quantile: Annotated[float, Field(strict=True, ge=0.5, le=1.0)] = 1.0
    sequential_margin: Annotated[float, Field(strict=True, ge=0.0, le=1.0)] = 0.1


class MembershipConfig(_Frozen):
    """Membership inference (`[membership]`): the attacks, how many images they score, and their controls."""

    attacks: tuple[str, ...] = ("loss", "pia", "secmi", "clid")
    per_side: AtLeastTwo = 200  # an ROC needs at least two of each
    lira_shadows: NonNegative = 0  # `diffaudit mia`: shadow models for LiRA (0: no LiRA; the study never runs it)
    # Labelled members and non-members per side, family-disjoint from the scored ones, on which each attack's
    # timestep, direction and (CLiD) alpha are chosen; 0 runs every attack with its paper's settings.
    tune_per_side: NonNegative = 64
    # The positive control: a preset whose model must leak membership (few images seen hundreds of times); its
    # exposure curve and the attacks' verdicts go into the report. None skips it.
    control_preset: str | None = "overfit"
    control_points: Annotated[int, Field(strict=True, ge=1, le=8)] = 5  # its exposure curve: the last N doublings


class GuidanceConfig(_Frozen):
    """The guidance arms (`[guidance]`): classifier-free guidance scales, and guidance kept out of the first steps."""

    sweep: tuple[Guidance, ...] = Field(default=(1.0, 3.0, 5.0, 7.5, 10.0, 15.0), min_length=1)
    # Guidance kept out of the first steps (Jain et al., CVPR 2025), at these scales; its start is chosen among
    # `starts` on a second-seed model (the study's second seed, or train.seed + 1), never the audited one.
    interval: tuple[Guidance, ...] = (7.5,)
    starts: tuple[Annotated[float, Field(strict=True, gt=0, lt=1)], ...] = Field(default=(0.2, 0.4, 0.6),
                                                                                min_length=1)


class DeduplicationConfig(_Frozen):
    """The deduplicate-and-retrain arms (`[dedup]`): what is deduplicated, and how captions are matched."""

    methods: tuple[str, ...] = ("exact", "normalized", "minhash", "embedding")
    targets: tuple[Literal["caption", "image"], ...] = Field(default=("caption", "image"), min_length=1)


class AdaptiveConfig(_Frozen):
    """Adaptive probes (`[adaptive]`, attacks.adaptive) against every arm, on the attacked captions whose image has
    at least `min_dup` copies (where the static probe has power to be beaten); an empty `probes` skips them."""

    probes: tuple[str, ...] = ("weights-holder", "paraphrase", "embedding-search")
    min_dup: Positive = 32
    paraphrases: Positive = 4  # other captions per target; seed s types paraphrase s mod this
    search_steps: NonNegative = 10  # Adam steps of the embedding search (its optimisation budget)
    search_step: PositiveFloat = 0.02  # its Adam learning rate, as a fraction of the caption embeddings' std


class PrivacyConfig(_Frozen):
    """DP-SGD fine-tuning of the base model on the calibration split (mitigations.private_finetune): one arm per
    epsilon, and the privacy audit's positive control."""

    epsilons: tuple[PositiveFloat, ...] = (1.0, 8.0)
    steps: Positive = 100
    expected_batch: Positive = 16
    multiplicity: Positive = 4
    lr: Rate = 1e-4
    delta: OpenFraction = 1e-5  # well below 1/n for any calibration split diffaudit builds
    # The same fine-tune with no clipping and no noise must be caught by the audit, or the audit has no power and
    # the report says so.
    control: bool = True


class CaptionRandomizationConfig(_Frozen):
    """Somepalli et al. 2023b: perturbed captions while training (mitigations.caption_randomization)."""

    variants: Annotated[int, Field(strict=True, ge=1, le=64)] = 4  # perturbed captions drawn per training row
    replace_prob: Fraction = 0.1  # the whole caption replaced by random training-vocabulary words
    insert_prob: Fraction = 0.5  # otherwise, random words inserted with this probability
    insert_words: Annotated[int, Field(strict=True, ge=1, le=16)] = 2
    seed: Seed = 0


class InferenceConfig(_Frozen):
    """Inference-time mitigations (mitigations.inference): settings of the sampler, not of the weights."""

    noise_scale: PositiveFloat = 0.5  # Somepalli et al. 2023b: Gaussian noise on the text embedding, x its std
    random_words: Annotated[int, Field(strict=True, ge=1, le=16)] = 2  # Somepalli et al. 2023b: random words added
    # Wen et al. 2024: lower the text-guidance norm until it is below this quantile of never-trained captions' norms.
    norm_quantile: Fraction = 0.5
    norm_steps: Positive = 10
    norm_lr: Rate = 0.05


class ForgetConfig(_Frozen):
    """Deletion requests (diffaudit.unlearning): how each method forgets and the pass/fail thresholds of the
    verification, all fixed before a verification runs and written into its audit record."""

    methods: tuple[Literal["retrain", "sisa", "finetune"], ...] = ("retrain", "sisa", "finetune")
    in_study: bool = True  # `diffaudit study`: forget the most-extracted families with every method, and verify
    # The study's forget set: the most-extracted families, whole, until at least this many training rows (the issue
    # asks >= 50; 100 takes more than one subject wherever the top subject has under 100 rows).
    min_rows: Positive = 100
    # SISA (Bourtoule et al. 2021): shards trained apart (whole families per shard), each in slices with a checkpoint
    # after each; the shards share the base's step budget (unlearning.sisa says how often each slice is seen).
    shards: AtLeastTwo = 2  # the ensemble costs K UNet evaluations per step: 2 keeps the quick study's audits on CPU
    slices: Positive = 4
    # Approximate unlearning: the forget captions' prediction is steered to the frozen model's unconditional one,
    # minus `negative_guidance` times their difference (Gandikota et al. 2023), balanced by the plain loss on
    # retained rows; `finetune_steps` Adam steps.
    finetune_steps: Positive = 300
    finetune_lr: Rate = 1e-4
    negative_guidance: Annotated[float, Field(strict=True, ge=0, le=10, allow_inf_nan=False)] = 1.0
    attack: str = "pia"  # membership attack of the verification, at its paper's settings (none tuned on the request)
    utility_prompts: Positive = 128  # the first N held-out captions (the dataset order) give the Frechet distance
    neighbours: Positive = 32  # retained training images nearest the forgotten ones: where collateral damage shows
    # Pass/fail, judged against the retrain reference: captions that still give a copy may exceed the reference's
    # share by `copy_margin`; membership scores (ranked against each model's own never-trained images) must not
    # differ from the reference's (two-sided Mann-Whitney at `alpha`); utility (held-out loss, Frechet distance,
    # neighbours' loss) may be worse than the reference's by a factor of at most 1 + `utility_margin`.
    copy_margin: Fraction = 0.05
    alpha: OpenFraction = 0.05
    utility_margin: PositiveFloat = 0.15
    # The protocol's negative control: a second retrain with another seed must pass (a faithful deletion is not
    # flagged); the original (nothing forgotten) is its positive control and must fail.
    control: bool = True


class RuntimeConfig(_Frozen):
    """Where models run. Results do not depend on it beyond float rounding: the same seed gave images within 1/255
    on CPU and CUDA in float32 (README, GPU evidence; the CPU tests compare float32 with float64); another dtype keys
    generations apart. Whether a GPU exists is checked when a model is placed (model.device.resolve_device)."""

    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")] = "auto"  # auto: CUDA when present
    dtype: Literal["float32", "bfloat16", "float16", "float64"] = "float32"
    # Ray (`backend`): None runs everything in this process and never imports Ray; "local" starts a cluster on
    # this machine, "auto" joins the one `ray start` runs here (or RAY_ADDRESS), anything else is its address.
    ray: Annotated[str | None, Field(min_length=1)] = None
    # Per worker: CPUs asked of Ray and torch's thread count there (pinned, so a sample's bytes do not depend on
    # how many workers ran), and GPUs (1 puts each worker on its own GPU).
    ray_cpus: Positive = 1
    ray_gpus: Annotated[float, Field(strict=True, ge=0, le=8, allow_inf_nan=False)] = 0
    ray_workers: Positive | None = None  # None: as many as the cluster's free CPUs (GPUs) hold

    @model_validator(mode="after")
    def _half_needs_gpu(self) -> "RuntimeConfig":
        if self.dtype == "float16" and self.device == "cpu":
            raise ValueError("float16 needs a GPU (CPU kernels for half precision are missing or slow); use "
                             "bfloat16 or float32 on the CPU")
        return self


class Preset(_Frozen):
    name: str
    runtime: RuntimeConfig = RuntimeConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    study: StudyConfig = StudyConfig()
    extraction: ProbeConfig = ProbeConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    triage: TriageConfig = TriageConfig()
    membership: MembershipConfig = MembershipConfig()
    guidance: GuidanceConfig = GuidanceConfig()
    dedup: DeduplicationConfig = DeduplicationConfig()
    adaptive: AdaptiveConfig = AdaptiveConfig()
    dp: PrivacyConfig = PrivacyConfig()
    caption_randomization: CaptionRandomizationConfig = CaptionRandomizationConfig()
    inference: InferenceConfig = InferenceConfig()
    forget: ForgetConfig = ForgetConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "Preset":
        if self.sample.steps > self.model.num_train_timesteps:
            raise ValueError(f"sample.steps={self.sample.steps} exceeds model.num_train_timesteps="
                             f"{self.model.num_train_timesteps}")
        return self


_QUICK_DATA = DataConfig(resolution=16, n_member=1300, exact_per_count=14, n_calibration=256)
PRESETS: dict[str, Preset] = {
    # Fits the 2-core CPU in under 15 minutes of training.
    # 14 images per exact copy count plant 30 images with >= 32 copies, so that bucket's interval means something.
    # 1,300 unique members leave ~340 singletons alone in their family for the control group; 1,200 steps
    # (~11 min on 2 cores) show a 32-copy image ~780 times and a singleton ~24 times.
    # 256 calibration images (and the nonmembers) give the DP audit power: an empirical epsilon above 1 needs a
    # Clopper-Pearson TPR/FPR ratio above e, out of reach with the default 64.
    "quick": Preset(name="quick", data=_QUICK_DATA,
                    train=TrainConfig(steps=1200),
                    # Three training seeds for the fixes a verdict rests on (about an hour of CPU per extra seed).
                    study=StudyConfig(seeds=(0, 1, 2),
                                      seed_arms=("base", "guidance-3", "guidance-7.5", "dp-eps8", "dedup-caption")),
                    guidance=GuidanceConfig(sweep=(1.0, 3.0, 7.5)), dp=PrivacyConfig(steps=300)),
    # The mission's core on quick's data and reference model, for a first run: the probe and the owner's check under
    # the headline sampler, membership inference with its controls (the positive control judged at two points of its
    # exposure curve, not five), caption dedup, guidance 7.5 and DP fine-tuning at epsilon 8, one training seed; no
    # second sampler, adaptive probe or deletion study (`quick` runs them all). Membership keeps the study's 200
    # scored images per side: at 100 the loss attack's negative control failed (AUC 0.29, 99% interval 0.16-0.49).
    "core": Preset(name="core", data=_QUICK_DATA, train=TrainConfig(steps=1200),
                   study=StudyConfig(mitigations=("dedup", "guidance", "dp"), reference_samplers=(),
                                     samplers=(SamplerSetting(name="ddim-unclamped", steps=25),)),
                   extraction=ProbeConfig(prompts_top=48, samples_per_prompt=8),
                   membership=MembershipConfig(control_points=2), guidance=GuidanceConfig(sweep=(1.0, 7.5)),
                   dedup=DeduplicationConfig(targets=("caption",)), adaptive=AdaptiveConfig(probes=()),
                   dp=PrivacyConfig(epsilons=(8.0,), steps=300, control=False), forget=ForgetConfig(in_study=False)),
    # Concepts drawn in many pictures (data/scenes.py): scenes of 1-2 glyphs at 24 px, each of 56 glyphs in >= 32
    # member scenes, exact copies planted at quick's copy counts; captions name two glyphs, a relation and a colour,
    # so MiniLM reads 24 tokens. Trained on quick's step budget (1,200 x 64; 1.8x its CPU time at 24 px): measured in
    # docs/results/2026-12-02-concepts.md.
    "scenes": Preset(name="scenes", data=DataConfig(resolution=24, n_member=1300, exact_per_count=14,
                                                    image_per_count=0, caption_per_count=0, n_calibration=128,
                                                    scenes=SceneConfig()),
                     model=ModelConfig(max_text_tokens=24), train=TrainConfig(steps=1200)),
    # Positive control for membership inference: 64 images, no planted duplicates, each seen 200 times (400 steps of
    # 32) by the quick model's architecture. Every attack must find membership here (~2 min on 2 cores).
    "overfit": Preset(
        name="overfit",
        data=DataConfig(resolution=16, n_member=64, n_nonmember=64, n_calibration=8, exact_per_count=0,
                        image_per_count=0, caption_per_count=0),
        train=TrainConfig(steps=400, batch_size=32, warmup_steps=20, checkpoint_every=50),
        membership=MembershipConfig(per_side=48, tune_per_side=16, control_preset=None),
    ),
    "full": Preset(
        name="full",
        data=DataConfig(resolution=32, n_member=1000, n_nonmember=1000, n_calibration=128),
        model=ModelConfig(block_out_channels=(64, 128, 128), down_block_types=(
            "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=2),
        train=TrainConfig(steps=8000, ema_decay=0.999, lr=2e-4),
        study=StudyConfig(seeds=(0, 1, 2)), extraction=ProbeConfig(prompts_top=200, samples_per_prompt=64),
        membership=MembershipConfig(per_side=500),
    ),
    # Seconds on CPU: for tests only.
    "tiny": Preset(
        name="tiny",
        # At 8 px glyphs blur together: a lower join keeps families small enough for 24 members.
        data=DataConfig(resolution=8, n_member=24, n_nonmember=8, n_calibration=4, family_join=0.08,
                        exact_counts=(2, 4), exact_per_count=2, image_counts=(3,), image_per_count=1,
                        caption_counts=(2,), caption_per_count=1),
        model=ModelConfig(block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=4),
        train=TrainConfig(steps=4, batch_size=8, checkpoint_every=2, log_every=1, warmup_steps=1),
        sample=SampleConfig(steps=3, batch_size=16),
        study=StudyConfig(samplers=(SamplerSetting(name="ddim-unclamped", steps=3),
                                    SamplerSetting(name="dpmsolver++", steps=3)),
                          reference_samplers=(SamplerSetting(name="ddim", steps=3),)),
        extraction=ProbeConfig(prompts_top=6, samples_per_prompt=3),
        calibration=CalibrationConfig(setting_null_prompts=4),
        membership=MembershipConfig(per_side=6, tune_per_side=2, control_preset="tiny-overfit"),
        guidance=GuidanceConfig(sweep=(1.0, 3.0), interval=(3.0,), starts=(0.5,)),
        adaptive=AdaptiveConfig(min_dup=2, paraphrases=2, search_steps=2),
        dp=PrivacyConfig(epsilons=(8.0,), steps=2, expected_batch=2, multiplicity=2),
        forget=ForgetConfig(min_rows=2, shards=2, slices=2, finetune_steps=2, neighbours=4),
    ),
    # The positive control at test scale: 24 images at 8 px, each seen 300 times (seconds on CPU); 64 held-out images
    # give the negative control two halves of 32.
    "tiny-overfit": Preset(
        name="tiny-overfit",
        data=DataConfig(resolution=8, n_member=24, n_nonmember=64, n_calibration=2, family_join=0.08,
                        exact_per_count=0, image_per_count=0, caption_per_count=0),
        model=ModelConfig(block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=4),
        train=TrainConfig(steps=300, batch_size=24, warmup_steps=10, checkpoint_every=100),
        membership=MembershipConfig(per_side=16, tune_per_side=8, control_preset=None),
    ),
}


# Settings that left `[study]` for a section of their own (old key -> new section and key): a file or a run folder
# that still names an old key is refused, naming the new.
_STUDY_MOVES = {
    "extraction": {k: k for k in ("prompts_top", "samples_per_prompt", "edge_threshold", "min_clique", "compare_size")},
    "calibration": {k: k for k in ("delta", "calibrate", "null_target", "null_bound", "null_prompts",
                                   "setting_null_prompts")},
    "triage": {k: k for k in ("detector", "tiered", "confirm_fraction", "sequential_round", "sequential_quantile",
                              "sequential_margin")},
    "membership": {"mia_attacks": "attacks", "mia_per_side": "per_side", "lira_shadows": "lira_shadows",
                   "mia_tune_per_side": "tune_per_side", "mia_control_preset": "control_preset",
                   "mia_control_points": "control_points"},
    "guidance": {"guidance_sweep": "sweep", "interval_guidance": "interval", "guidance_starts": "starts"},
    "dedup": {"dedup_methods": "methods", "dedup_targets": "targets"},
    "adaptive": {"adaptive_probes": "probes", "adaptive_min_dup": "min_dup", "paraphrases": "paraphrases",
                 "search_steps": "search_steps", "search_step": "search_step"},
    "dp": {f"dp_{key}": key for key in PrivacyConfig.model_fields},
}
MOVED = {("study", old): (section, new) for section, keys in _STUDY_MOVES.items() for old, new in keys.items()}


def moved_keys(config: dict[str, Any]) -> list[str]:
    """The old keys (`section.key -> [new] key`) a configuration still uses."""
    return [f"{section}.{key} -> [{MOVED[(section, key)][0]}] {MOVED[(section, key)][1]}"
            for section, values in config.items() if isinstance(values, dict) for key in values
            if (section, key) in MOVED]


def recorded(config: dict[str, Any], source: Path) -> Preset:
    """A finished run's configuration as run (its record's `config`), typed for the reports. A run recorded before
    settings moved has findings of an older schema too, which `records.checked_findings` refuses first."""
    try:
        return Preset.model_validate(config)
    except ValidationError as exc:
        raise ConfigError(f"{source}: its configuration is not one this diffaudit reads ({_errors(exc)}); write the "
                          "reports with the diffaudit that ran it") from exc


def load_preset(name: str, path: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Preset:
    """Start from a named preset, apply a TOML file's sections, then explicit overrides (CLI flags)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    merged: dict[str, Any] = PRESETS[name].model_dump()
    layers = []
    if path is not None:
        try:
            layers.append(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    layers.append(overrides or {})
    for layer in layers:
        if moved := moved_keys(layer):
            raise ConfigError(f"config {path or 'flags'}: {'; '.join(moved)}: these settings moved, rename them")
        for section, values in layer.items():
            if not isinstance(values, dict) or section not in merged or not isinstance(merged[section], dict):
                raise ConfigError(f"unknown config section {section!r}; expected one of "
                                  f"{', '.join(k for k, v in merged.items() if isinstance(v, dict))}")
            merged[section] = {**merged[section], **values}
    try:
        return Preset.model_validate(merged)
    except ValidationError as exc:
        source = f"file {path}" if path else "flags"
        raise ConfigError(f"invalid config (preset {name!r}, {source}): {_errors(exc)}") from exc


def validated(section: _Frozen, **updates: Any) -> Any:
    """A copy of a config section with `updates` applied and checked (pydantic's model_copy does not check)."""
    try:
        return type(section).model_validate({**section.model_dump(), **updates})
    except ValidationError as exc:
        raise ConfigError(f"invalid {type(section).__name__} setting {updates}: {_errors(exc)}") from exc


def _errors(exc: ValidationError) -> str:
    """Pydantic's errors on one line, each as `section.field: what is wrong (got value)`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"])
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        parts.append(f"{where}: {err['msg']}{got}" if where else err["msg"])
    return "; ".join(parts)
