"""Output folders diffaudit owns: a marker names the folder's kind and id, a lock keeps a second writer out, and only
what carries our marker (or our own temp names) is ever swept, replaced or deleted.

A user who points `--out` at a folder of their own must lose nothing: a non-empty folder without our marker is
refused unless it carries the manifest an earlier diffaudit wrote there (then it is adopted and marked).
"""

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diffaudit.errors import ConfigError

MARKER = ".diffaudit-folder.json"
LOCK = ".diffaudit-folder.lock"
TEMP_PREFIXES = (".tmp.", ".ckpt.")  # + the folder id: what only a crashed writer of that folder leaves behind
# What each kind of folder holds when a diffaudit from before the markers wrote it: such a folder is adopted.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "study": ("run.json", "steps"),
    "model": ("train_log.jsonl", "checkpoints", "model/training_manifest.json", "sisa.json"),
    "samples": ("index.parquet",),
    "dataset": ("manifest.json",),
    "extraction": ("per_prompt.parquet", "summary.json", "samples/index.parquet"),
    "mia": ("summary.json", "scores.parquet"),
    "forget": ("forget.json",),
    "verification": ("audit_record.json",),
}
# Writers that may work inside a folder of another kind: a deletion trains its new model in its own folder.
HOLDS: dict[str, frozenset[str]] = {"forget": frozenset({"model"})}
OURS = frozenset({MARKER, LOCK})
_held: dict[Path, list] = {}  # lock files this process holds: path -> [fd, depth] (a nested claim reuses it)


def marker(folder: Path) -> dict | None:
    """The marker of `folder`, or None when it has none (or an unreadable one)."""
    path = Path(folder) / MARKER
    try:
        data = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("id"), str) else None


def folder_id(path: Path) -> str:
    """The id of the nearest marked folder holding `path` (empty when none does): temp names carry it."""
    for folder in (Path(path), *Path(path).parents):
        found = marker(folder)
        if found:
            return found["id"]
    return ""


def temp_prefix(target: Path, kind: str = ".tmp.") -> str:
    """The name prefix of a temp file or folder written beside `target`, owned by its folder's id."""
    fid = folder_id(Path(target).parent)
    return f"{kind}{fid}." if fid else kind


def _adoptable(folder: Path, kind: str) -> bool:
    return any((folder / name).exists() for name in SIGNATURES[kind])


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in OURS)


def mark(folder: Path, kind: str) -> str:
    """Write a fresh marker of `kind` into `folder` (a folder being built, before it is moved into place)."""
    fid = uuid.uuid4().hex[:12]
    (Path(folder) / MARKER).write_text(json.dumps({"kind": kind, "id": fid}))
    return fid


def check_owned(out: Path, kind: str) -> str | None:
    """The id of `out` if diffaudit may write a `kind` there (None when it does not exist or is empty); otherwise
    a one-line refusal that names the folder, what it is and the fix."""
    out = Path(out)
    if out.is_symlink():
        raise ConfigError(f"output {out} is a symbolic link; pass the folder it points to, or another path")
    if not out.exists():
        return None
    if not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder; choose another path")
    found = marker(out)
    if found:
        if found.get("kind") != kind and kind not in HOLDS.get(found.get("kind"), ()):
            raise ConfigError(f"output {out} is a diffaudit {found.get('kind')} folder, not a {kind} folder; "
                              "choose another path")
        return found["id"]
    if not _visible(out):
        return None
    if _adoptable(out, kind) or folder_id(out.parent):  # our manifest, or inside a folder of ours (a run's parts)
        return mark(out, kind)
    raise ConfigError(f"output {out} is not empty and was not written by diffaudit (no {MARKER}); choose a new or "
                      f"empty folder, so nothing of yours is overwritten")


def check_apart(out: Path, reads: dict[str, Path | None]) -> None:
    """Refuse an output that is, or lies inside, a folder the command reads (a model, a dataset)."""
    target = Path(out).resolve()
    for what, path in reads.items():
        if path is None:
            continue
        source = Path(path).resolve()
        if target == source or source in target.parents:
            raise ConfigError(f"output {out} lies inside the {what} {path} that this command reads; write "
                              "somewhere else, so the input stays as it was")


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    key = (out / LOCK).resolve()
    if key in _held:
        _held[key][1] += 1
    else:
        fd = os.open(key, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"output {out} is being written by another diffaudit command; wait for it to finish "
                              "or choose another path") from None
        _held[key] = [fd, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if not _held[key][1]:
            os.close(_held.pop(key)[0])


@contextmanager
def owned(out: Path, kind: str, reads: dict[str, Path | None] | None = None) -> Iterator[str]:
    """Claim `out` for a `kind` writer for the duration of the block (checked, marked, locked) and yield its id.
    A folder the block created and left holding nothing is removed, so a refused request leaves no empty OUT."""
    out = Path(out)
    check_apart(out, reads or {})
    fid = check_owned(out, kind)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fid = fid or mark(out, kind)
    try:
        with _locked(out):
            yield fid
    finally:
        if created and out.is_dir() and not _visible(out):
            shutil.rmtree(out, ignore_errors=True)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete what a writer of `folder` killed mid-write left: temp names carrying this folder's id, anywhere under
    it. Other names (a user's files, another folder's temps) and anything behind a symbolic link are left alone."""
    folder = Path(folder)
    fid = (marker(folder) or {}).get("id")
    if not fid or folder.is_symlink() or not folder.is_dir():
        return []
    prefixes = tuple(f"{p}{fid}." for p in TEMP_PREFIXES)
    stale = []
    for root, dirs, files in os.walk(folder):  # never follows a symbolic link to a folder
        for name in [*dirs, *files]:
            if name.startswith(prefixes):
                stale.append(Path(root) / name)
        dirs[:] = [d for d in dirs if not d.startswith(prefixes)]
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def remove_owned(out: Path, kind: str) -> None:
    """Delete `out` only if it is a diffaudit `kind` folder (marked, or carrying our manifest); a symbolic link is
    removed as a link, never followed."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"output {out} is not a folder diffaudit wrote; it was left as it is")
    if not out.exists():
        return
    check_owned(out, kind)  # refuses anything that is not ours
    shutil.rmtree(out)
