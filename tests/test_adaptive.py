"""Adaptive probes and inference-time mitigations (issue 16): each instrument with a regime where it must act and
one where it must not."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffaudit.attacks.adaptive.paraphrase import paraphrases, subject_name
from diffaudit.config import SampleConfig
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import CheckpointError
from diffaudit.model.conditioning import (
    EmbeddingNoise,
    RandomWords,
    Text,
    optimise_embeddings,
    text_guidance_norm,
    unconditional_eps,
)
from diffaudit.model.generate import generate
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import initial_noise, make_scheduler


def _norm(pipe: AuditPipeline, emb: torch.Tensor) -> torch.Tensor:
    t, noise = make_scheduler(pipe, "ddim", 3).timesteps[0], initial_noise(pipe, [0, 1])
    with torch.no_grad():
        return text_guidance_norm(pipe, emb, noise, t, unconditional_eps(pipe, noise, t))


def test_embedding_optimisation_moves_the_signal_the_way_it_is_asked(tiny_pipe: AuditPipeline) -> None:
    start = tiny_pipe.encode_text(["red apple emoji", "a cute cat icon"])
    before = _norm(tiny_pipe, start)
    up = optimise_embeddings(tiny_pipe, start, +1.0, steps=5, lr=0.05, noises=2, sampling_steps=3)
    down = optimise_embeddings(tiny_pipe, start, -1.0, steps=5, lr=0.05, noises=2, sampling_steps=3)
    assert (_norm(tiny_pipe, up) > before).all() and (_norm(tiny_pipe, down) < before).all()
    # A row already below the stop threshold is left exactly where it was; the other keeps moving.
    threshold = float(before.mean())
    stopped = optimise_embeddings(tiny_pipe, start, -1.0, steps=3, lr=0.05, noises=2, sampling_steps=3,
                                  stop_below=threshold)
    low = int(before.argmin())
    assert torch.equal(stopped[low], start[low]) and not torch.equal(stopped[1 - low], start[1 - low])
    assert all(p.requires_grad for p in tiny_pipe.unet.parameters()), "the weights are handed back trainable"


def test_settings_are_fresh_per_generation_and_reproducible(tiny_pipe: AuditPipeline) -> None:
    prompts, seeds = ["red apple emoji"] * 3 + ["cat emoji"], [0, 1, 0, 0]
    noisy = EmbeddingNoise(Text(), sigma=0.5)
    a = noisy(tiny_pipe, prompts, seeds)
    b = noisy(tiny_pipe, prompts[::-1], seeds[::-1]).flip(0)
    assert torch.equal(a, b), "a generation's noise depends on its (prompt, seed), not on the batch"
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    words = RandomWords(Text(), ["zebra", "kite", "moon"], words=2)
    typed = words.texts(prompts, seeds)
    assert typed[0] == typed[2] and typed[0] != typed[1] and all(len(t.split()) == len(p.split()) + 2
                                                                 for t, p in zip(typed, prompts, strict=True))

    searched = EmbeddingNoise(Text(), 0.1)  # an attacker who sends embeddings types no text
    assert RandomWords.wrap_typed(searched, ["zebra"], 2) is searched
    with pytest.raises(ValueError, match="typed text"):
        RandomWords(searched, ["zebra"], 2)


def test_a_generation_folder_never_mixes_conditionings(tiny_pipe: AuditPipeline, tmp_path: Path) -> None:
    cfg = SampleConfig(steps=2, batch_size=4)
    plain = generate(tiny_pipe, ["cat emoji"], [0, 1], [1.0], cfg, tmp_path / "s")
    with pytest.raises(CheckpointError, match="conditioning"):
        generate(tiny_pipe, ["cat emoji"], [2], [1.0], cfg, tmp_path / "s", conditioning=EmbeddingNoise(Text(), 1.0))
    noisy = generate(tiny_pipe, ["cat emoji"], [0, 1], [1.0], cfg, tmp_path / "n",
                     conditioning=EmbeddingNoise(Text(), 1.0))
    assert (plain["conditioning"] == "text").all() and noisy["conditioning"].str.startswith("embedding-noise").all()


def test_paraphrases_never_repeat_a_caption_the_picture_was_trained_with(tiny_pipe: AuditPipeline,
                                                                         tiny_data: ImageDataset) -> None:
    members = tiny_data.table[tiny_data.table["split"] == "member"]
    target = members.sort_values("dup_count", ascending=False)["text"].iloc[0]
    found = paraphrases(tiny_pipe, tiny_data, [target], k=3)[target]
    trained = set(members.loc[members["sha256"].isin(set(members.loc[members["text"] == target, "sha256"])), "text"])
    assert len(found) == 3 and not set(found) & trained and len(set(found)) == 3
    name = subject_name(target)
    assert any(name in f and f != target for f in found), "an unused template with the subject's name"
    assert subject_name("an icon of red apple") == "red apple" and subject_name("plain words") == "plain words"


def test_study_probes_undo_a_setting_and_add_nothing_to_the_base(tiny_study_dir: Path) -> None:
    """Positive control: the weights holder samples a guidance arm's own weights at the base setting, so it must
    find exactly what the static probe found on the base. Negative control: against the base itself it is the
    static query (same samples), so it is kept out of the tested family."""
    results = json.loads((tiny_study_dir / "results.json").read_text())
    rows = {r["arm"]: r for r in results["rows"] if r.get("kind") != "detection"}
    base, setting = rows["base"]["adaptive"], rows["guidance-3"]["adaptive"]
    holder = setting["probes"]["weights-holder"]
    assert holder["alone"]["extracted"] == base["static"]["extracted"] and not holder["same_as_static"]
    assert holder["reused_samples"] == "base/extraction/samples" and holder["unet_evaluations"] > 0
    assert base["probes"]["weights-holder"]["same_as_static"] and base["probes"]["weights-holder"]["started"] == 0
    assert rows["dedup-image"]["adaptive"]["probes"]["weights-holder"]["same_as_static"]
    for row in rows.values():
        assert set(row["adaptive"]["probes"]) == {"weights-holder", "paraphrase", "embedding-search"}
        for probe in row["adaptive"]["probes"].values():
            assert probe["union"]["extracted"] >= max(probe["static"]["extracted"], probe["alone"]["extracted"])
    cells = json.loads((tiny_study_dir / "findings.json").read_text())["adaptive"]
    assert {c["verdict"] for c in cells if c["arm"] == "base"} == {"reference"}
    tested = [c for c in cells if "p_value" in c]
    assert tested and all(c["verdict"] in ("undone", "no clear rise") for c in tested)
    assert not any(c["same_as_static"] for c in tested)
    control = results["adaptive_control"]
    assert set(control) >= {"text", "embedding-search", "passed", "bound"} and control["embedding-search"]["n"] > 0
    assert rows["random-words"]["kind"] == "inference" and np.isfinite(rows["norm-minimised"]["frechet_distance"])


@pytest.mark.parametrize("passed", [True, False])
def test_the_search_is_not_counted_when_its_negative_control_fails(passed: bool) -> None:
    """Positive and negative control of the findings' rule: a failed search control marks the search's cells (and only
    them) "control failed"; a passed one leaves them in the tested family."""
    from diffaudit.attacks.adaptive.registry import CONTROLLED
    from diffaudit.study.findings import adaptive_effects

    def probe(extracted: int, conditioning: str) -> dict:
        count = {"extracted": extracted, "targets": 4}
        return {"title": "t", "access": "weights", "static": {"extracted": 1, "targets": 4}, "alone": count,
                "union": count, "stopped": 0, "started": extracted - 1, "unet_evaluations": 8,
                "same_as_static": False, "conditioning": conditioning, "guidance": 3.0, "sampling": {}}

    def row(arm: str, model: str) -> dict:
        return {"arm": arm, "seed": 0, "model_hash": model,
                "adaptive": {"probes": {CONTROLLED: probe(3, "search"), "paraphrase": probe(2, "rewritten")}}}

    cells = adaptive_effects([row("base", "a"), row("dedup-caption", "b")], {"passed": passed})
    verdicts = {(c["arm"], c["probe"]): c["verdict"] for c in cells}
    assert verdicts[("base", CONTROLLED)] == "reference"
    assert (verdicts[("dedup-caption", CONTROLLED)] == "control failed") is not passed
    assert verdicts[("dedup-caption", "paraphrase")] in ("undone", "no clear rise")
