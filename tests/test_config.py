from pathlib import Path

import pytest

from diffaudit.config import PRESETS, load_preset
from diffaudit.errors import ConfigError


def test_file_and_overrides_apply_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[train]\nsteps = 7\nlr = 0.1\n")
    cfg = load_preset("tiny", path, {"train": {"lr": 0.2}})
    assert (cfg.train.steps, cfg.train.lr) == (7, 0.2)
    assert cfg.model == PRESETS["tiny"].model


@pytest.mark.parametrize("text, match", [
    ("[trian]\nsteps = 3\n", "unknown config section 'trian'"),
    ("[train]\nstesp = 3\n", "stesp"),
    ("[data]\nresolution = 4\n", r"data.resolution: Input should be greater than or equal to 8 \(got 4\)"),
    ("[sample]\nsampler = 'heun'\n", "sampler"),
    ("[train\n", "cannot read config"),
    ("[study]\ndp_epsilons = [8.0]\ndp_control = false\n",
     r"study.dp_epsilons -> \[dp\] epsilons; study.dp_control -> \[dp\] control: these settings moved"),
])
def test_bad_config_names_the_problem(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_preset("tiny", path)


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_preset("huge")


def test_duplication_plan_must_fit_members() -> None:
    with pytest.raises(ConfigError, match="duplication plan needs"):
        load_preset("tiny", overrides={"data": {"n_member": 5}})


def test_a_run_started_before_a_setting_moved_is_not_resumed(tmp_path: Path) -> None:
    """Its record names the old key: resuming would compare settings that no longer exist."""
    import json

    from diffaudit.study.runner import _check_same_config

    old = json.loads(json.dumps(PRESETS["tiny"].model_dump()))
    old["study"]["dp_steps"] = old.pop("dp")["steps"]
    (tmp_path / "run.json").write_text(json.dumps({"config": old}))
    with pytest.raises(ConfigError, match=r"older diffaudit .*study.dp_steps -> \[dp\] steps.*new --out"):
        _check_same_config(tmp_path, PRESETS["tiny"])
