"""Atomic file writes and strict JSON: a crash leaves either the old file or the new one, never half of one."""

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from diffaudit import faults
from diffaudit.ownership import temp_prefix


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{temp_prefix(target)}{target.name}.", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        faults.point("before-rename")
        os.replace(tmp_path, target)
        faults.point("after-rename")
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Like `atomic_path` for a folder: built beside `target`, swapped in only when complete."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{temp_prefix(target)}{target.name}.", dir=target.parent))
    try:
        yield tmp
        faults.point("before-rename")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        faults.point("after-rename")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(target: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp_path)` and move the result onto `target` atomically."""
    with atomic_path(target) as tmp:
        write(tmp)


def jsonable(value: Any) -> Any:
    """Plain JSON values only: NaN and infinities become null (bare NaN is not JSON), numpy scalars become
    Python numbers, paths and other objects become strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def dumps(data: Any, **kw: Any) -> str:
    """Strict JSON text (`allow_nan=False` after `jsonable`), so any JSON parser can read what we write."""
    return json.dumps(jsonable(data), allow_nan=False, **kw)


def write_json(target: Path, data: Any) -> None:
    text = dumps(data, indent=2, sort_keys=True)
    write_atomic(target, lambda p: p.write_text(text))


def write_text(target: Path, text: str) -> None:
    write_atomic(target, lambda p: p.write_text(text))
