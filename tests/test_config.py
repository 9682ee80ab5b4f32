import json
from pathlib import Path

import pytest

from diffaudit.config import MOVED, PRESETS, load_preset, recorded
from diffaudit.errors import ConfigError


def _as_written_before_the_moves(name: str) -> dict:
    """A preset's record as a diffaudit before the section moves wrote it: every moved key back under `[study]`."""
    config = json.loads(json.dumps(PRESETS[name].model_dump()))
    for (section, key), (new_section, new_key) in MOVED.items():
        config[section][key] = config[new_section].pop(new_key)
    for new_section in {s for s, _ in MOVED.values()} - {"study"}:
        assert not config.pop(new_section), f"[{new_section}] holds a key MOVED does not list"
    return config


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
    ("[study]\nmia_per_side = 50\nsamples_per_prompt = 4\nguidance_sweep = [1.0]\n",
     r"study.mia_per_side -> \[membership\] per_side; study.samples_per_prompt -> \[extraction\] samples_per_prompt; "
     r"study.guidance_sweep -> \[guidance\] sweep: these settings moved"),
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
    from diffaudit.study.runner import _check_same_config

    (tmp_path / "run.json").write_text(json.dumps({"config": _as_written_before_the_moves("tiny")}))
    with pytest.raises(ConfigError, match=r"older diffaudit .*study.prompts_top -> \[extraction\] prompts_top.*"
                                          r"study.dp_steps -> \[dp\] steps.*new --out"):
        _check_same_config(tmp_path, PRESETS["tiny"])


@pytest.mark.parametrize("name", ["tiny", "core", "quick"])
def test_a_finished_runs_record_reads_as_the_preset_it_ran(tmp_path: Path, name: str) -> None:
    assert recorded(json.loads(json.dumps(PRESETS[name].model_dump())), tmp_path / "run.json") == PRESETS[name]


def test_a_record_this_diffaudit_cannot_read_is_refused_naming_the_file(tmp_path: Path) -> None:
    config = PRESETS["tiny"].model_dump()
    config["membership"]["per_side"] = 1
    with pytest.raises(ConfigError, match=r"run.json: .*membership.per_side.*the diffaudit that ran it"):
        recorded(config, tmp_path / "run.json")
