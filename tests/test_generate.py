from pathlib import Path

import numpy as np
import pytest

from diffaudit.config import Preset
from diffaudit.errors import CheckpointError
from diffaudit.model.generate import generate
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.shards import load_samples

PROMPTS = ["grinning face emoji", "red heart emoji", "cat emoji"]


def test_interrupted_generation_resumes_without_loss_or_duplicates(tmp_path: Path, tiny: Preset,
                                                                   tiny_pipe: AuditPipeline) -> None:
    whole = generate(tiny_pipe, PROMPTS, [0, 1], [1.0, 3.0], tiny.sample, tmp_path / "whole", shard_size=5)
    generate(tiny_pipe, PROMPTS, [0, 1], [1.0, 3.0], tiny.sample, tmp_path / "part", shard_size=5, max_shards=1)
    assert len(load_samples(tmp_path / "part")[1]) == 5
    resumed = generate(tiny_pipe, PROMPTS, [0, 1], [1.0, 3.0], tiny.sample, tmp_path / "part", shard_size=5)
    key = ["prompt", "seed", "guidance"]
    assert len(resumed) == len(whole) == 12
    assert not resumed.duplicated(key).any()
    a, ia = load_samples(tmp_path / "whole")
    b, ib = load_samples(tmp_path / "part")
    order_a, order_b = ia.sort_values(key).index, ib.sort_values(key).index
    np.testing.assert_array_equal(a[order_a], b[order_b])
    assert set(ia["model_hash"]) == {tiny_pipe.model_hash()}


def test_samples_from_another_model_are_not_mixed(tmp_path: Path, tiny: Preset, tiny_pipe: AuditPipeline) -> None:
    generate(tiny_pipe, PROMPTS[:1], [0], [1.0], tiny.sample, tmp_path / "g")
    other = tiny.sample.model_copy(update={"steps": 7})
    with pytest.raises(CheckpointError, match="new folder"):
        generate(tiny_pipe, PROMPTS[:1], [0], [1.0], other, tmp_path / "g")
