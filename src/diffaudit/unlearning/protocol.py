"""A deletion from request to audit record: forget with one method, then verify against the retrain reference.
`diffaudit forget`, `diffaudit verify-forget` and the study's forget arm all go through here."""

import json
from pathlib import Path

from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.io import write_json
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.ownership import owned
from diffaudit.progress import Progress
from diffaudit.unlearning.base import ForgetJob
from diffaudit.unlearning.record import FORGET, RECORD, audit_record, forget_summary
from diffaudit.unlearning.registry import UNLEARNERS
from diffaudit.unlearning.request import ForgetRequest
from diffaudit.unlearning.verify import Verifier


def run_forget(method: str, job: ForgetJob, request: ForgetRequest) -> dict:
    """Forget with `method` into `job.out` (a forget folder of ours; resumable) and write `forget.json` beside the
    new model."""
    UNLEARNERS.check([method])
    with owned(job.out, "forget", {"original model": job.original}):
        return _forget(method, job, request)


def _forget(method: str, job: ForgetJob, request: ForgetRequest) -> dict:
    path, started = job.out / FORGET, job.out / "request.json"
    # Written before any work, so a folder left by a crashed deletion is resumed only by the same deletion.
    this = {"method": method, "forgotten_ids": sorted(job.forget_ids), "original": str(job.original)}
    if started.exists():
        before = json.loads(started.read_text())
        if before["method"] != method or before["forgotten_ids"] != this["forgotten_ids"]:
            raise ConfigError(f"{job.out} already holds a {before['method']} deletion of other rows; choose another "
                              "output folder")
    else:
        write_json(started, this)
    if path.exists():
        return json.loads(path.read_text())
    unlearner = UNLEARNERS[method]
    forgotten = unlearner.forget(job)
    summary = forget_summary(job, unlearner, forgotten, request, job.load(job.original).model_hash(),
                             job.load(forgotten.model).model_hash())
    write_json(path, summary)
    return summary


def verify_forget(summary: dict, reference: dict, original: AuditPipeline, unlearned: AuditPipeline,
                  reference_pipe: AuditPipeline, data: ImageDataset, preset: Preset, delta: float, guidance: float,
                  out: Path, tracking: Path, progress: Progress | None = None,
                  verifier: Verifier | None = None) -> dict:
    """Measure original, unlearned and reference alike, judge, write `out/audit_record.json`."""
    same_rows = set(reference.get("forgotten_ids", ())) == set(summary["forgotten_ids"])
    if reference.get("method") != "retrain" or not same_rows or reference.get("data_before") != summary["data_before"]:
        raise ConfigError("the reference is not a retrain of the same dataset without the same rows; make it with "
                          "`diffaudit forget --method retrain` and the same request")
    if original.model_hash() != summary["original"]["model_hash"]:
        raise ConfigError(f"the original given has hash {original.model_hash()}, but the deletion was made from "
                          f"{summary['original']['model_hash']}: pass the model the request was made to")
    if data.version != summary["data_before"]:
        raise ConfigError(f"the dataset is version {data.version}, but the request was made against "
                          f"{summary['data_before']}")
    verifier = verifier or Verifier.build(original, data, frozenset(summary["forgotten_ids"]), preset, delta,
                                          guidance, out / "verify", progress)
    measures = {role: verifier.measure(pipe) for role, pipe in
                (("original", original), ("unlearned", unlearned), ("reference", reference_pipe))}
    ref = {k: reference[k] for k in ("method", "unlearned", "seconds") if k in reference}
    record = audit_record(summary, verifier, measures, ref, preset.forget, tracking,
                          f"forget-{summary['method']}-{summary['unlearned']['model_hash']}")
    write_json(out / RECORD, record)
    return record
