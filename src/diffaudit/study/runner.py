"""`diffaudit study`: data -> base model -> audits -> every mitigation arm -> audits -> comparison.

Each finished step leaves `steps/<name>.json` in the run folder; a crashed study resumes from there
and recomputes nothing that finished. Thresholds come from the preset and are written to the
assumptions register before any arm runs; no arm may change them.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from diffaudit import backend, faults
from diffaudit.attacks.adaptive.registry import CONTROLLED, PROBES
from diffaudit.attacks.extraction import ExtractionConfig
from diffaudit.attacks.metrics import strongest_attack
from diffaudit.backend import mapped
from diffaudit.config import (
    PRESETS,
    Preset,
    SampleConfig,
    SamplerSetting,
    moved_keys,
    validated,
)
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.io import jsonable, write_json
from diffaudit.layout import RunLayout
from diffaudit.mitigations.base import Context
from diffaudit.mitigations.registry import MITIGATIONS
from diffaudit.model.arm import Arm
from diffaudit.model.conditioning import Conditioning, Text
from diffaudit.model.device import resolve
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.prepare import library, prepare_data, prepare_model, trained_folder, trained_in_library
from diffaudit.model.train import train
from diffaudit.ownership import owned, remove_stale_temps
from diffaudit.progress import Progress, make_progress
from diffaudit.quality import UtilityProbe
from diffaudit.study.adaptive_audit import adaptive_targets, run_probe, search_negative_control, static_outcome
from diffaudit.study.arms import BASE, DETECTION, StudyArm, study_arms
from diffaudit.study.assumptions import register
from diffaudit.study.audit_records import DetectionRecord, ExtractionRecord, MembershipRecord, UtilityRecord, row_of
from diffaudit.study.calibration import calibrate_copy_test, setting_null
from diffaudit.study.control_records import AdaptiveControl, MiaControls, ProbeResult
from diffaudit.study.cost import measured
from diffaudit.study.deletion_record import DeletionRecord
from diffaudit.study.extraction_audit import most_duplicated_prompts, run_extraction, run_tiered
from diffaudit.study.findings import findings
from diffaudit.study.forget_audit import forget_arm
from diffaudit.study.mia_audit import run_mia
from diffaudit.study.mia_controls import control_preset, negative_control, never_trained_halves, positive_control
from diffaudit.study.records import attack_settings, checked_findings
from diffaudit.study.results_record import RESULTS_SCHEMA, checked_part, read_results, tracked
from diffaudit.study.run_clock import RunClock, expected_costs
from diffaudit.tracking import log_to_mlflow, write_run_record


def _step(run: Path, name: str, fn: Callable[[], dict], clock: RunClock | None = None,
          record: type[BaseModel] | None = None) -> dict:
    """Run `fn` once; its JSON result (its existence marks the step finished) is read back by every later, resumed,
    run. `clock` counts it towards the whole run's progress. A result that is not `record`'s shape is refused before
    it is stored, naming the step, so no later step or a resumed run builds on it."""
    layout = RunLayout(run)
    path = layout.step(name)
    if path.exists():
        if clock is not None:
            clock.read_back(name)
        return json.loads(path.read_text())
    with measured() as cost:
        result = jsonable(fn())  # as a resumed run will read it back: NaN is null either way
    if record is not None:
        checked_part(record, result, f"step {name}")
    write_json(layout.cost(name), cost)
    write_json(path, result)
    faults.point("study-step")
    if clock is not None:
        clock.finish(name, cost["seconds"])
    return result


def check_names(preset: Preset) -> None:
    """Every attack, detector, dedup method, mitigation and probe named in the config exists: checked before any work
    starts."""
    from diffaudit.attacks.detect import DETECTORS
    from diffaudit.attacks.mia import ATTACKS
    from diffaudit.mitigations.dedup import METHODS

    if preset.membership.control_preset is not None:
        control_preset(preset.membership.control_preset)
    if preset.forget.attack not in ATTACKS:
        raise ConfigError(f"forget.attack: unknown attack {preset.forget.attack!r}; choose from {', '.join(ATTACKS)}")
    for names, registry in ((preset.membership.attacks, ATTACKS), ([preset.triage.detector], DETECTORS),
                            (preset.dedup.methods, METHODS), (preset.study.mitigations, MITIGATIONS),
                            (preset.adaptive.probes, PROBES)):
        registry.check(names)


def headline(preset: Preset) -> Preset:
    """The preset as the study samples: `sample` set to the headline sampler (study.samplers[0])."""
    first = preset.study.samplers[0]
    return preset.model_copy(update={"sample": validated(preset.sample, sampler=first.name, steps=first.steps)})


def setting_tag(sampling: SampleConfig, guidance: float) -> str:
    """How results name a (sampler, guidance, delayed start) setting, e.g. "ddim-unclamped-25 g3"."""
    early = f" early {sampling.early_guidance:g}" if sampling.early_guidance else ""  # 0 (unconditional) unsaid
    start = f" from {sampling.guidance_start:g}{early}" if sampling.guidance_start else ""
    return f"{sampling.sampler}-{sampling.steps} g{guidance:g}{start}"


class Study:
    def __init__(self, preset: Preset, run: Path, reference: Path | None, progress: Progress):
        preset = headline(preset)
        self.preset, self.run, self.reference, self.progress = preset, Path(run), reference, progress
        self.layout = RunLayout(self.run)
        self.calibration: dict | None = None
        self.data = prepare_data(preset, self.layout.data, progress)
        self.prompts = most_duplicated_prompts(self.data, preset.extraction.prompts_top, seed=preset.data.seed)
        self._utility: UtilityProbe | None = None
        self._arm: tuple[tuple[str, int], Arm] | None = None
        self.study_arms = study_arms(preset)  # the preset's, listed once
        self.library = library(reference)  # committed arm models beside the reference
        self.clock: RunClock | None = None  # the whole run's progress, when the study loop runs here
        self._named: set[int] = set()  # seeds whose base model the console has named

    def step(self, name: str, fn: Callable[[], dict], record: type[BaseModel] | None = None) -> dict:
        """One resumable step of this run (see `_step`), counted by the run's clock, checked against `record`."""
        return _step(self.run, name, fn, self.clock, record)

    def planned_steps(self) -> list[str]:
        """The steps every run of this preset has, in order; samplers, nulls and controls join as they appear."""
        arms = [RunLayout.arm_step(seed, name) for seed in self.preset.study.seeds for name, _ in self.arms(seed)]
        return ["calibration", "mia-controls", *arms]

    @property
    def probe_cfg(self) -> ExtractionConfig:
        """The probe at the calibrated delta: no arm may be scored before the calibration step has run."""
        if self.calibration is None:
            raise RuntimeError("the copy test is not calibrated yet")
        return ExtractionConfig.at(self.calibration["delta"], self.preset.extraction)

    def calibrate(self, base: AuditPipeline) -> dict:
        """Choose delta against the model null of the first seed's base model, once for the whole study."""
        seed = self.preset.study.seeds[0]
        self.calibration = self.step("calibration", lambda: calibrate_copy_test(
            base, self.data, self.preset, self.layout.null(seed) / "samples", self.progress))
        return self.calibration

    def mia_controls(self, base: AuditPipeline) -> dict:
        """The attacks' positive control (its own small model and exposure curve) and negative control (never-trained
        halves on the base model), once per study, before any arm's membership numbers are read."""
        s = self.preset.membership

        def run() -> dict:
            folder = self.run / "mia-controls"
            out = {"negative": negative_control(base, never_trained_halves(self.data), list(s.attacks),
                                                s.per_side, s.tune_per_side, folder / "negative", self.progress)}
            if s.control_preset:
                control = control_preset(s.control_preset, self.preset)
                out["positive"] = positive_control(control, list(s.attacks), folder / "positive", self.progress,
                                                   points=s.control_points)
            return out

        return self.step("mia-controls", run, MiaControls)

    @property
    def utility(self) -> UtilityProbe:
        if self._utility is None:
            self._utility = UtilityProbe.build(self.data, self.preset.sample.steps, self.preset.sample.sampler)
        return self._utility

    def sampling(self, setting: SamplerSetting | None = None, arm: Arm | None = None) -> SampleConfig:
        """What an arm samples with: the headline sampler unless `setting` names another, plus the arm's own
        sampling fields (e.g. a delayed guidance start)."""
        fields = {"sampler": setting.name, "steps": setting.steps} if setting else {}
        return validated(self.preset.sample, **fields, **(arm.sampling if arm else {}))

    def audit(self, pipe: AuditPipeline, folder: Path, guidance: float, mia: bool = True,
              members: ImageDataset | None = None, conditioning: Conditioning | None = None,
              sampling: SampleConfig | None = None, utility: bool = True) -> dict:
        """Extraction (against the original training set and prompts), membership inference (on `members`, the
        arm's own training set when it differs from the study's), utility; samples drawn through `conditioning` (an
        inference-time setting) when one is given, with `sampling` (the headline sampler by default)."""
        s, sampling = self.preset.membership, sampling or self.preset.sample
        ext = run_extraction(pipe, self.data, folder / "extraction", self.prompts,
                             self.preset.extraction.samples_per_prompt, guidance,
                             sampling, self.probe_cfg, self.progress, conditioning=conditioning)
        records = [ExtractionRecord.of(ext, self.probe_cfg.delta, guidance, pipe.model_hash(), sampling,
                                       setting_tag(sampling, guidance))]
        if mia:
            records.append(MembershipRecord.of(run_mia(pipe, members or self.data, folder / "mia", list(s.attacks),
                                                       s.per_side, progress=self.progress,
                                                       tune_per_side=s.tune_per_side)))
        if utility:
            records.append(UtilityRecord(**self.utility.measure(pipe, guidance, conditioning, sampling)))
        return row_of(*records)

    def base(self, seed: int) -> AuditPipeline:
        preset = self.preset.model_copy(update={"train": self.preset.train.model_copy(update={"seed": seed})})
        reference = self.reference if seed == self.preset.train.seed else None
        said, self._named = seed in self._named, self._named | {seed}  # each seed's base named once per run
        return prepare_model(preset, self.data, self.layout.arm(seed, BASE), reference, self.progress, say=not said)

    def retrain(self, data: ImageDataset, folder: Path, seed: int) -> tuple[AuditPipeline, float]:
        """A model trained from scratch by the base recipe on `data`: a committed one when it matches (its seconds
        are those it took to train), else trained in `folder` (resuming)."""
        cfg = self.preset.train.model_copy(update={"seed": seed})
        model = folder / "model"  # this run's own, once trained, comes first (a resumed run keeps its model)
        committed = None if (model / "training_manifest.json").exists() else trained_in_library(
            self.library, self.preset, cfg, data)
        if committed is not None:
            model = committed
            self.progress.console.print(f"model: {committed} (committed; dataset {data.version})")
        elif not (model / "training_manifest.json").exists():
            runtime = self.preset.runtime
            train(build_pipeline(self.preset.model, self.preset.data.resolution, seed=seed, runtime=runtime), data,
                  cfg, folder, self.progress)
        return AuditPipeline.from_pretrained(model, self.preset.runtime), json.loads(
            (model / "training_manifest.json").read_text())["seconds"]

    def second_seed(self, seed: int) -> int:
        """The seed of the model on which an arm's setting is chosen: the study's next seed, never `seed` itself."""
        others = [s for s in self.preset.study.seeds if s != seed]
        return others[0] if others else seed + 1

    def copies(self, pipe: AuditPipeline, guidance: float, fields: dict, folder: Path) -> dict:
        """The study's extraction probe on any model and setting (for choosing a setting on a second-seed model)."""
        return run_extraction(pipe, self.data, folder, self.prompts, self.preset.extraction.samples_per_prompt,
                              guidance, validated(self.preset.sample, **fields), self.probe_cfg, self.progress)

    def context(self, folder: Path, seed: int) -> Context:
        other = self.second_seed(seed)
        return Context(self.preset, self.data, seed, folder, base=lambda: self.base(seed),
                       retrain=lambda data, out: self.retrain(data, out, seed), progress=self.progress,
                       second_seed=other, second_base=lambda: self.base(other), copies=self.copies,
                       library=self.library)

    def first_seed(self, seed: int) -> bool:
        """The seed at which every arm, sampler, probe and control runs; other seeds replicate `seed_arms`."""
        return seed == self.preset.study.seeds[0]

    def arms_at(self, seed: int) -> list[StudyArm]:
        """Every arm of the study at `seed`, in order (at a replicate seed, those of `study.seed_arms`)."""
        names = self.preset.study.seed_arms
        return [a for a in self.study_arms.values() if self.first_seed(seed) or names is None or a.name in names]

    def arms(self, seed: int) -> list[tuple[str, Callable[[], dict]]]:
        """Each arm of `seed` and its audit: every arm that is a model audited alike, the tiered audit by its own."""
        return [(a.name, (lambda a=a: self.audited(a, seed)) if a.is_model else (lambda: self.tiered(seed)))
                for a in self.arms_at(seed)]

    def tiered(self, seed: int) -> dict:
        """The tiered audit of the base: a one-step detector ranks the captions, the full probe confirms the top
        share (reusing the base's own samples)."""
        s = self.preset.triage
        return {"kind": DETECTION, **row_of(DetectionRecord(**run_tiered(
            self.base(seed), self.data, self.layout.tiered(seed), self.prompts,
            self.preset.extraction.samples_per_prompt, self.preset.sample.guidance, self.preset.sample, self.probe_cfg,
            s.detector, s.confirm_fraction, self.layout.extraction(seed, BASE), self.progress)))}

    def arm(self, name: str, seed: int) -> Arm:
        """The model an arm audits (a finished mitigation is reloaded from its folder, not redone), kept for the
        arm's next audit (another sampler, a probe)."""
        if self._arm is not None and self._arm[0] == (name, seed):
            return self._arm[1]
        spec = self.study_arms[name]
        if spec.mitigation is None:
            arm = Arm(self.base(seed), self.preset.sample.guidance)
        else:
            arm = spec.mitigation.apply(spec.variant, self.context(self.layout.arm(seed, name), seed))
        self._arm = ((name, seed), arm)
        return arm

    def audited(self, spec: StudyArm, seed: int) -> dict:
        """One arm (the base, or a mitigation variant applied to a fresh base) and its audits, alike for every arm (at
        a replicate seed: extraction only)."""
        arm, full = self.arm(spec.name, seed), self.first_seed(seed)
        return {"kind": spec.kind, **arm.record,
                **self.audit(arm.pipe, self.layout.arm(seed, spec.name), arm.guidance, mia=arm.mia and full,
                             members=arm.members, conditioning=arm.conditioning(Text()) if arm.wrap else None,
                             sampling=self.sampling(arm=arm), utility=full)}

    def settings_of(self, arm: StudyArm) -> list[SamplerSetting]:
        """The samplers an arm is measured under beyond the headline: the other default samplers, and for the base and
        the guidance arms the reference ones (how numbers moved)."""
        s = self.preset.study
        extra = s.reference_samplers if arm.on_reference_samplers else ()
        return [x for x in (*s.samplers[1:], *extra) if x != s.samplers[0]]

    def sampler_audit(self, name: str, seed: int, setting: SamplerSetting) -> dict:
        """One arm's extraction (probe and owner's check) and quality under another sampler. Membership scores do
        not sample, so they are not repeated."""
        arm = self.arm(name, seed)
        return self.audit(arm.pipe, self.layout.sampler(seed, name, setting.key), arm.guidance,
                          mia=False, conditioning=arm.conditioning(Text()) if arm.wrap else None,
                          sampling=self.sampling(setting, arm))

    def null(self, sampling: SampleConfig, guidance: float) -> dict:
        """The model null of one (sampler, guidance) setting at the calibrated delta, on the first seed's base."""
        seed = self.preset.study.seeds[0]
        folder = self.layout.null(seed) / f"samples-{sampling.sampler}-{sampling.steps}"
        if sampling.guidance_start:
            folder = folder.with_name(f"{folder.name}-from-{sampling.guidance_start:g}")
        return setting_null(self.base(seed), self.data, self.preset, sampling, guidance, self.probe_cfg.delta,
                            folder, self.progress)

    @property
    def targets(self) -> pd.DataFrame:
        return adaptive_targets(self.prompts, self.preset.adaptive.min_dup)

    def probe(self, probe: str, name: str, seed: int) -> dict:
        """One adaptive probe against one arm, on the heavily duplicated attacked captions (the arm's model is kept
        for its next probe)."""
        at = self.layout
        shared = [at.extraction(seed, BASE) / "samples", at.extraction(seed, name) / "samples"]
        return run_probe(probe, self.arm(name, seed), self.data, at.arm(seed, name), self.targets, self.preset,
                         self.probe_cfg, shared, self.progress)

    def adaptive(self, name: str, seed: int) -> dict:
        """Every configured probe against one arm, each its own resumable step."""
        probes = {p: self.step(RunLayout.probe_step(seed, name, p), lambda p=p: self.probe(p, name, seed),
                               ProbeResult) for p in self.preset.adaptive.probes}
        return {"targets": len(self.targets), "min_dup": self.preset.adaptive.min_dup,
                "static": static_outcome(self.layout.arm(seed, name), self.targets), "probes": probes}

    def search_control(self, base: AuditPipeline) -> dict:
        """The embedding search's negative control, once, on the first seed's base model, sharing the calibration's
        plain-text samples of the same never-trained captions."""
        seed = self.preset.study.seeds[0]
        return search_negative_control(base, self.data, self.run / "adaptive-control", self.preset,
                                       self.probe_cfg.delta, self.layout.null(seed) / "samples",
                                       self.progress)

    def forget(self, seed: int) -> dict:
        """The deletion request of the study (issue 17), each model its own step."""
        preset = self.preset.model_copy(update={"train": self.preset.train.model_copy(update={"seed": seed})})
        base = self.base(seed)
        folder = trained_folder(preset, self.data, self.layout.arm(seed, BASE),
                                self.reference if seed == self.preset.train.seed else None)
        def step(name: str, fn: Callable[[], dict]) -> dict:  # every step but the reference's summary is a record
            return self.step(RunLayout.arm_step(seed, f"forget-{name}"), fn,
                             None if name == "reference" else DeletionRecord)

        return forget_arm(self.preset, self.data, base, folder, self.run, seed,
                          self.probe_cfg.delta, step, self.progress)

    def fix_controls(self, seed: int) -> dict[str, dict]:
        """Each configured mitigation's positive control of its own audit (`Mitigation.control`), each its own step,
        kept out of the comparison; by mitigation kind. Only DP has one today, and results.json and findings read it
        as `dp_controls`: a second mitigation with a control needs its own reader there."""
        out = {}
        for kind in self.preset.study.mitigations:
            mitigation = MITIGATIONS[kind]
            name = mitigation.control_name(self.preset)
            if name is not None:
                out[kind] = self.step(RunLayout.arm_step(seed, name), lambda m=mitigation, n=name: m.control(
                    self.context(self.layout.arm(seed, n), seed)))
        return out


