"""A memorization scorecard for a model card: what the study measured, in a versioned, schema-checked JSON record, and
a check that anyone holding the model and the data can run to see the card is true.

The card carries full SHA-256 digests (every weight and config file of the model, every file of the data), the
threat models, the copy threshold with its nulls, extraction (outsider and owner) with intervals, the strongest
membership test, each fix with its verdict, and every attacked caption's owner's verdict with its closest distance.
`verify` recomputes the digests, then re-runs captions the verifier draws itself (all N seeds each, the card's
sampler and guidance) and compares each verdict, allowing for the distance a device or library can move a picture.
"""

import hashlib
import json
import math
import secrets
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from diffaudit import __version__
from diffaudit.attacks.copies import match_generations, per_prompt_verdicts
from diffaudit.attacks.mia import access
from diffaudit.config import TILE_GRID, RuntimeConfig, SampleConfig
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.errors import CheckpointError, ConfigError
from diffaudit.layout import RunLayout
from diffaudit.model.generate import generate
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.shards import load_samples
from diffaudit.progress import Progress
from diffaudit.study.records import StudyResults, json_schema_of

SCHEMA_VERSION = 1
SCHEMA = Path(__file__).parents[1] / "schemas" / f"scorecard-v{SCHEMA_VERSION}.schema.json"
# CPU and CUDA float32 draw the same seed within 1/255 per pixel, which moves a tiled RMS distance by at most as much;
# twice that is the band around delta within which a verdict may flip without the card being wrong.
DISTANCE_TOLERANCE = 2 / 255
SHARE_TOLERANCE = 0.1  # at most this share of re-run verdicts may differ outside that band


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)


class Rate(_Record):
    """`count` of `n`, with its 95% interval."""

    count: int
    n: int = Field(ge=1)
    rate: float
    ci_low: float
    ci_high: float


class Null(_Record):
    """How often never-trained captions 'copy' at delta: the copy test's false-copy rate at one setting."""

    setting: str
    hits: int
    n: int
    ci_high: float
    valid: bool


class CopyThreshold(_Record):
    delta: float
    unit: str
    calibration_null: Null
    setting_nulls: list[Null]


class Extraction(_Record):
    """At the headline sampler, training seed `seed`, the base model."""

    sampler: str
    guidance: float
    seed: int
    samples_per_caption: int
    outsider_captions: Rate  # the black-box probe's confirmed copies
    owner_captions: Rate  # some generation within delta of the caption's own training picture
    owner_pictures: Rate


class Membership(_Record):
    attack: str
    access: str
    auc: float
    auc_ci: tuple[float, float]
    tpr_at_1pct_fpr: float
    strongest_at_1pct_fpr: str


class Fix(_Record):
    arm: str
    title: str
    lasts: str
    verdict: str
    owner_pictures: int
    base_owner_pictures: int
    pictures: int
    started_pictures: list[str]
    undone_by: list[str]
    quality_change: float | None  # relative change of the Fréchet distance; + is worse; None: not measured
    seeds: str


class CaptionVerdict(_Record):
    prompt: str
    copied: bool
    min_distance: float


class Rerun(_Record):
    """What a verifier draws: these settings, seeds 0..seeds-1 per caption, compared at `compare_size` pixels."""

    sampler: str
    steps: int
    guidance: float
    guidance_start: float
    early_guidance: float
    seeds: int
    delta: float
    compare_size: int


class Tolerance(_Record):
    distance: float
    share: float


class Scorecard(_Record):
    schema_version: Literal[1] = SCHEMA_VERSION
    tool: str
    model_files: dict[str, str] = Field(description="SHA-256 of every weight and config file, by relative path")
    data_sha256: str = Field(description="SHA-256 over every data file's relative path and SHA-256 (data_digest)")
    data_version: str
    data_licence: str
    threat_models: list[str]
    samplers: list[str]
    headline_sampler: str
    training_seeds: list[int]
    copy_threshold: CopyThreshold
    extraction: Extraction
    membership: Membership | None
    fixes: list[Fix]
    switch_sampler: list[dict[str, str | int | float | bool | list[str]]]
    command: str
    study_config: dict
    rerun: Rerun
    tolerance: Tolerance
    captions: list[CaptionVerdict] = Field(min_length=1)


