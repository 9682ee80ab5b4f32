"""Deletion requests: which rows a request names, that every method leaves the original alone, that SISA retrains
only what saw the data, and that the verification fails a model that forgot nothing (and passes a faithful one)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file

from diffaudit.config import PRESETS, Preset
from diffaudit.data.imagefolder import ImageDataset, load_imagefolder
from diffaudit.errors import CheckpointError, ConfigError
from diffaudit.model.lineage import read_lineage
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.unlearning.base import ForgetJob, fresh_like
from diffaudit.unlearning.protocol import run_forget, verify_forget
from diffaudit.unlearning.request import ForgetRequest, most_extracted_families
from diffaudit.unlearning.sisa import SISA, train_sharded
from diffaudit.unlearning.verify import judge


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _members(data: ImageDataset) -> pd.DataFrame:
    return data.split("member").table


def test_a_request_names_every_row_of_its_picture_subject_or_concept(tiny_data: ImageDataset) -> None:
    members = _members(tiny_data)
    repeated = members[members["sha256"].duplicated(keep=False)].iloc[0]
    rows = ForgetRequest(images=(repeated["id"],)).rows(members)
    assert rows.sum() > 1 and set(members.loc[rows, "sha256"]) == {repeated["sha256"]}
    assert (ForgetRequest(images=(repeated["sha256"].upper(),)).rows(members) == rows).all()
    family = members["family"].iloc[0]
    assert (ForgetRequest(families=(family,)).rows(members) == (members["family"] == family).to_numpy()).all()
    word = members["text"].iloc[0].split()[-1]
    concept = ForgetRequest(caption_contains=word)
    assert concept.kind == "concept" and (concept.rows(members) == members["text"].str.contains(word)).all()
    with pytest.raises(ConfigError, match="no-such-row"):
        ForgetRequest(images=("no-such-row",)).rows(members)
    with pytest.raises(ConfigError, match="needs"):
        ForgetRequest()


def test_the_studys_request_takes_the_most_copied_subjects_whole(tmp_path: Path, tiny_data: ImageDataset) -> None:
    members = _members(tiny_data)
    sizes = members.groupby("family").size()
    a, b = sizes.index[:2]
    pairs = pd.DataFrame({"family": [a] * 3 + [b] * 5 + [a] * 9, "kind": ["own"] * 8 + ["family"] * 9})
    pairs.to_parquet(tmp_path / "pairs.parquet")
    assert most_extracted_families(tmp_path / "pairs.parquet", members, int(sizes[b])) == (b,)
    assert most_extracted_families(tmp_path / "pairs.parquet", members, int(sizes[b]) + 1) == (b, a)
    with pytest.raises(ConfigError, match="min_rows"):
        most_extracted_families(tmp_path / "pairs.parquet", members, len(members) + 1)


def test_sisa_keeps_subjects_whole_and_forgetting_retrains_only_their_shard(tmp_path: Path, tiny: Preset,
                                                                           tiny_data: ImageDataset) -> None:
    template = build_pipeline(tiny.model, tiny.data.resolution)
    sharded = train_sharded(template, tiny_data, tiny.train, 2, 2, tmp_path / "sharded", tiny.runtime)
    plan = pd.read_parquet(sharded / "sisa.parquet")
    assert (plan.groupby("family")[["shard", "slice"]].nunique() == 1).all().all()
    pipe = AuditPipeline.from_pretrained(sharded)
    assert pipe.model_hash() == json.loads((sharded / "training_manifest.json").read_text())["model_hash"]
    x = pipe.place(torch.zeros(3, *pipe.latent_shape))
    with pipe.denoiser.counting() as spent, torch.no_grad():
        pipe.denoiser(x, 10, pipe.encode_text(["a", "b", "c"]))
    assert spent.evaluations == 6  # two shards answer each row
    # Forget a subject from the last slice of shard 0: shard 1 and shard 0's first stage are reused untouched.
    late = plan[(plan["shard"] == 0) & (plan["slice"] == 1)]
    family = late["family"].iloc[0]
    before = _digest(sharded)
    job = ForgetJob(sharded, tiny_data, frozenset(plan.loc[plan["family"] == family, "id"]), tiny, tmp_path / "out")
    forgotten = SISA().forget(job)
    assert _digest(sharded) == before
    assert forgotten.record["stages_retrained"] == 1 and forgotten.record["shards_retrained"] == [0]
    for part in ("unet/shard-1/diffusion_pytorch_model.safetensors",
                 "slices/shard-0/stage-0/unet/diffusion_pytorch_model.safetensors"):
        old, new = load_file(sharded / part), load_file(forgotten.model / part)
        assert all((old[k] == new[k]).all() for k in old)
    changed = load_file(forgotten.model / "unet/shard-0/diffusion_pytorch_model.safetensors")
    kept = load_file(sharded / "unet/shard-0/diffusion_pytorch_model.safetensors")
    assert any((changed[k] != kept[k]).any() for k in kept)
    assert not set(job.forget_ids) & set(read_lineage(forgotten.model)["id"])


def test_every_method_leaves_the_original_alone_and_says_what_it_forgot(tmp_path: Path, tiny: Preset,
                                                                       tiny_data: ImageDataset,
                                                                       tiny_model_dir: Path) -> None:
    original = AuditPipeline.from_pretrained(tiny_model_dir)
    assert fresh_like(original, 5).model_hash() == build_pipeline(tiny.model, tiny.data.resolution, 5).model_hash()
    members = _members(tiny_data)
    request = ForgetRequest(families=(members["family"].iloc[0],))
    ids = frozenset(members.loc[request.rows(members), "id"])
    before = _digest(tiny_model_dir)
    for method in ("retrain", "finetune"):
        summary = run_forget(method, ForgetJob(tiny_model_dir, tiny_data, ids, tiny, tmp_path / method), request)
        assert summary["rows"] == len(ids) and summary["data_before"] != summary["data_after"]
        assert summary["unlearned"]["model_hash"] != original.model_hash()
        trained = set(read_lineage(Path(summary["unlearned"]["path"]))["id"])
        # Retraining never saw the rows; fine-tuning steered them away from weights that did.
        assert (ids & trained) == (set() if method == "retrain" else ids)
    assert _digest(tiny_model_dir) == before
    with pytest.raises(CheckpointError, match="--sharded"):
        run_forget("sisa", ForgetJob(tiny_model_dir, tiny_data, ids, tiny, tmp_path / "sisa"), request)


def _measure(rate: float, pct: list[float], loss: float = 1.0) -> dict:
    return {"copies": {"rate": rate}, "paraphrase_copies": {"rate": rate}, "membership": {"percentiles": pct},
            "heldout_loss": loss, "frechet_distance": 10 * loss, "neighbour_loss": loss}


def test_judge_fails_what_was_not_forgotten_or_was_over_forgotten() -> None:
    cfg = PRESETS["quick"].forget
    rng = np.random.default_rng(0)
    faithful = list(rng.uniform(0.3, 0.7, 40))
    reference = _measure(0.0, list(rng.uniform(0.3, 0.7, 40)))
    assert judge(_measure(0.0, faithful), reference, cfg)["verdict"] == "pass"
    kept = judge(_measure(0.5, list(rng.uniform(0.9, 1.0, 40))), reference, cfg)
    assert kept["verdict"] == "fail" and {"copies", "membership"} <= set(kept["failed"])
    assert "under-forgotten" in kept["checks"]["membership"]["direction"] and "retrain" in kept["fallback"]
    over = judge(_measure(0.0, list(rng.uniform(0.0, 0.1, 40))), reference, cfg)
    assert over["failed"] == ["membership"] and "over-forgotten" in over["checks"]["membership"]["direction"]
    broken = judge(_measure(0.0, faithful, loss=1.5), reference, cfg)
    assert set(broken["failed"]) == {"heldout_loss", "frechet_distance", "neighbour_loss"}


@pytest.fixture(scope="module")
def overfit(overfit_run: tuple[dict, Path]) -> tuple[Preset, ImageDataset, Path]:
    """A model that memorised its 24 pictures: the membership attacks' positive control (trained once, in conftest)."""
    root = overfit_run[1]
    return PRESETS["tiny-overfit"], load_imagefolder(root / "data"), root / "train" / "model"