def run_study(preset: Preset, run: Path, reference: Path | None, progress: Progress) -> pd.DataFrame:
    """Run (or resume) every arm for every seed in `run` (a study folder of ours); write and return the comparison
    table."""
    check_names(preset)
    with owned(Path(run), "study", reads={"reference model": reference}):
        return _run_study(preset, Path(run), reference, progress)


def _run_study(preset: Preset, run: Path, reference: Path | None, progress: Progress) -> pd.DataFrame:
    names = list(study_arms(preset))
    unknown = sorted(set(preset.study.seed_arms or ()) - set(names))
    if unknown:
        raise ConfigError(f"study.seed_arms: unknown arm(s) {unknown}; this study's arms are {names}")
    resolve(preset.runtime)  # a missing GPU is named before any data is prepared
    _check_same_config(Path(run), preset)
    remove_stale_temps(Path(run))
    with measured() as prepared:
        study = Study(preset, run, reference, progress)
        as_measured = preset.name in PRESETS and preset.model_dump(exclude={"runtime"}) == PRESETS[
            preset.name].model_dump(exclude={"runtime"})  # a --config may drop steps the table measured
        study.clock = RunClock(progress, study.planned_steps(), expected_costs(preset.name),
                               lambda name: study.layout.step(name).exists(), measured_plan=as_measured)
        base = study.base(preset.study.seeds[0])
    if not study.layout.record.exists():
        write_json(study.layout.cost("prepare"), prepared)  # data and base model, first run only
    write_run_record(study.run, preset.model_dump(), {"dataset": study.data.version, "base_model": base.model_hash()})
    calibration = study.calibrate(base)
    controls = study.mia_controls(base)
    # Rewritten on every run: a resumed study whose arms or probes were extended states its new assumptions too.
    write_json(study.layout.assumptions, register(preset, study.data, base, calibration))
    rows, sampler_rows, nulls, fix_controls = [], [], {}, {}
    probes = preset.adaptive.probes
    targets = len(adaptive_targets(study.prompts, preset.adaptive.min_dup))
    probes = probes if targets else ()  # nothing duplicated enough to attack harder: said in the assumptions
    search_control = (study.step("adaptive-control", lambda: study.search_control(base), AdaptiveControl)
                      if CONTROLLED in probes else None)
    for seed in preset.study.seeds:
        if backend.workers() > 1:
            _arms_on_workers(study, seed)
        full = study.first_seed(seed)
        for name, fn in study.arms(seed):
            result, arm = study.step(RunLayout.arm_step(seed, name), fn), study.study_arms[name]
            if full and arm.is_model:
                for setting in study.settings_of(arm):
                    other = study.step(RunLayout.sampler_step(seed, name, setting.key),
                                       lambda n=name, x=setting, s=seed: study.sampler_audit(n, s, x))
                    sampler_rows.append({"arm": name, "seed": seed, "kind": result["kind"], **arm.record(), **other})
                if probes:
                    result = {**result, "adaptive": study.adaptive(name, seed)}
            rows.append({"arm": name, "seed": seed, **arm.record(), **result})
            _log_arm(study.run, preset, rows[-1])
            if full:  # each arm's settings get their nulls at once, so a partial run can already be judged
                nulls = setting_nulls(study, rows + sampler_rows, calibration)
        if full:
            for kind, control in study.fix_controls(seed).items():
                fix_controls.setdefault(kind, {})[str(seed)] = control
    forget = study.forget(preset.study.seeds[0]) if preset.forget.in_study else None
    _record_choices(study.layout.assumptions, rows, controls)
    table = comparison_table(rows)
    table.to_parquet(study.layout.comparison, index=False)
    dp_controls = fix_controls.get("dp", {})  # the DP audit's power check, as findings.dp_power reads it
    results = jsonable({"schema_version": RESULTS_SCHEMA, "rows": rows, "preset": preset.name,
                        "dataset_version": study.data.version, "sampler_rows": sampler_rows, "setting_nulls": nulls,
                        "calibration": calibration, "mia_controls": controls, "dp_controls": dp_controls,
                        "adaptive_control": search_control, "forget": forget})
    read_results(results, "the study's results")  # a part off its record's shape is refused before anything is written
    write_json(study.layout.results, results)
    decided = findings(study.run, rows, search_control, sampler_rows, nulls, [s.key for s in preset.study.samplers],
                       dp_controls)
    write_json(study.layout.findings, checked_findings(jsonable(decided), "the study's findings"))
    study.clock.close()
    return table


