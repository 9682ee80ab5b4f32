from pathlib import Path

import numpy as np
import pytest

from diffaudit.attacks.mia import ATTACKS
from diffaudit.attacks.mia.clid import reduced_captions
from diffaudit.attacks.mia.lira import lira_scores
from diffaudit.attacks.mia.split_check import model_free_auc
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.study.mia_audit import evaluation_set, load_scores, run_mia, train_shadows


def test_evaluation_set_is_balanced_and_unique(tiny_data: ImageDataset) -> None:
    images, table = evaluation_set(tiny_data, 6)
    assert table["label"].sum() == 6 and len(table) == 12 and len(images) == 12
    assert table["sha256"].is_unique and set(table["role"]) == {"eval"}
    assert set(table.loc[table["label"] == 0, "split"]) == {"nonmember"}


def test_evaluation_set_keeps_tuning_families_apart(tiny_data: ImageDataset) -> None:
    images, table = evaluation_set(tiny_data, 4, tune_per_side=2)
    scored, tuning = table[table["role"] == "eval"], table[table["role"] == "tune"]
    assert scored["label"].sum() == len(scored) / 2 == 4 and len(images) == len(table)
    assert 0 < tuning["label"].sum() < len(tuning) and table["sha256"].is_unique
    assert not set(scored["family"]) & set(tuning["family"])


def test_every_attack_scores_with_its_declared_query_cost(tmp_path: Path, tiny: Preset, tiny_pipe: AuditPipeline,
                                                          tiny_data: ImageDataset) -> None:
    shadows = train_shadows(tiny_data, tiny, 2, tmp_path / "shadows")
    pool = set(tiny_data.table.loc[tiny_data.table["split"] != "calibration", "sha256"])
    assert all(s.trained and s.trained < pool for s in shadows)
    summary = run_mia(tiny_pipe, tiny_data, tmp_path, [*ATTACKS, "lira-online", "lira-offline"], 6, shadows)
    for name in ATTACKS:
        assert summary["attacks"][name]["queries_per_sample"] == ATTACKS[name].make().queries
    assert summary["attacks"]["pia"]["queries_per_sample"] == 2
    assert summary["attacks"]["secmi"]["queries_per_sample"] == 11
    assert summary["attacks"]["clid"]["queries_per_sample"] == 15
    scores, again = load_scores(tmp_path)
    assert again == summary
    assert {f"score_{a}" for a in ATTACKS} <= set(scores.columns)
    assert np.isfinite(scores.filter(like="score_").to_numpy()).all()
    assert 0 <= summary["attacks"]["loss"]["all"]["auc"] <= 1
    assert summary["attacks"]["secmi"]["choice"] == {"tuned": False, "t": 100, "sign": 1}
    assert set(summary["paired"]) == {f"{a} - loss" for a in [*ATTACKS, "lira-online", "lira-offline"] if a != "loss"}
    assert summary["loss_gap"]["nonmember_loss"] > 0
    assert (tmp_path / "roc.png").stat().st_size > 0


def test_unknown_attack_and_missing_shadows(tmp_path: Path, tiny_pipe: AuditPipeline,
                                            tiny_data: ImageDataset) -> None:
    with pytest.raises(ConfigError, match="unknown attack"):
        run_mia(tiny_pipe, tiny_data, tmp_path, ["gsa"], 4)
    with pytest.raises(ConfigError, match="LiRA needs shadow models"):
        run_mia(tiny_pipe, tiny_data, tmp_path, ["lira-online"], 4)


def test_lira_prefers_samples_that_look_like_their_in_shadows() -> None:
    rng = np.random.default_rng(0)
    in_masks = rng.random((8, 50)) < 0.5
    difficulty = rng.normal(0, 1, 50)  # per-sample baseline that LiRA must calibrate away
    stats = difficulty + np.where(in_masks, -1.0, 0.0) + rng.normal(0, 0.1, (8, 50))
    member = np.arange(50) < 25
    target = difficulty + np.where(member, -1.0, 0.0)
    for online in (True, False):
        scores = lira_scores(target, stats, in_masks, online)
        assert scores[member].min() > scores[~member].max()


def test_clid_reduces_captions_by_thirds() -> None:
    assert reduced_captions("abcdefghi") == ["abc", "def", "ghi", ""]


def test_split_check_detects_a_shift_and_accepts_iid() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
    labels = np.r_[np.ones(100), np.zeros(100)].astype(int)
    text = rng.normal(size=(200, 8))
    assert model_free_auc(images, text, labels)["at_chance"]
    shifted = images.copy()
    shifted[:100] //= 2  # members darker: a distribution shift
    result = model_free_auc(shifted, text, labels)
    assert not result["at_chance"] and result["auc"] > 0.9


def test_split_check_reads_family_disjoint_splits_by_family() -> None:
    """Negative control: family-disjoint sides with no shift in subjects. Random folds see family identity and
    'separate' them; family folds with a family bootstrap do not. Positive control: a real shift is still caught."""
    rng = np.random.default_rng(1)
    centres = rng.integers(30, 226, (120, 4, 4, 3))
    families = np.repeat(np.arange(120), 5)  # 120 families of 5 near-identical siblings, alternate sides
    images = np.clip(centres[families] + rng.integers(-2, 3, (600, 4, 4, 3)), 0, 255).astype(np.uint8)
    labels = families % 2
    text = rng.normal(size=(600, 8))
    assert not model_free_auc(images, text, labels)["at_chance"], "random folds read family identity"
    grouped = model_free_auc(images, text, labels, groups=families)
    assert grouped["at_chance"] and "family bootstrap" in grouped["interval"]
    shifted = images.copy()
    shifted[labels == 1] //= 2
    assert model_free_auc(shifted, text, labels, groups=families)["auc"] > 0.9
