"""The run layout is the one place a study run's paths are built."""

import re
from pathlib import Path

import diffaudit

SRC = Path(diffaudit.__file__).parent
# How a run path used to be spelled by hand: a seed folder, a step file, another sampler's folder, a run record.
HAND_BUILT = re.compile(r'seed\{|"sampler-|"steps" /|/ "steps"|"(run|results|findings|assumptions)\.json"|"mlruns"')


def test_no_module_builds_a_run_path_outside_the_layout() -> None:
    allowed = {SRC / "layout.py", SRC / "ownership.py"}  # ownership names the files that mark a run
    offenders = [f"{path.relative_to(SRC)}:{n}: {line.strip()}" for path in sorted(SRC.rglob("*.py"))
                 if path not in allowed for n, line in enumerate(path.read_text().splitlines(), 1)
                 if HAND_BUILT.search(line)]
    assert not offenders, "build these paths with layout.RunLayout:\n" + "\n".join(offenders)