def setting_nulls(study: Study, rows: list[dict], calibration: dict) -> dict[str, dict]:
    """Each (sampler, guidance) setting an arm was measured at, with its own model null at the calibrated delta: the
    headline's is the calibration's; every other is measured on `calibration.setting_null_prompts` never-trained
    captions, each its own step. A setting whose upper bound exceeds `calibration.null_bound` is not valid for
    verdicts."""
    bound = study.preset.calibration.null_bound
    head = calibration["model_null"]
    head_tag = setting_tag(study.preset.sample, study.preset.sample.guidance)
    out = {head_tag: {**head, "valid": bool(head["ci_high"] <= bound), "source": "calibration"}}
    for row in rows:
        tag = row.get("setting")
        if tag is None or tag in out:
            continue
        sampling = validated(study.preset.sample, **row["sampling"])
        null = study.step(RunLayout.null_step(tag), lambda s=sampling, g=row["guidance"]: study.null(s, g))
        out[tag] = {**null, "valid": bool(null["ci_high"] <= bound), "source": "setting null"}
    return out


def _arms_on_workers(study: Study, seed: int) -> None:
    """On Ray, each unfinished arm of `seed` as its own task (the base first: the tiered arm reads its samples). A
    task writes its step's result into the run folder (the workers share it: one machine, or a shared file
    system); the study's loop then reads them as finished steps, in order, as after a resume."""
    study.base(seed)  # trained here, once, before any task loads it
    pending = [name for name, _ in study.arms(seed) if not study.layout.step(RunLayout.arm_step(seed, name)).exists()]
    spec = (study.preset, study.run.resolve(), study.reference.resolve() if study.reference else None)
    for wave in ([n for n in pending if n == BASE], [n for n in pending if n != BASE]):
        for name, _ in zip(wave, mapped(spec, _arm_step, [(seed, name) for name in wave]), strict=True):
            study.progress.console.print(f"seed {seed}: arm {name} finished on a Ray worker")


