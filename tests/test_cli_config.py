"""One source of truth for settings: every CLI option is a config field (or an input/output named here), its
default is the config's, and a `--config` file reaches every command that runs a model."""

from pathlib import Path

import pytest
import typer
from conftest import run_cli

from diffaudit import cli
from diffaudit.config import Preset

# Options that name inputs, outputs or actions rather than settings of an audit.
NOT_SETTINGS = {"preset", "config", "out", "prompt", "prompts_file", "force", "full_run", "reference", "strict",
                "data", "sha256", "row_id", "caption_contains", "sharded", "method", "images",
                "family", "paths", "verify", "model", "captions", "sequential"}  # inputs and queries, not settings


def _commands() -> list[tuple[str, object, object]]:
    """(path, click command, Python callback) for every leaf command of the app."""
    found = []

    def walk(group: typer.Typer, prefix: str) -> None:
        for info in group.registered_commands:
            found.append((f"{prefix}{info.name or info.callback.__name__}", info.callback))
        for sub in group.registered_groups:
            walk(sub.typer_instance, f"{prefix}{sub.name} ")

    walk(cli.app, "")
    root = typer.main.get_command(cli.app)
    out = []
    for path, callback in found:
        command = root
        for part in path.replace("_", "-").split():
            command = command.commands[part]
        out.append((path, command, callback))
    return out


def test_every_option_is_a_config_field_with_the_configs_default() -> None:
    preset_fields = {f"{section}.{name}" for section, info in Preset.model_fields.items()
                     if section != "name" for name in info.default.model_dump()}
    checked = 0
    for path, command, callback in _commands():
        fields = cli.setting_fields(callback)
        for param in command.params:
            if param.param_type_name != "option" or param.name in NOT_SETTINGS or param.name == "help":
                continue
            assert param.name in fields, f"`diffaudit {path} --{param.name}` maps to no config field"
            assert fields[param.name] in preset_fields, f"{path} --{param.name}: no field {fields[param.name]}"
            assert param.default is None or param.default == [], (
                f"`diffaudit {path} --{param.name}` has its own default {param.default!r}; defaults live in the config")
            checked += 1
    assert checked > 30


@pytest.mark.parametrize("command", ["extract", "mia"])
def test_a_config_files_sections_reach_the_command(command: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`delta = 0.1` in a file used to be ignored by `extract`: now an invalid value there must be refused by both
    commands before any model is loaded, which shows the file is read."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[extraction]\nmin_clique = 1\n[membership]\nper_side = 1\n")
    assert run_cli(monkeypatch, command, str(tmp_path / "no-model"), str(tmp_path / "no-data"), str(tmp_path / "o"),
                 "--preset", "tiny", "--config", str(bad)) == 2
    err = capsys.readouterr().err
    assert "file" in err and ("min_clique" in err or "per_side" in err)


def test_flags_and_config_file_meet_in_one_preset(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[calibration]\ndelta = 0.1\n[membership]\nattacks = [\"pia\"]\n[runtime]\ndevice = \"cpu\"\n")
    values = {"preset": "tiny", "config": config, "top": 3, "samples": None, "guidance": None, "steps": None,
              "sampler": None, "delta": None, "edge_threshold": None, "min_clique": None, "calibrate": False,
              "compare_size": None, "tiered": None, "detector": None, "confirm_fraction": None, "device": None,
                  "ray": None, "ray_cpus": None, "ray_gpus": None, "ray_workers": None,
              "dtype": "float64"}
    cfg = cli._configured(cli.extract, values)
    assert cfg.calibration.delta == 0.1 and cfg.membership.attacks == ("pia",), "the file's sections are read"
    assert cfg.extraction.prompts_top == 3 and cfg.calibration.calibrate is False, "flags override the file"
    assert cfg.runtime.device == "cpu" and cfg.runtime.dtype == "float64"