def json_schema() -> dict:
    """The card's JSON Schema, as shipped in `SCHEMA` for anyone who reads cards without diffaudit."""
    return json_schema_of(Scorecard)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    """Every file a model or dataset is made of: hidden files (diffaudit's folder marks, a system's .DS_Store) left
    out, so copying a folder does not change its digest."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def model_digests(model: Path) -> dict[str, str]:
    """Every file of a model folder (weights, configs, tokenizer), by relative path."""
    files = _files(model)
    if not any(p.suffix == ".safetensors" for p in files):
        raise CheckpointError(f"{model}: no safetensors weights to hash")
    return {p.relative_to(model).as_posix(): file_sha256(p) for p in files}


def data_digest(data: Path) -> str:
    """One SHA-256 over each data file's relative path and SHA-256, in path order."""
    digest = hashlib.sha256()
    for p in _files(data):
        digest.update(f"{p.relative_to(data).as_posix()}\t{file_sha256(p)}\n".encode())
    return digest.hexdigest()


def _rate(count: int, n: int, ci: tuple[float, float] | list[float]) -> Rate:
    return Rate(count=count, n=n, rate=count / n, ci_low=ci[0], ci_high=ci[1])


def build_card(run: Path, model: Path) -> Scorecard:
    """The card of a finished study run whose base model is the folder `model` (checked against the run)."""
    res = StudyResults.load(run)
    layout = RunLayout(run)
    base = res.row("base")
    if AuditPipeline.from_pretrained(model, RuntimeConfig(device="cpu")).model_hash() != base.model_hash:
        raise ConfigError(f"{model} is not the model this run audited (its hash is not {base.model_hash}); pass "
                          "the base model the study used")
    cell = next(c for c in res.findings.cells if c.arm == "base" and c.seed == base.seed
                and c.sampler == base.sampler)
    sampling = base.sampling
    per_prompt = pd.read_parquet(layout.extraction(base.seed, "base") / "per_prompt.parquet")
    name, best = res.strongest(base)
    sharp, _ = res.strongest(base, by="tpr_at_1pct_fpr")
    config = res.config
    return Scorecard(
        tool=f"diffaudit {__version__}", model_files=model_digests(model), data_sha256=data_digest(layout.data),
        data_version=json.loads(layout.results.read_text())["dataset_version"],
        data_licence=_licence(layout.data),
        threat_models=["outsider: black-box generation from training captions; the training set only to confirm",
                       "owner: every generation compared with the caption's own training picture",
                       "membership: white-box noise predictions (the model file)"],
        samplers=[s.key for s in config.study.samplers], headline_sampler=base.sampler,
        training_seeds=res.seeds,
        copy_threshold=CopyThreshold(
            delta=base.delta, unit=f"largest per-tile RMS distance over a {TILE_GRID}x{TILE_GRID} tile grid, "
                                      "pixels scaled 0-1",
            calibration_null=Null(setting=base.setting, hits=cell.null.hits, n=cell.null.n,
                                  ci_high=cell.null.ci_high, valid=cell.null.valid),
            setting_nulls=[Null(setting=s, hits=v.hits, n=v.n, ci_high=v.ci_high, valid=v.valid)
                           for s, v in res.findings.setting_nulls.items()]),
        extraction=Extraction(
            sampler=base.sampler, guidance=base.guidance, seed=base.seed,
            samples_per_caption=config.extraction.samples_per_prompt,
            outsider_captions=_rate(cell.outsider_prompts, cell.prompts, cell.outsider_ci),
            owner_captions=_rate(cell.owner_prompts, cell.prompts, cell.owner_ci),
            owner_pictures=_rate(cell.owner_pictures, cell.pictures, cell.owner_picture_ci)),
        membership=None if name is None else Membership(
            attack=name, access=access(name), auc=best.auc,
            auc_ci=tuple(best.auc_ci), tpr_at_1pct_fpr=base.mia[sharp].tpr_at_1pct_fpr,
            strongest_at_1pct_fpr=sharp),
        fixes=[Fix(arm=e.arm, title=e.description.title, lasts=e.description.lasts, verdict=e.verdict,
                   owner_pictures=e.owner_pictures, base_owner_pictures=e.base_owner_pictures, pictures=e.pictures,
                   started_pictures=[str(p) for p in e.started_pictures], undone_by=[str(u) for u in e.undone_by],
                   quality_change=e.frechet_change if math.isfinite(e.frechet_change) else None,
                   seeds=e.seed_note or "every training seed measured")
               for e in res.effects()],
        switch_sampler=[s.model_dump() for s in res.findings.switch_sampler],
        command="diffaudit study --out RUN --config study.toml (study.toml: the card's study_config); "
                "check this card with: diffaudit scorecard --verify scorecard.json MODEL DATA",
        study_config=config.model_dump(mode="json"),
        rerun=Rerun(sampler=sampling.sampler, steps=sampling.steps, guidance=base.guidance,
                    guidance_start=sampling.guidance_start, early_guidance=sampling.early_guidance,
                    seeds=config.extraction.samples_per_prompt, delta=base.delta,
                    compare_size=config.data.resolution),
        tolerance=Tolerance(distance=DISTANCE_TOLERANCE, share=SHARE_TOLERANCE),
        captions=[CaptionVerdict(prompt=r.prompt, copied=bool(r.memorized), min_distance=float(r.oracle_min_distance))
                  for r in per_prompt.itertuples()])