def _arm_step(spec: tuple[Preset, Path, Path | None], seed: int, name: str) -> None:
    """One arm, run where a Ray worker runs it, against the study's calibrated copy test."""
    preset, run, reference = spec
    study = Study(preset, run, reference, make_progress(disable=True))
    study.calibration = json.loads(study.layout.step("calibration").read_text())
    _step(run, RunLayout.arm_step(seed, name), dict(study.arms(seed))[name])


def _record_choices(path: Path, rows: list[dict], controls: dict) -> None:
    """Append to the assumptions register the settings each membership attack was scored with, per arm (they are
    chosen on each arm's tuning set, after the register was first written)."""
    def line(mia: dict) -> str:
        return "; ".join(f"{a}: " + ", ".join(f"{k}={v}" for k, v in attack_settings(r["choice"]).items())
                         for a, r in mia.items())

    chosen = [(f"{r['arm']}, seed {r['seed']}", line(r["mia"])) for r in rows if r.get("mia")]
    if "negative" in controls:
        chosen.append(("negative control", line(controls["negative"]["attacks"])))
    if "positive" in controls:
        chosen.append(("positive control", line(controls["positive"]["final"]["attacks"])))
    kept = [a for a in json.loads(path.read_text()) if not a["item"].startswith("Settings chosen")]
    write_json(path, kept + [{"category": "membership", "item": f"Settings chosen ({where})", "statement": text,
                              "source": "labelled tuning set, family-disjoint from the scored samples"}
                             for where, text in chosen])


