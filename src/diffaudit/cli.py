"""The `diffaudit` command line: one subcommand per verb; flags map onto config fields."""

import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from diffaudit import backend
from diffaudit.config import PRESETS, Preset, load_preset, validated
from diffaudit.errors import ConfigError, DatasetError, DiffauditError
from diffaudit.io import jsonable
from diffaudit.ownership import owned
from diffaudit.samplers import SAMPLERS

if TYPE_CHECKING:
    from diffaudit.report.memo import Memo
    from diffaudit.study.audit_records import ExtractionRecord

SAMPLER_HELP = "One of " + ", ".join(SAMPLERS) + " (samplers.py)."

app = typer.Typer(help="Audit text-to-image diffusion models for training-data memorization.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Build or check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.callback()
def _one_command(ctx: typer.Context) -> None:
    """Audit text-to-image diffusion models for training-data memorization."""
    ctx.with_resource(backend.scope())  # a pool a command chooses (--ray) ends with that command
report_app = typer.Typer(help="Write the memo, technical report and extraction viewer of a finished study.",
                         no_args_is_help=True)
app.add_typer(report_app, name="report")
console = Console()
err_console = Console(stderr=True)

PresetOpt = Annotated[str, typer.Option(help="Preset: " + ", ".join(PRESETS) + " (config.PRESETS).")]
DemoPresetOpt = Annotated[str, typer.Option(help="core: the mission's core (about half an hour on 2 CPU cores); "
                                                 "quick: the whole study (hours).")]
ConfigOpt = Annotated[Path | None, typer.Option(
    help="TOML file whose sections (" + ", ".join(rf"\[{k}]" for k in Preset.model_fields if k != "name")
         + ") override the preset.")]


def setting(field: str, help: str, **kwargs: Any) -> Any:
    """A CLI option that overrides config field `field` ("section.name"). Its default is None, meaning the config's:
    defaults live in the config alone (tests/test_cli_config.py walks every command to hold this)."""
    info = typer.Option(help=f"{help} Config: {field}.", **kwargs)
    info.config_field = field
    return info


def setting_fields(command: Any) -> dict[str, str]:
    """{parameter: "section.field"} for a command's `setting` options."""
    hints = get_type_hints(command, include_extras=True)
    return {name: meta.config_field for name, hint in hints.items() for meta in getattr(hint, "__metadata__", ())
            if hasattr(meta, "config_field")}


def _configured(command: Any, values: dict[str, Any]) -> Preset:
    """The preset, then the --config file's sections, then the command's flags that were given."""
    overrides: dict[str, dict[str, Any]] = {}
    for name, field in setting_fields(command).items():
        value = values[name]
        if value is None or value == []:
            continue
        section, key = field.split(".")
        scalar = not isinstance(Preset.model_fields[section].default.model_dump()[key], tuple | list)
        if isinstance(value, list) and scalar:  # a repeated flag (a guidance sweep): each is checked by the command
            value = value[0]
        overrides.setdefault(section, {})[key] = value
    cfg = load_preset(values.get("preset", "quick"), values.get("config"), overrides)
    if cfg.runtime.ray is not None:  # the pool lives as long as this command (`_one_command`)
        from diffaudit.scale.ray_pool import connect

        backend.use(connect(cfg.runtime))
    return cfg


DeviceOpt = Annotated[str | None, setting("runtime.device", "auto (CUDA when present), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str | None, setting("runtime.dtype", "float32, bfloat16 or float16 (GPU only).")]
RayOpt = Annotated[str | None, setting(
    "runtime.ray", "Run generation shards, neighbour search, detector and membership scoring and the study's arms on "
    "Ray: local (start a cluster here), auto (join the one `ray start` runs) or a cluster address. Same results as "
    "without it when each worker has as many threads as this process.")]
RayCpusOpt = Annotated[int | None, setting("runtime.ray_cpus", "CPUs (and torch threads) per Ray worker.")]
RayGpusOpt = Annotated[float | None, setting("runtime.ray_gpus", "GPUs per Ray worker (1: one worker per GPU).")]
RayWorkersOpt = Annotated[int | None, setting("runtime.ray_workers", "Ray workers (default: as many as fit).")]


def _read_prompts(prompt: list[str] | None, prompts_file: Path | None) -> list[str]:
    """Prompts from flags and a UTF-8 file (one a line), checked before any model is loaded."""
    from diffaudit.data.imagefolder import caption_problem

    prompts = list(prompt or [])
    if prompts_file is not None:
        if not prompts_file.is_file():
            what = "is a folder, not a file" if prompts_file.is_dir() else "does not exist"
            raise ConfigError(f"prompts file {prompts_file} {what}")
        try:  # utf-8-sig: a byte-order mark must not become part of the first prompt
            text = prompts_file.read_text(encoding="utf-8-sig")
            prompts += [ln.strip() for ln in text.split("\n") if ln.strip()]
        except UnicodeDecodeError as exc:
            raise ConfigError(f"prompts file {prompts_file} is not UTF-8 text ({exc.reason} at byte {exc.start})"
                              ) from exc
    if not prompts:
        raise ConfigError("no prompts: pass --prompt or a non-empty --prompts-file")
    for p in prompts:
        problem = caption_problem(p)
        if problem:
            raise ConfigError(f"prompt {p[:40]!r}: {problem}")
    return prompts


def _sides(data: Any) -> str:
    low, high = int(data.table["source_side"].min()), int(data.table["source_side"].max())
    return f"{low} px" if low == high else f"{low}-{high} px"


def _warn_upscaled(data: Any, side: int, use: str, consequence: str) -> None:
    """Say how many images were smaller than `side` and upscaled (blurred) before being `use`d, never silently."""
    upscaled = int((data.table["source_side"] < side).sum())
    if upscaled:
        console.print(f"[yellow]warning:[/] {upscaled} of {len(data)} training images are smaller than {side} px "
                      f"and were upscaled to be {use} ({_sides(data)}), which blurs them; {consequence}")


def _say_declared_sampler(pipe: Any, sampler: str) -> None:
    """A model folder that declares another scheduler than the one we sample with is told, never silently ignored."""
    if pipe.declared_sampler not in (None, sampler):
        console.print(f"[yellow]note:[/] the model folder declares the {pipe.declared_sampler} sampler; sampling with "
                      f"{sampler} (sample.sampler; pass --sampler {pipe.declared_sampler} to draw as it declares)")


def _progress():
    from diffaudit.progress import make_progress

    return make_progress(console)


@data_app.command("openmoji")
def data_openmoji(
    out: Path, preset: PresetOpt = "quick", config: ConfigOpt = None,
    resolution: Annotated[int | None, setting("data.resolution", "Image side in pixels.")] = None,
    seed: Annotated[int | None, setting("data.seed", "Seed of the split and duplication plan.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing dataset folder.")] = False,
) -> None:
    """Render OpenMoji into a captioned imagefolder with member/nonmember/calibration splits and planted duplicates."""
    from diffaudit.data.build import build_dataset

    cfg = _configured(data_openmoji, locals())
    with _progress() as progress:
        build_dataset(out, cfg.data, progress, force=force)
    console.print(f"dataset written to {out}")


@data_app.command("check")
def data_check(
    folder: Path, preset: PresetOpt = "quick", config: ConfigOpt = None,
    resolution: Annotated[int | None, setting("data.resolution", "Image side in pixels (default: as stored).")
                          ] = None,
    strict: Annotated[bool, typer.Option(help="Refuse a dataset whose held-out images have near-copies among "
                                               "the members.")] = False,
    delta: Annotated[float | None, setting("data.family_join", "Near-copy distance (tiled RMS); without it (or a "
                                                               "config file's), the dataset manifest's copy_delta, "
                                                               "else the preset's.")] = None,
) -> None:
    """Validate an imagefolder (metadata.jsonl/.csv/.parquet), summarise it, and report held-out images that a
    copy test could not tell from a member (their family or a near-copy is in the member split)."""
    from diffaudit.data.families import split_leaks
    from diffaudit.data.imagefolder import load_imagefolder

    manifest = folder / "manifest.json"
    flag_delta, flag_resolution = delta, resolution
    cfg = _configured(data_check, locals())  # reads and checks the --config file first
    in_file = tomllib.loads(config.read_text()).get("data", {}) if config else {}
    # Precedence: flag, then the --config file, then the dataset's own manifest (delta) or stored size (resolution).
    delta = cfg.data.family_join
    if flag_delta is None and "family_join" not in in_file and manifest.is_file():
        delta = json.loads(manifest.read_text()).get("copy_delta", delta)
    resolution = cfg.data.resolution if flag_resolution is not None or "resolution" in in_file else None
    data = load_imagefolder(folder, resolution, family_join=delta)
    console.print(f"{folder}: {len(data)} rows, images {data.images.shape[1:]}, version {data.version}, "
                  f"{data.table['family'].nunique()} near-duplicate families")
    console.print(data.table["split"].value_counts().to_string())
    leaks = split_leaks(data.images, data.table, delta)
    held = int((data.table["split"] != "member").sum())
    if leaks.empty:
        console.print(f"splits are family-disjoint: no held-out image within {delta:g} of a member")
        return
    examples = "; ".join(f"{r.id} ~ {r.member_id} ({r.distance:.3f})" for r in leaks.head(5).itertuples())
    message = (f"{len(leaks)} of {held} held-out images ({len(leaks) / held:.1%}) share a family with, or lie within "
               f"tiled RMS {delta:g} of, a member image; e.g. {examples}")
    if strict:
        raise DatasetError(message)
    console.print(f"[yellow]warning:[/] {escape(message)}")


@app.command()
def train(
    data: Path, out: Path, preset: PresetOpt = "quick", config: ConfigOpt = None,
    steps: Annotated[int | None, setting("train.steps", "Optimiser steps.")] = None,
    batch_size: Annotated[int | None, setting("train.batch_size", "Images per step.")] = None,
    lr: Annotated[float | None, setting("train.lr", "AdamW learning rate.")] = None,
    seed: Annotated[int | None, setting("train.seed", "Initialisation, batch and noise seed.")] = None,
    sharded: Annotated[bool, typer.Option(help="Train for SISA unlearning: forget.shards models, each in "
                                               "forget.slices slices with a checkpoint after each.")] = False,
    device: DeviceOpt = None, dtype: DtypeOpt = None,
) -> None:
    """Train the model under audit on DATA's member split; resumes from OUT/checkpoints after a crash."""
    from diffaudit.data.imagefolder import load_imagefolder
    from diffaudit.model.pipeline import AuditPipeline, build_pipeline
    from diffaudit.model.train import train as run_train
    from diffaudit.unlearning.sisa import train_sharded

    cfg = _configured(train, locals())
    with owned(out, "model", {"dataset": data}):
        dataset = load_imagefolder(data, cfg.data.resolution)
        pipe = build_pipeline(cfg.model, cfg.data.resolution, seed=cfg.train.seed, runtime=cfg.runtime)
        with _progress() as progress:
            if sharded:
                pipe = AuditPipeline.from_pretrained(train_sharded(pipe, dataset, cfg.train, cfg.forget.shards,
                                                                   cfg.forget.slices, out, cfg.runtime, progress))
            else:
                run_train(pipe, dataset, cfg.train, out, progress)
    console.print(f"model written to {out / 'model'} (hash {pipe.model_hash()})")


@app.command()
def generate(
    model: Path, out: Path,
    prompt: Annotated[list[str] | None, typer.Option(help="A prompt; repeat for several.")] = None,
    prompts_file: Annotated[Path | None, typer.Option(help="One prompt per line.")] = None,
    seeds: Annotated[int | None, setting("sample.seeds", "Samples per prompt (seeds 0..N-1).")] = None,
    guidance: Annotated[list[float] | None, setting("sample.guidance", "Guidance scale; repeat for a sweep.")] = None,
    preset: PresetOpt = "quick", config: ConfigOpt = None,
    steps: Annotated[int | None, setting("sample.steps", "Sampling steps.")] = None,
    sampler: Annotated[str | None, setting("sample.sampler", SAMPLER_HELP)] = None,
    batch_size: Annotated[int | None, setting("sample.batch_size", "UNet rows per call.")] = None,
    device: DeviceOpt = None, dtype: DtypeOpt = None, ray: RayOpt = None, ray_cpus: RayCpusOpt = None,
    ray_gpus: RayGpusOpt = None, ray_workers: RayWorkersOpt = None,
) -> None:
    """Generate prompts x seeds x guidance into OUT (image shards + index.parquet); resumes if interrupted."""
    from diffaudit.model.generate import generate as run_generate
    from diffaudit.model.generate import plan
    from diffaudit.model.pipeline import AuditPipeline

    prompts = _read_prompts(prompt, prompts_file)
    cfg = _configured(generate, locals())
    scales = [validated(cfg.sample, guidance=g).guidance for g in guidance or [cfg.sample.guidance]]
    with owned(out, "samples", {"model": model}):
        pipe = AuditPipeline.from_pretrained(model, cfg.runtime)
        _say_declared_sampler(pipe, cfg.sample.sampler)
        plan(pipe, len(prompts), cfg.sample.seeds, len(scales), out)  # before the seed list is built
        with _progress() as progress:
            index = run_generate(pipe, prompts, list(range(cfg.sample.seeds)), scales, cfg.sample, out, progress)
    console.print(f"{len(index)} samples in {out}")


def _copy_threshold(pipe: Any, data: Any, cfg: Preset, out: Path, progress: Any) -> float:
    """delta by the one rule (`study.calibration.copy_threshold`), said on the console with its null."""
    from diffaudit.study.calibration import copy_threshold

    delta, calibration = copy_threshold(pipe, data, cfg, out, progress)
    if calibration is None:
        console.print(f"[yellow]copy threshold not calibrated[/] (the data has no never-trained split): delta "
                      f"{delta:g} as configured")
    else:
        null = calibration["model_null"]
        how = "calibrated" if cfg.calibration.calibrate else "as configured (calibration.calibrate = false)"
        console.print(f"copy threshold: delta {delta:g}, {how}; model null {null['hits']}/{null['n']} never-trained "
                      f"captions ({'target met' if calibration['met'] else calibration['reason']})")
    return delta


@app.command()
def extract(
    model: Path, data: Path, out: Path,
    top: Annotated[int | None, setting("extraction.prompts_top", "Attack the N most-duplicated training captions.")
                   ] = None,
    prompts_file: Annotated[Path | None, typer.Option(help="Attack these prompts (one a line) instead.")] = None,
    samples: Annotated[int | None, setting("extraction.samples_per_prompt", "Generations per prompt (Carlini: 500).")
                       ] = None,
    guidance: Annotated[float | None, setting("sample.guidance", "Classifier-free guidance scale.")] = None,
    preset: PresetOpt = "quick", config: ConfigOpt = None,
    steps: Annotated[int | None, setting("sample.steps", "Sampling steps.")] = None,
    sampler: Annotated[str | None, setting("sample.sampler", SAMPLER_HELP)] = None,
    delta: Annotated[float | None, setting("calibration.delta", "Extraction threshold on tiled RMS distance (the "
                                                                "cap of the calibration when calibration.calibrate "
                                                                "is on).")] = None,
    edge_threshold: Annotated[float | None, setting("extraction.edge_threshold", "Clique edge threshold between "
                                                                             "generations.")] = None,
    min_clique: Annotated[int | None, setting("extraction.min_clique", "Smallest clique that flags a prompt.")] = None,
    calibrate: Annotated[bool | None, setting("calibration.calibrate", "Calibrate delta on never-trained captions.")
                         ] = None,
    compare_size: Annotated[int | None, setting("extraction.compare_size", "Side in pixels at which generations and "
                                                                       "training images are compared.")] = None,
    tiered: Annotated[bool | None, setting("triage.tiered", "Score prompts cheaply first; probe only the top "
                                                           "fraction.")] = None,
    detector: Annotated[str | None, setting("triage.detector", "Cheap detector for --tiered: wen, agreement or "
                                                              "sharpness.")] = None,
    confirm_fraction: Annotated[float | None, setting("triage.confirm_fraction", "Share of prompts the full probe "
                                                                                 "confirms.")] = None,
    full_run: Annotated[Path | None, typer.Option(help="An earlier full probe to compare --tiered with.")] = None,
    sequential: Annotated[Path | None, typer.Option(help="Draw in rounds, stopping each prompt by this rule (written "
                                                         "by `diffaudit stopping-rule` on a second model).")] = None,
    device: DeviceOpt = None, dtype: DtypeOpt = None, ray: RayOpt = None, ray_cpus: RayCpusOpt = None,
    ray_gpus: RayGpusOpt = None, ray_workers: RayWorkersOpt = None,
) -> None:
    """Carlini et al. 2023 extraction probe: generate, clique-filter, match to the training set, score.

    Defaults come from the preset's [extraction], [calibration] and [triage] sections (flags and --config override
    them)."""
    from diffaudit.attacks.extraction import ExtractionConfig
    from diffaudit.attacks.sequential import StoppingRule
    from diffaudit.data.imagefolder import load_imagefolder
    from diffaudit.model.pipeline import AuditPipeline
    from diffaudit.study.audit_records import ExtractionRecord
    from diffaudit.study.extraction_audit import (
        most_duplicated_prompts,
        prompts_from_file,
        run_extraction,
        run_tiered,
    )
    from diffaudit.study.runner import check_names, setting_tag

    cfg = _configured(extract, locals())
    s, triage = cfg.extraction, cfg.triage
    check_names(cfg)
    if prompts_file is not None:
        _read_prompts(None, prompts_file)
    rule = StoppingRule.load(sequential) if sequential is not None else None
    if rule is not None and triage.tiered:
        raise ConfigError("--sequential and --tiered are two ways to probe less; choose one")
    if full_run is not None and not (full_run / "per_prompt.parquet").is_file():
        raise ConfigError(f"--full-run {full_run} is not a finished extraction (per_prompt.parquet is missing)")
    pipe = AuditPipeline.from_pretrained(model, cfg.runtime)
    _say_declared_sampler(pipe, cfg.sample.sampler)
    compare = s.compare_size or pipe.resolution
    dataset = load_imagefolder(data, compare)
    console.print(f"comparing at {compare} px: generations ({pipe.resolution} px) and training images "
                  f"({_sides(dataset)}) are resized to it (extraction.compare_size)")
    _warn_upscaled(dataset, compare, "compared", "set --compare-size to at most "
                   f"{int(dataset.table['source_side'].min())} to compare at the reference's own detail")
    targets = (prompts_from_file(prompts_file, dataset) if prompts_file
               else most_duplicated_prompts(dataset, s.prompts_top))
    samples, scale = s.samples_per_prompt, cfg.sample.guidance
    with owned(out, "extraction", {"model": model, "dataset": data}), _progress() as progress:
        delta = _copy_threshold(pipe, dataset, cfg, out, progress)
        probe_cfg = ExtractionConfig.at(delta, s)
        if triage.tiered:
            result = run_tiered(pipe, dataset, out, targets, samples, scale, cfg.sample, probe_cfg, triage.detector,
                                triage.confirm_fraction, full_run, progress)
            console.print_json(data=jsonable(result))
            return
        summary = run_extraction(pipe, dataset, out, targets, samples, scale, cfg.sample, probe_cfg, progress,
                                 rule=rule)
    if rule is not None:
        seq = summary["sequential"]
        console.print(f"sequential: {seq['draws']} of {seq['full_draws']} generations drawn; stops {seq['stops']} "
                      f"(rule fitted on {rule.fitted_on}, estimated miss rate "
                      f"{'not estimated' if rule.miss is None else format(rule.miss.rate, '.1%')})")
    _print_extraction(ExtractionRecord.of(summary, delta, scale, summary["model_hash"], cfg.sample,
                                          setting_tag(cfg.sample, scale)), samples, out)


def _print_extraction(r: "ExtractionRecord", samples: int, out: Path) -> None:
    """The probe's result as `diffaudit extract` shows it: by duplication bucket, then the whole."""
    def share(x: float | None, form: str = ".1%") -> str:
        return "n/a" if x is None else format(x, form)

    table = Table(title=f"Extraction: {r.prompts_with_copy} of {r.attacked_prompts} prompts copied their own image "
                        f"({r.extracted_images} images, {r.extracted_families} subjects; {samples} generations each, "
                        f"delta {r.delta:g})")
    for col in ("duplicates", "prompts", "extracted", "rate", "95% CI"):
        table.add_column(col)
    for b in r.by_dup:
        table.add_row(b.dup_bucket, str(b.prompts), str(b.hits), share(b.rate, ".0%"),
                      f"{share(b.ci_low, '.0%')}-{share(b.ci_high, '.0%')}")
    console.print(table)
    console.print(f"also: {r.family_prompts} prompts copied a near-duplicate sibling, {r.other_prompts} another "
                  "subject")
    low, high = r.extraction_ci
    console.print(f"overall {share(r.extraction_rate)} [{share(low)}, {share(high)}]; clique-filter precision "
                  f"{share(r.probe_precision, '.2f')}, probe recall {share(r.probe_recall, '.2f')} vs the oracle; "
                  f"{r.extraction_unet_evals} UNet evaluations; results in {out}")


@app.command("stopping-rule")
def stopping_rule(
    full_run: Annotated[Path, typer.Argument(help="A finished full `diffaudit extract` of a second model (another "
                                                  "training seed), never the model to be audited.")],
    out: Annotated[Path, typer.Argument(help="The rule's JSON file.")],
    round_size: Annotated[int | None, setting("triage.sequential_round", "Generations drawn per prompt per round.")
                          ] = None,
    quantile: Annotated[float | None, setting("triage.sequential_quantile", "Share of the second model's extracted "
                                                                           "prompts each check keeps drawing.")] = None,
    margin: Annotated[float | None, setting("triage.sequential_margin", "Widen every threshold by this share.")
                      ] = None,
    preset: PresetOpt = "quick", config: ConfigOpt = None,
) -> None:
    """Fit the sequential probe's stopping rule (`extract --sequential`) on a second model's full probe."""
    from diffaudit.study.extraction_audit import stopping_rule_from

    s = _configured(stopping_rule, locals()).triage
    rule = stopping_rule_from(full_run, s.sequential_round, s.sequential_quantile, s.sequential_margin)
    rule.save(out)
    miss = rule.miss
    console.print(f"rule for N = {rule.budget}, rounds of {rule.round_size}, seeds drawn in the order "
                  f"{', '.join(map(str, rule.seeds()))}, fitted on {rule.fitted_on}: estimated "
                  f"miss rate {miss.missed}/{miss.of} ({miss.ci_low:.0%}-{miss.ci_high:.0%}, {miss.how}; "
                  f"{miss.confirmed_without_copy} of them confirmed early on a clique without a copy); "
                  f"written to {out}")


@app.command()
def mia(
    model: Path, data: Path, out: Path,
    attack: Annotated[list[str] | None, setting("membership.attacks", "Attack name; repeat.")] = None,
    per_side: Annotated[int | None, setting("membership.per_side", "Members and non-members evaluated (each).")
                        ] = None,
    shadows: Annotated[int | None, setting("membership.lira_shadows", "Shadow models for LiRA (0: no LiRA).", min=0)
                       ] = None,
    shadow_steps: Annotated[int | None, setting("train.steps", "Training steps of each shadow model (the target's "
                                                               "recipe).")] = None,
    tune_per_side: Annotated[int | None, setting("membership.tune_per_side", "Labelled samples per side, "
                                                                            "family-disjoint from the scored ones, "
                                                                            "that choose each attack's settings (0: "
                                                                            "the papers' settings).", min=0)] = None,
    preset: PresetOpt = "quick", config: ConfigOpt = None,
    device: DeviceOpt = None, dtype: DtypeOpt = None, ray: RayOpt = None, ray_cpus: RayCpusOpt = None,
    ray_gpus: RayGpusOpt = None, ray_workers: RayWorkersOpt = None,
) -> None:
    """Membership inference: loss, PIA, SecMI, CLiD and LiRA, side by side on one honest split."""
    from diffaudit.data.imagefolder import load_imagefolder
    from diffaudit.model.pipeline import AuditPipeline
    from diffaudit.study.audit_records import MiaRun
    from diffaudit.study.mia_audit import check_attacks, run_mia, train_shadows
    from diffaudit.study.records import attack_settings

    cfg = _configured(mia, locals())
    per_side, shadows = cfg.membership.per_side, cfg.membership.lira_shadows
    names = list(attack or [*cfg.membership.attacks, *(["lira-online", "lira-offline"] if shadows else [])])
    check_attacks(names, shadows)
    pipe = AuditPipeline.from_pretrained(model, cfg.runtime)
    dataset = load_imagefolder(data, pipe.resolution)
    _warn_upscaled(dataset, pipe.resolution, "queried", "membership scores of blurred images understate what the "
                   "model remembers")
    with owned(out, "mia", {"model": model, "dataset": data}), _progress() as progress:
        shadow_models = None
        if shadows:
            shadow_models = train_shadows(dataset, cfg, shadows, out / "shadows", progress)
        summary = run_mia(pipe, dataset, out, names, per_side, shadow_models, progress,
                          tune_per_side=cfg.membership.tune_per_side)
    run = MiaRun.model_validate(summary)
    check = run.split_check
    console.print(f"split check (no model access): AUC {check.auc:.3f} [{check.auc_ci[0]:.3f}, {check.auc_ci[1]:.3f}]"
                  + ("" if check.at_chance else "  [red]NOT at chance[/red]"))
    table = Table(title=f"Membership inference, {run.per_side} members vs {run.per_side} non-members")
    for col in ("attack", "AUC [95% CI]", "TPR@1%FPR [95% CI]", "TPR@0.1%FPR", "AUC - loss [95% CI]", "chosen",
                "queries/sample"):
        table.add_column(col)
    for name, res in run.attacks.items():
        a, vs = res.all, run.paired.get(f"{name} - loss")
        table.add_row(name, f"{a.auc:.3f} [{a.auc_ci[0]:.3f}, {a.auc_ci[1]:.3f}]",
                      f"{a.tpr_at_1pct_fpr:.3f} [{a.tpr_at_1pct_fpr_ci[0]:.3f}, {a.tpr_at_1pct_fpr_ci[1]:.3f}]",
                      f"{a.tpr_at_01pct_fpr:.3f}" if a.tpr_at_01pct_fpr is not None else "- (< 1,000 non-members)",
                      f"{vs.difference:+.3f} [{vs.ci[0]:+.3f}, {vs.ci[1]:+.3f}]" if vs else "-",
                      escape(json.dumps(attack_settings(res.choice))), f"{res.queries_per_sample:g}")
    console.print(table)
    gap = run.loss_gap
    console.print(f"held-out loss gap: non-members {gap.nonmember_loss:.4f} vs members {gap.member_loss:.4f} "
                  f"({gap.relative_gap:+.1%})")
    console.print(f"scores and ROC in {out}")


ReferenceOpt = Annotated[Path | None, typer.Option(help="Committed reference model to reuse if it matches.")]


def _run_study(cfg: Preset, out: Path, reference: Path | None) -> None:
    from diffaudit.study.runner import run_study
    from diffaudit.tracking import mlflow_uri

    with _progress() as progress:
        table = run_study(cfg, out, reference, progress)
    show = Table(title=f"diffaudit study ({cfg.name}): extraction before/after each mitigation")
    for col in ("arm", "seed", "guidance", "extraction [95% CI]", "best MIA AUC", "held-out loss", "Fréchet dist.",
                "train s"):
        show.add_column(col)
    for r in table.itertuples():
        show.add_row(r.arm, str(r.seed), f"{r.guidance:g}",
                     f"{r.extraction_rate:.1%} [{r.ci_low:.1%}, {r.ci_high:.1%}] ({r.extracted}/{r.prompts})",
                     "-" if r.mia_auc is None or r.mia_auc != r.mia_auc else f"{r.mia_auc:.3f} ({r.best_mia})",
                     f"{r.heldout_loss:.4f}", f"{r.frechet_distance:.2f}", f"{r.train_seconds:.0f}")
    console.print(show)
    console.print(f"results: {out / 'results.json'}; assumptions: {out / 'assumptions.json'}; "
                  f"MLflow: mlflow ui --backend-store-uri {mlflow_uri(out)}")


@app.command()
def lineage(
    model: Path,
    data: Annotated[Path | None, typer.Option(help="The dataset, for a model trained before lineage was recorded.")]
    = None,
    sha256: Annotated[str | None, typer.Option(help="Content hash of a picture (the dataset's sha256 column).")]
    = None,
    row_id: Annotated[str | None, typer.Option("--id", help="A training row's id.")] = None,
    caption_contains: Annotated[str | None, typer.Option(help="Text a training caption contains.")] = None,
) -> None:
    """Which training content went into MODEL; with a key, whether (and in which rows) it did. Exit status 1 when
    the key matches no training row."""
    from diffaudit.model.lineage import read_lineage, rows_with

    table = read_lineage(model, data)
    console.print(f"{model}: {len(table)} training rows, {table['sha256'].nunique()} distinct pictures, "
                  f"{table['family'].nunique()} subjects")
    if sha256 is None and row_id is None and caption_contains is None:
        return
    found = rows_with(table, sha256, row_id, caption_contains)
    console.print(f"{len(found)} training row(s) match" + ("" if found.empty else ":"))
    for row in found.head(20).itertuples():
        console.print(f"  {row.id}  {row.sha256[:16]}  family {row.family}  {row.text!r}")
    if found.empty:
        raise typer.Exit(1)


@app.command()
def forget(
    model: Path, data: Path, out: Path,
    method: Annotated[str, typer.Option(help="retrain (from scratch), sisa (a model trained with --sharded) or "
                                             "finetune (steer the captions away).")],
    images: Annotated[list[str] | None, typer.Option(help="A training row id or a picture's content hash; every "
                                                          "row with that picture is forgotten. Repeatable.")] = None,
    family: Annotated[list[str] | None, typer.Option(help="A subject (near-duplicate family). Repeatable.")] = None,
    caption_contains: Annotated[str | None, typer.Option(help="A caption concept: every row whose caption contains "
                                                              "this text (case-sensitive).")] = None,
    preset: PresetOpt = "quick", config: ConfigOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None,
) -> None:
    """Write a new model in OUT that has forgotten the requested training rows (MODEL is never touched); verify it
    with `diffaudit verify-forget`."""
    from diffaudit.data.imagefolder import load_imagefolder
    from diffaudit.unlearning.base import ForgetJob
    from diffaudit.unlearning.protocol import run_forget
    from diffaudit.unlearning.request import ForgetRequest, as_held

    cfg = _configured(forget, locals())
    request = ForgetRequest(tuple(images or ()), tuple(family or ()), caption_contains)
    # Rows deleted from MODEL before stay deleted.
    dataset, trained, earlier = as_held(model, load_imagefolder(data, cfg.data.resolution))
    ids = frozenset(trained.loc[request.rows(trained), "id"]) - earlier
    if not ids:
        raise ConfigError("every row the request names was already forgotten by MODEL")
    missing = ids - set(dataset.split("member").table["id"])
    if missing:
        raise ConfigError(f"{len(missing)} requested training row(s) are not member rows of {data} (e.g. "
                          f"{sorted(missing)[0]!r}): pass the dataset MODEL was trained on")
    with owned(out, "forget", {"model": model, "dataset": data}), _progress() as progress:
        summary = run_forget(method, ForgetJob(model, dataset, ids, cfg, out, progress), request)
    console.print(f"forgot {summary['rows']} training rows ({summary['pictures']} pictures, "
                  f"{len(summary['families'])} subjects) with {method} in {summary['seconds']:.0f} s: "
                  f"{summary['unlearned']['path']} (hash {summary['unlearned']['model_hash']})")


@app.command("verify-forget")
def verify_forget(
    original: Path,
    unlearned: Annotated[Path, typer.Argument(help="The OUT folder of `diffaudit forget`.")],
    reference: Annotated[Path, typer.Argument(help="The OUT folder of `diffaudit forget --method retrain` for the "
                                                   "same request.")],
    data: Path, out: Path, preset: PresetOpt = "quick", config: ConfigOpt = None,
    delta: Annotated[float | None, setting(
        "calibration.delta", "Copy threshold cap (tiled distance); calibrated on the data's never-trained captions "
        "unless calibration.calibrate is off.")] = None,
    samples: Annotated[int | None, setting("extraction.samples_per_prompt", "Generations per forgotten caption.")
                       ] = None,
    guidance: Annotated[float | None, setting("sample.guidance", "Guidance scale of the generations.")] = None,
    device: DeviceOpt = None, dtype: DtypeOpt = None, ray: RayOpt = None, ray_cpus: RayCpusOpt = None,
    ray_gpus: RayGpusOpt = None, ray_workers: RayWorkersOpt = None,
) -> None:
    """Extraction, membership and utility of ORIGINAL, UNLEARNED and REFERENCE, judged by the config's forget
    thresholds; writes OUT/audit_record.json. Exit status 1 when the verification fails."""
    from diffaudit.data.imagefolder import load_imagefolder
    from diffaudit.model.pipeline import AuditPipeline
    from diffaudit.study.deletion_record import DeletionRecord
    from diffaudit.unlearning.protocol import verify_forget as run_verify
    from diffaudit.unlearning.record import FORGET
    from diffaudit.unlearning.request import as_held

    cfg = _configured(verify_forget, locals())
    summaries = []
    for folder in (unlearned, reference):
        if not (folder / FORGET).is_file():
            raise ConfigError(f"{folder} has no {FORGET}: pass the OUT folder of `diffaudit forget`")
        summaries.append(json.loads((folder / FORGET).read_text()))
    pipes = [AuditPipeline.from_pretrained(p, cfg.runtime)
             for p in (original, unlearned / "model", reference / "model")]
    reads = {"original model": original, "unlearned model": unlearned, "reference model": reference, "dataset": data}
    with owned(out, "verification", reads), _progress() as progress:
        held = as_held(original, load_imagefolder(data, cfg.data.resolution))[0]  # as `forget` read it
        delta = _copy_threshold(pipes[0], held, cfg, out, progress)  # against the original, as a study would
        record = run_verify(summaries[0], summaries[1], *pipes, held, cfg, delta, cfg.sample.guidance, out, out,
                            progress)
    verdict = DeletionRecord.model_validate(record).verification
    show = Table(title=f"verify-forget: {summaries[0]['method']} against the retrain reference")
    for col in ("check", "value", "limit", "passed"):
        show.add_column(col)
    for name, check in verdict.checks.items():
        value = f"p = {check.p:.3g} ({check.direction})" if check.p is not None else f"{check.value:.4g}"
        limit = f"p >= {check.alpha}" if check.p is not None else f"<= {check.limit:.4g}"
        show.add_row(name, value, limit, "yes" if check.passed else "[red]no[/]")
    console.print(show)
    console.print(f"{verdict.verdict}; fallback: {verdict.fallback}; record: {out / 'audit_record.json'}")
    if not verdict.passed:
        raise typer.Exit(1)


@app.command()
def study(
    out: Annotated[Path, typer.Option(help="Run folder (resumes if it exists).")] = Path("runs/study"),
    preset: PresetOpt = "quick", config: ConfigOpt = None, reference: ReferenceOpt = Path("models/quick"),
    device: DeviceOpt = None, dtype: DtypeOpt = None, ray: RayOpt = None, ray_cpus: RayCpusOpt = None,
    ray_gpus: RayGpusOpt = None, ray_workers: RayWorkersOpt = None,
) -> None:
    """The whole investigation: data, base model, audits, each mitigation arm, audits, comparison table."""
    _run_study(_configured(study, locals()), out, reference)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run folder (resumes if it exists).")] = Path("runs/demo"),
    preset: DemoPresetOpt = "core", config: ConfigOpt = None, reference: ReferenceOpt = Path("models/quick"),
    device: DeviceOpt = None, dtype: DtypeOpt = None, ray: RayOpt = None, ray_cpus: RayCpusOpt = None,
    ray_gpus: RayGpusOpt = None, ray_workers: RayWorkersOpt = None,
) -> None:
    """The mission's core end to end on the embedded OpenMoji default (`--preset quick`: the whole study): data,
    model, extraction and membership audits, the fixes, then the memo, technical report and viewer in OUT/report.
    The last lines printed are the bottom line and where the memo is."""
    _run_study(_configured(demo, locals()), out, reference)
    memo = _reports(out, out / "report")
    console.print(f"\n[bold]Bottom line.[/bold] {escape(memo.bottom_line)}")
    console.print(f"[bold]Fixes.[/bold] {escape(memo.best_fix)}")
    console.print(f"[bold]Read next:[/bold] the memo {memo.pdf}, the technical report "
                  f"{out / 'report' / 'technical_report.html'}, the viewer {out / 'report' / 'viewer.html'}",
                  soft_wrap=True)  # paths unbroken, to copy


RunArg = Annotated[Path, typer.Argument(help="A finished `diffaudit study` run folder.")]


@report_app.command("memo")
def report_memo(run: RunArg, out: Annotated[Path | None, typer.Option(help="Folder (default RUN/memo).")] = None
                ) -> None:
    """The 4-page policy memo (PDF + editable Typst source), written from the run's numbers."""
    _memo(run, out)


def _memo(run: Path, out: Path | None) -> "Memo":
    from diffaudit.report.memo import write_memo

    memo = write_memo(run, out)
    console.print(f"memo: {memo.pdf} ({memo.pages} pages, Flesch-Kincaid grade {memo.grade:.1f}); "
                  f"source: {memo.source}")
    return memo


@app.command()
def scorecard(
    paths: Annotated[list[Path], typer.Argument(help="RUN (a finished study); with --verify: CARD MODEL DATA.")],
    verify: Annotated[bool, typer.Option("--verify", help="Check a card: recompute the model's and the data's "
                                         "SHA-256, re-run captions drawn here, compare the verdicts.")] = False,
    model: Annotated[Path | None, typer.Option(help="The base model the run audited (the study's --reference, or "
                                               "the model it trained); needed to write a card.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for scorecard.json and scorecard.md (default RUN).")] = None,
    captions: Annotated[int, typer.Option(min=1, help="Captions the verifier draws and re-runs, every seed each.")] = 8,
    device: DeviceOpt = None, dtype: DtypeOpt = None,
) -> None:
    """Write a run's memorization scorecard (JSON, schema-checked, and a model-card section), or verify one."""
    from diffaudit.io import write_json, write_text
    from diffaudit.study import scorecard as card_module

    cfg = _configured(scorecard, locals())
    if verify:
        if len(paths) != 3:
            raise ConfigError("scorecard --verify takes CARD MODEL DATA")
        card_path, model_dir, data_dir = paths
        card = card_module.load_card(card_path)
        with _progress() as progress:
            result = card_module.verify(card, model_dir, data_dir, captions, cfg.runtime, progress)
        table = Table("caption", "card", "re-run", "agrees")
        for v in result.captions:
            table.add_row(escape(v.prompt), f"{v.card_copied} ({v.card_distance:.3f})",
                          f"{v.rerun_copied} ({v.rerun_distance:.3f})", "yes" if v.agrees else "[red]no[/]")
        console.print(table)
        for problem in result.inconsistencies:
            console.print(f"[red]the card contradicts itself:[/] {escape(problem)}")
        files = "match" if result.model_files_match else "DIFFER: " + ", ".join(result.mismatched_files)
        console.print(f"model files: {files}; data: {'matches' if result.data_matches else 'DIFFERS'}; verdicts "
                      f"differing beyond the tolerance: {result.differing} of {len(result.captions)} "
                      f"(allowed {result.allowed})")
        console.print("[green]card verified[/]" if result.passed else "[red]card NOT verified[/]")
        raise typer.Exit(0 if result.passed else 1)
    if len(paths) != 1:
        raise ConfigError("scorecard takes one RUN folder (or --verify CARD MODEL DATA)")
    run = paths[0]
    if model is None:
        raise ConfigError("scorecard RUN needs --model: the base model the run audited (its --reference, e.g. "
                          "models/quick, or the model the study trained), so the card can carry its SHA-256")
    card = card_module.build_card(run, model)
    target = out or run
    write_json(target / "scorecard.json", card.model_dump(mode="json"))
    write_text(target / "scorecard.md", card_module.card_markdown(card))
    console.print(f"scorecard: {target / 'scorecard.json'} (schema {card_module.SCHEMA.name}) and "
                  f"{target / 'scorecard.md'}")


@report_app.command("technical")
def report_technical(run: RunArg, out: Annotated[Path | None, typer.Option(help="HTML file.")] = None) -> None:
    """The full technical report: every table, ROC curve, config, seed and assumption."""
    from diffaudit.report.technical import write_technical

    console.print(f"technical report: {write_technical(run, out)}")


@report_app.command("viewer")
def report_viewer(run: RunArg, out: Annotated[Path | None, typer.Option(help="HTML file.")] = None) -> None:
    """A static, sortable and filterable page of every extracted pair."""
    from diffaudit.report.viewer import write_viewer

    console.print(f"viewer: {write_viewer(run, out)}")


@report_app.command("verdicts")
def report_verdicts(run: RunArg, out: Annotated[Path | None, typer.Option(help="Markdown file.")] = None) -> None:
    """The fixes' verdicts per arm, sampler and seed, with the nulls per setting, as a Markdown page."""
    from diffaudit.report.verdicts import write_verdicts

    console.print(f"verdicts: {write_verdicts(run, out)}")


@report_app.command("all")
def report_all(run: RunArg, out: Annotated[Path | None, typer.Option(help="Folder (default RUN).")] = None
               ) -> None:
    """Memo, technical report and viewer into one folder (docs/example is made this way)."""
    _reports(run, out or run)


def _reports(run: Path, out: Path) -> "Memo":
    memo = _memo(run, out / "memo")
    report_technical(run, out / "technical_report.html")
    report_viewer(run, out / "viewer.html")
    report_verdicts(run, out / "verdicts.md")
    return memo


def main() -> None:
    try:
        app()
    except DiffauditError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)  # paths may hold "[...]"
        raise SystemExit(2) from exc