def _licence(data: Path) -> str:
    licence = data / "LICENSE.md"
    return licence.read_text().strip() if licence.exists() else "not stated in the data folder (no LICENSE.md)"


class RerunVerdict(_Record):
    prompt: str
    card_copied: bool
    card_distance: float
    rerun_copied: bool
    rerun_distance: float
    agrees: bool  # the same verdict, or distances within the tolerance (so both lie at delta)


class Verification(_Record):
    model_files_match: bool
    mismatched_files: list[str]
    data_matches: bool
    inconsistencies: list[str]  # the card contradicting itself: its caption list against its counts and settings
    captions: list[RerunVerdict]
    tolerance: Tolerance  # the verifier's own, never the card's
    differing: int
    allowed: int
    passed: bool


def load_card(path: Path) -> Scorecard:
    """A card read and checked against its schema; an unknown version or a malformed card is refused in one line."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable scorecard ({exc})") from exc
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(f"{path}: scorecard schema version {raw.get('schema_version')!r}; this diffaudit reads "
                          f"version {SCHEMA_VERSION}")
    try:
        return Scorecard.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a valid scorecard: {str(exc).splitlines()[0]}") from exc


def verify(card: Scorecard, model: Path, data: Path, captions: int, runtime: RuntimeConfig,
           progress: Progress | None = None, draw: int | None = None) -> Verification:
    """Recompute the digests, check the card against itself, then re-run `captions` captions drawn here (seed `draw`,
    fresh when None) with all of the card's seeds, and compare each owner's verdict with the card's. The tolerance is
    the verifier's (`DISTANCE_TOLERANCE`, `SHARE_TOLERANCE`), whatever the card states."""
    inconsistent = inconsistencies(card)
    files = model_digests(model)
    mismatched = sorted(k for k in set(files) | set(card.model_files) if files.get(k) != card.model_files.get(k))
    data_ok = data_digest(data) == card.data_sha256
    rng = np.random.default_rng(secrets.randbits(64) if draw is None else draw)
    chosen = [card.captions[i] for i in sorted(rng.choice(len(card.captions), min(captions, len(card.captions)),
                                                          replace=False))]
    r = card.rerun
    dataset = load_imagefolder(data)
    pipe = AuditPipeline.from_pretrained(model, runtime).use(runtime)
    sample = SampleConfig(sampler=r.sampler, steps=r.steps, guidance=r.guidance, guidance_start=r.guidance_start,
                          early_guidance=r.early_guidance)
    with tempfile.TemporaryDirectory(prefix="diffaudit-verify-") as scratch:
        rows = generate(pipe, [c.prompt for c in chosen], list(range(r.seeds)), [r.guidance], sample,
                        Path(scratch) / "samples", progress)
        images, index = load_samples(Path(scratch) / "samples", rows, side=r.compare_size)
    matches = match_generations(images, index, dataset.split("member"), r.delta)
    rerun = per_prompt_verdicts(matches, r.delta).set_index("prompt")
    verdicts = []
    for c in chosen:
        distance = float(rerun.loc[c.prompt, "oracle_min_distance"])
        copied = bool(rerun.loc[c.prompt, "memorized"])
        verdicts.append(RerunVerdict(prompt=c.prompt, card_copied=c.copied, card_distance=c.min_distance,
                                     rerun_copied=copied, rerun_distance=distance,
                                     agrees=copied == c.copied or abs(distance - c.min_distance) <= DISTANCE_TOLERANCE))
    differing = sum(not v.agrees for v in verdicts)
    allowed = int(SHARE_TOLERANCE * len(verdicts))
    return Verification(model_files_match=not mismatched, mismatched_files=mismatched, data_matches=data_ok,
                        inconsistencies=inconsistent, captions=verdicts,
                        tolerance=Tolerance(distance=DISTANCE_TOLERANCE, share=SHARE_TOLERANCE), differing=differing,
                        allowed=allowed,
                        passed=not mismatched and data_ok and not inconsistent and differing <= allowed)