# Settings a run may change between resumes: float32 results agree across devices within 2/255 (tests/test_device.py
# and the GPU evidence in the README), so a study started on one machine can finish on another.
RESUMABLE_ANYWHERE = {("runtime", "device"), ("runtime", "ray"), ("runtime", "ray_cpus"), ("runtime", "ray_gpus"),
                      ("runtime", "ray_workers")}  # where the work runs, not what it computes (`backend`)
# Lists of arms, probes or seeds a finished study may grow: the old entries keep their steps, new ones run after them.
EXTENDABLE = {("study", "mitigations"), ("adaptive", "probes"), ("study", "seeds"), ("study", "seed_arms")}


def _same(section: str, key: str, before: object, now: object) -> bool:
    if (section, key) in EXTENDABLE and isinstance(before, list) and isinstance(now, list):
        return now[:len(before)] == before
    return before == now


def _check_same_config(run: Path, preset: Preset) -> None:
    """Resuming under a different configuration would mix two studies in one table: refuse, naming what differs.
    A setting that diffaudit gained after the run started counts as unchanged while it keeps its preset default."""
    record = RunLayout(run).record
    if not record.exists():
        return
    before = json.loads(record.read_text())["config"]
    if moved := moved_keys(before):
        raise ConfigError(f"{run} was started by an older diffaudit whose settings have since moved "
                          f"({'; '.join(moved)}); it cannot be resumed: choose a new --out")
    now = json.loads(json.dumps(preset.model_dump()))
    default = json.loads(json.dumps(PRESETS[preset.name].model_dump())) if preset.name in PRESETS else now
    changed = [f"{section}.{key}" for section in now if isinstance(now[section], dict)
               for key in sorted(set(now[section]) | set(before.get(section, {})))
               if (section, key) not in RESUMABLE_ANYWHERE
               and not _same(section, key, before.get(section, {}).get(key, default[section].get(key)),
                             now[section].get(key))]
    if before.get("name") != now["name"]:
        raise ConfigError(f"{run} was started with preset {before.get('name')!r}, not {now['name']!r}: resume it "
                          f"with --preset {before.get('name')}, or choose a new --out")
    if changed:
        raise ConfigError(f"{run} was started with a different configuration ({', '.join(changed)} differ); resume "
                          "it with the same preset and config, or choose a new --out")


