"""The study's deletion request: forget the base model's most-extracted subjects with every configured method, and
verify each against the retrain reference (`diffaudit.unlearning`).

Every model is its own resumable step. `retrain` is the reference itself (the gold standard, checked for the
record's sake); a method that needs its own original (SISA: trained sharded, by the base recipe and budget) builds
it (`Unlearner.original`); the protocol's
controls are the original (nothing forgotten: must fail) and a second retrain with the next seed (must pass).
"""

from collections.abc import Callable
from pathlib import Path

from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.layout import RunLayout
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.progress import Progress
from diffaudit.unlearning.base import ForgetJob, Origin
from diffaudit.unlearning.protocol import run_forget, verify_forget
from diffaudit.unlearning.registry import UNLEARNERS
from diffaudit.unlearning.request import ForgetRequest, most_extracted_families
from diffaudit.unlearning.verify import Verifier

Step = Callable[[str, Callable[[], dict]], dict]
VOLATILE = ("created", "mlflow_run_id")  # in each audit record on disk; two runs of one study differ in them


def portable(record: dict, run: Path) -> dict:
    """A record as the study's results keep it: paths relative to the run folder, without the fields that name
    when and where it was logged, so a resumed study's results equal an uninterrupted one's."""
    def relative(value: object) -> object:
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, str) and value.startswith(str(run)):
            return str(Path(value).relative_to(run))
        return value

    return relative(record)


def forget_arm(preset: Preset, data: ImageDataset, base: AuditPipeline, base_folder: Path, run: Path,
               seed: int, delta: float, step: Step, progress: Progress | None) -> dict:
    cfg, g0 = preset.forget, preset.sample.guidance
    members = data.split("member").table
    families = most_extracted_families(RunLayout(run).extraction(seed, "base") / "pairs.parquet", members, cfg.min_rows)
    request = ForgetRequest(families=families)
    ids = frozenset(members.loc[request.rows(members), "id"])
    folder = RunLayout(run).forget(seed)

    def job(original: Path, out: str, job_seed: int | None = None) -> ForgetJob:
        return ForgetJob(original, data, ids, preset, folder / out, progress, job_seed)

    def load(summary: dict) -> AuditPipeline:
        path = Path(summary["unlearned"]["path"])
        return AuditPipeline.from_pretrained(path if path.exists() else run / path, preset.runtime)

    reference = step("reference", lambda: portable(run_forget("retrain", job(base_folder, "reference"), request), run))
    verifier: list[Verifier] = []  # built once, when the first verification runs

    def verify(summary: dict, original: AuditPipeline, out: str) -> dict:
        if not verifier:
            verifier.append(Verifier.build(base, data, ids, preset, delta, g0, folder / "verify", progress))
        return verify_forget(summary, reference, original, load(summary), load(reference), data, preset, delta, g0,
                             folder / out, run, progress, verifier[0])

    origin = Origin(base, base_folder, seed, preset, data, folder, progress)

    def method(name: str) -> dict:
        unlearner = UNLEARNERS[name]
        if unlearner.is_reference:
            return verify(reference, base, name)
        original = unlearner.original(origin)
        pipe = base if original == base_folder else AuditPipeline.from_pretrained(original, preset.runtime)
        record = verify(run_forget(name, job(original, name), request), pipe, name)
        return unlearner.annotate(record, original, verifier[0].measure, origin)

    records = {name: step(name, lambda name=name: portable(method(name), run)) for name in cfg.methods}
    out = {"request": request.to_json(), "rows": len(ids), "methods": records,
           "reference_seconds": reference["seconds"]}
    if cfg.control:
        out["control"] = step("control", lambda: portable(verify(
            run_forget("retrain", job(base_folder, "control", seed + 1), request), base, "control"), run))
    return out
