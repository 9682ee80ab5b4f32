"""The audit record of a deletion: what was asked, what was removed (by content hash), which models, how it was
verified, the numbers with their intervals, pass or fail, and where the run is tracked. One JSON a regulator reads,
written beside the unlearned model and shown as a page of the technical report."""

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from diffaudit.config import ForgetConfig
from diffaudit.tracking import log_to_mlflow
from diffaudit.unlearning.base import ForgetJob, Forgotten, Unlearner
from diffaudit.unlearning.request import ForgetRequest
from diffaudit.unlearning.verify import Verifier, judge

RECORD = "audit_record.json"
FORGET = "forget.json"


def forget_summary(job: ForgetJob, method: Unlearner, forgotten: Forgotten, request: ForgetRequest,
                   original_hash: str, model_hash: str) -> dict:
    """What `forget` did: written beside the new model (`forget.json`), read back by the verification."""
    members = job.data.split("member").table
    gone = members[members["id"].isin(job.forget_ids)]
    return {"request": request.to_json(), "method": method.name, "title": method.title,
            "rows": len(gone), "pictures": int(gone["sha256"].nunique()), "captions": int(gone["text"].nunique()),
            "families": sorted(gone["family"].unique()), "forgotten_ids": sorted(job.forget_ids),
            "forgotten_sha256": sorted(gone["sha256"].unique()),
            "data_before": job.data.version, "data_after": job.remaining().version,
            "original": {"path": str(job.original), "model_hash": original_hash},
            "unlearned": {"path": str(forgotten.model), "model_hash": model_hash},
            "seconds": forgotten.seconds, "method_record": forgotten.record}


def thresholds_hash(cfg: ForgetConfig) -> str:
    """Names the thresholds the verdict was reached by, so a record shows they were not changed after the fact."""
    return hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def audit_record(summary: dict, verifier: Verifier, measures: dict[str, dict], reference: dict, cfg: ForgetConfig,
                 tracking: Path, name: str) -> dict:
    """Judge `measures["unlearned"]` against the reference; the original must fail the same test (positive
    control: with nothing forgotten, the protocol has to notice). The thresholds are the config's as the run read
    them (a study records its config in run.json before any step); their hash names them in the record."""
    verdict = judge(measures["unlearned"], measures["reference"], cfg)
    if measures["unlearned"]["model_hash"] == measures["reference"]["model_hash"]:  # nothing to judge it against
        verdict = {"checks": {}, "passed": None, "verdict": "reference", "failed": [],
                   "fallback": "none: this model is the retrain reference"}
    control = judge(measures["original"], measures["reference"], cfg)
    record = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"), **summary,
        "reference": reference,
        "protocol": {"delta": verifier.delta, "guidance": verifier.guidance,
                     "samples_per_caption": verifier.preset.extraction.samples_per_prompt,
                     "paraphrases_per_caption": verifier.preset.adaptive.paraphrases,
                     "membership_unit": "distinct (picture, caption) pair", "pairs": len(verifier.forgotten),
                     "never_trained_rows": len(verifier.nonmembers), "utility_prompts": len(verifier.utility.held_out),
                     "neighbours": len(verifier.neighbours),
                     "thresholds": cfg.model_dump(mode="json"), "thresholds_hash": thresholds_hash(cfg)},
        "measures": measures, "verification": verdict, "original_against_reference": control,
    }
    metrics = {f"{role}_{key}": m[key]["rate"] for role, m in measures.items()
               for key in ("copies", "paraphrase_copies")}
    metrics |= {f"{role}_mia_auc": m["membership"]["auc"] for role, m in measures.items()}
    metrics |= {"passed": float(bool(verdict["passed"])), "seconds": summary["seconds"]}
    record["mlflow_run_id"] = log_to_mlflow(tracking, "diffaudit-forget", name,
                                            {"method": summary["method"], "request": json.dumps(summary["request"]),
                                             "thresholds_hash": thresholds_hash(cfg)}, metrics, [])
    return record