def inconsistencies(card: Scorecard) -> list[str]:
    """Where a card contradicts itself: its captions against its owner's count, each caption's verdict against its own
    distance, and the re-run settings against the extraction it reports."""
    r, e = card.rerun, card.extraction
    found = [f"{name}: {a!r} against {b!r}" for name, a, b in (
        ("captions listed vs owner_captions.n", len(card.captions), e.owner_captions.n),
        ("captions copied vs owner_captions.count", sum(c.copied for c in card.captions), e.owner_captions.count),
        ("rerun.delta vs copy_threshold.delta", r.delta, card.copy_threshold.delta),
        ("rerun.seeds vs extraction.samples_per_caption", r.seeds, e.samples_per_caption),
        ("rerun.guidance vs extraction.guidance", r.guidance, e.guidance)) if a != b]
    return found + [f"caption {c.prompt!r}: copied={c.copied} at distance {c.min_distance} (delta {r.delta})"
                    for c in card.captions if c.copied != (c.min_distance < r.delta)]


def card_markdown(card: Scorecard) -> str:
    """The "Memorization and privacy" section to paste into a Hugging Face model card."""
    e, t = card.extraction, card.copy_threshold

    def rate(r: Rate) -> str:
        return f"{r.count} of {r.n} ({r.rate:.0%}; 95% interval {r.ci_low:.0%} to {r.ci_high:.0%})"

    lines = [
        "## Memorization and privacy", "",
        f"Audited with {card.tool} (scorecard schema v{card.schema_version}). Model files and data are identified by "
        f"SHA-256 (`scorecard.json`); data: {card.data_licence.splitlines()[0]}", "",
        f"- **Extraction, as deployed** ({e.sampler}, guidance {e.guidance:g}, {e.samples_per_caption} tries per "
        f"caption, training seed {e.seed}): an outsider who can only ask for pictures got copies for "
        f"{rate(e.outsider_captions)} captions; checking every picture against the training data, the model copies "
        f"{rate(e.owner_pictures)} training pictures ({rate(e.owner_captions)} captions).",
        f"- **Copy threshold**: a generation is a copy when its distance from the training picture ({t.unit}) is "
        f"below {t.delta:g}; never-trained captions 'copied' {t.calibration_null.hits} times in {t.calibration_null.n} "
        f"(95% upper bound {t.calibration_null.ci_high:.1%}).",
    ]
    if card.membership:
        m = card.membership
        lines.append(f"- **Membership**: the strongest test ({m.attack}, {m.access}) scored AUC {m.auc:.2f} (95% "
                     f"interval {m.auc_ci[0]:.2f} to {m.auc_ci[1]:.2f}); at 1% false accusations, "
                     f"{m.strongest_at_1pct_fpr} caught {m.tpr_at_1pct_fpr:.0%} of training pictures.")
    lines += ["", "| fix | where it lives | verdict | pictures copied (base → fix) | quality change |",
              "|---|---|---|---|---|"]
    lines += [f"| {f.title} | {f.lasts} | {f.verdict} | {f.base_owner_pictures} → {f.owner_pictures} of "
              f"{f.pictures} | {'not measured' if f.quality_change is None else f'{f.quality_change:+.1%}'} |"
              for f in card.fixes]
    lines += ["", f"Samplers measured: {', '.join(card.samplers)} (headline {card.headline_sampler}); training "
              f"seeds {', '.join(map(str, card.training_seeds))}.", "",
              f"Check this card: `diffaudit scorecard --verify scorecard.json MODEL DATA` (re-runs captions it "
              f"draws itself; a verdict may flip only where the re-run distance is within "
              f"{card.tolerance.distance:.4f} of the card's, and at most {card.tolerance.share:.0%} of verdicts may "
              "differ beyond that)."]
    return "\n".join(lines) + "\n"
