"""The README names the run the shipped example comes from, and it is the run `docs/example/RUN` records."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_readme_and_the_example_name_the_same_run() -> None:
    named = re.search(r"`docs/example/` holds .*? of run `([^`]+)`", (ROOT / "README.md").read_text(), re.S)
    assert named, "the README must say which run docs/example shows"
    assert named.group(1) == (ROOT / "docs" / "example" / "RUN").read_text().strip()


def test_the_readme_is_a_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300, "move reference material to docs/guide/"
    assert not re.search(r"\bissue[ -]?\d+", readme, re.I), "user-facing text names no issue numbers"
    for link in re.findall(r"\]\(([^)#]+)\)", readme):
        assert (ROOT / link).exists(), f"README links to a missing {link}"