def test_verification_fails_a_model_that_forgot_nothing_and_passes_a_faithful_retrain(
        tmp_path: Path, overfit: tuple[Preset, ImageDataset, Path]) -> None:
    preset, data, original_dir = overfit
    # PIA at its paper's setting points the wrong way on this 8-px model (the membership controls choose its
    # direction on a tuning set); the loss attack at its paper's setting does not.
    preset = preset.model_copy(update={"forget": preset.forget.model_copy(update={"attack": "loss"})})
    members = _members(data)
    request = ForgetRequest(families=tuple(members["family"].unique()[:8]))
    ids = frozenset(members.loc[request.rows(members), "id"])
    reference = run_forget("retrain", ForgetJob(original_dir, data, ids, preset, tmp_path / "reference"), request)
    control = run_forget("retrain", ForgetJob(original_dir, data, ids, preset, tmp_path / "control", seed=1), request)
    pipes = {name: AuditPipeline.from_pretrained(Path(s["unlearned"]["path"]))
             for name, s in (("reference", reference), ("control", control))}
    original = AuditPipeline.from_pretrained(original_dir)
    record = verify_forget(control, reference, original, pipes["control"], pipes["reference"], data, preset, 0.15,
                           1.0, tmp_path / "verify", tmp_path)
    assert record["verification"]["verdict"] == "pass", record["verification"]
    # The original, nothing forgotten, still gives member-like scores: the same protocol must fail it.
    failed = record["original_against_reference"]
    assert failed["verdict"] == "fail" and "membership" in failed["failed"], failed
    assert "under-forgotten" in failed["checks"]["membership"]["direction"]
    assert record["measures"]["original"]["membership"]["auc"] > 0.9
    on_disk = json.loads((tmp_path / "verify" / "audit_record.json").read_text())
    assert on_disk["mlflow_run_id"] and on_disk["protocol"]["thresholds"] == preset.forget.model_dump(mode="json")
    assert on_disk["data_before"] == data.version and on_disk["forgotten_sha256"]