def comparison_table(rows: list[dict]) -> pd.DataFrame:
    """One row per (arm, seed): extraction before/after with its interval (prompts that copied their own image),
    the unique images and subjects copied, best MIA, utility, compute."""
    out = []
    for r in rows:
        if r.get("kind") == DETECTION:
            continue
        mia = r.get("mia") or {}
        best = strongest_attack(mia)
        out.append({
            "arm": r["arm"], "seed": r["seed"], "guidance": r["guidance"], "extraction_rate": r["extraction_rate"],
            "ci_low": r["extraction_ci"][0], "ci_high": r["extraction_ci"][1],
            "extracted": r["prompts_with_copy"], "prompts": r["attacked_prompts"], "images": r["extracted_images"],
            "families": r["extracted_families"], "family_hits": r["family_prompts"], "delta": r["delta"],
            "best_mia": best[0], "mia_auc": best[1].get("auc"), "mia_tpr_1pct": best[1].get("tpr_at_1pct_fpr"),
            # A replicate training seed measures extraction only (StudyConfig.seed_arms): no quality row to show.
            "heldout_loss": r.get("heldout_loss"), "frechet_distance": r.get("frechet_distance"),
            "train_seconds": r.get("train_seconds", 0.0),
            "audit_unet_evals": r["extraction_unet_evals"] + r.get("utility_unet_evaluations", 0),
        })
    return pd.DataFrame(out)


def _log_arm(run: Path, preset: Preset, row: dict) -> None:
    params, metrics = tracked(row)
    log_to_mlflow(run, f"diffaudit-{preset.name}", RunLayout.arm_step(row["seed"], row["arm"]), params, metrics,
                  [RunLayout(run).assumptions])


def reset_arm(run: Path, seed: int, arm: str) -> None:
    """Forget one finished arm so the next run recomputes it (e.g. after changing its code)."""
    layout = RunLayout(run)
    layout.step(RunLayout.arm_step(seed, arm)).unlink(missing_ok=True)
    layout.cost(RunLayout.arm_step(seed, arm)).unlink(missing_ok=True)
    for probe in layout.steps.glob(RunLayout.probe_step(seed, arm, "*")):  # judged against the static result just reset
        probe.unlink()
    shutil.rmtree(layout.arm(seed, arm), ignore_errors=True)
