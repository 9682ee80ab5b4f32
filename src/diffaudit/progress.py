"""Rich progress bars shared by every long step, so the CLI shows progress all the way."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Progress", "make_progress"]


def make_progress(console: Console | None = None, disable: bool = False) -> Progress:
    """A progress display with counts and ETA; `disable=True` keeps library calls quiet in tests."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, disable=disable,
    )