def test_the_study_forgets_its_most_copied_subjects_with_a_record_per_method(tiny_study_dir: Path,
                                                                            tmp_path: Path) -> None:
    import mlflow

    from diffaudit.report.technical import write_technical
    from diffaudit.tracking import mlflow_uri

    forget = json.loads((tiny_study_dir / "results.json").read_text())["forget"]
    assert set(forget["methods"]) == set(PRESETS["tiny"].forget.methods) and forget["control"]
    client = mlflow.MlflowClient(mlflow_uri(tiny_study_dir))
    for name, record in forget["methods"].items():
        on_disk = json.loads((tiny_study_dir / "seed0" / "forget" / name / "audit_record.json").read_text())
        assert on_disk["verification"] == record["verification"] and "created" not in record
        assert client.get_run(on_disk["mlflow_run_id"]).info.status == "FINISHED"
        assert record["data_before"] != record["data_after"] and record["rows"] >= PRESETS["tiny"].forget.min_rows
        assert not Path(record["unlearned"]["path"]).is_absolute()  # results name paths inside the run
    assert forget["methods"]["retrain"]["verification"]["verdict"] == "reference"  # not judged against itself
    page = write_technical(tiny_study_dir, tmp_path / "report.html").read_text()
    assert "Deletion requests: forgetting and its verification" in page and "Positive control" in page


def test_the_command_line_forgets_verifies_and_keeps_earlier_deletions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       tiny_data: ImageDataset, tiny_data_dir: Path,
                                                                       tiny_model_dir: Path) -> None:
    families = _members(tiny_data)["family"].unique()
    first, second = tmp_path / "first", tmp_path / "second"
    common = ("--preset", "tiny")
    assert run_cli(monkeypatch, "forget", str(tiny_model_dir), str(tiny_data_dir), str(first), "--method",
                   "finetune", "--family", families[0], *common) == 0
    assert run_cli(monkeypatch, "forget", str(first / "model"), str(tiny_data_dir), str(second), "--method",
                   "finetune", "--family", families[1], *common) == 0
    record = json.loads((second / "forget.json").read_text())["method_record"]
    members = _members(tiny_data)
    # The second deletion neither retrains on nor keeps as "retained" the rows the first one removed.
    assert record["retain_rows"] == len(members) - members["family"].isin(families[:2]).sum()
    with pytest.raises(ConfigError, match="another output folder|other rows"):
        members_ids = frozenset(members.loc[members["family"] == families[1], "id"])
        run_forget("finetune", ForgetJob(tiny_model_dir, tiny_data, members_ids, PRESETS["tiny"], first),
                   ForgetRequest(families=(families[1],)))
    reference = tmp_path / "reference"
    assert run_cli(monkeypatch, "forget", str(tiny_model_dir), str(tiny_data_dir), str(reference), "--method",
                   "retrain", "--family", families[0], *common) == 0
    status = run_cli(monkeypatch, "verify-forget", str(tiny_model_dir), str(first), str(reference),
                     str(tiny_data_dir), str(tmp_path / "verify"), *common)
    verdict = json.loads((tmp_path / "verify" / "audit_record.json").read_text())["verification"]
    assert status == (0 if verdict["passed"] else 1)
    # A reference for another request is refused, naming why.
    assert run_cli(monkeypatch, "verify-forget", str(tiny_model_dir), str(second), str(reference),
                   str(tiny_data_dir), str(tmp_path / "verify2"), *common) != 0
    # The chained deletion is verified on the data as its original held it (the first deletion's rows left out).
    chained = tmp_path / "chained-reference"
    assert run_cli(monkeypatch, "forget", str(first / "model"), str(tiny_data_dir), str(chained), "--method",
                   "retrain", "--family", families[1], *common) == 0
    status = run_cli(monkeypatch, "verify-forget", str(first / "model"), str(second), str(chained),
                     str(tiny_data_dir), str(tmp_path / "verify3"), *common)
    verdict = json.loads((tmp_path / "verify3" / "audit_record.json").read_text())["verification"]
    assert status == (0 if verdict["passed"] else 1)
