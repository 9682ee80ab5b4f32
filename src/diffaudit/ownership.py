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
# What each kind of folder holds, all of it, when a diffaudit from before the markers wrote it: such a folder is
# adopted for writing (never for deleting). Names common enough for a user to have alone are never enough.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "study": ("run.json", "steps", "data/metadata.jsonl"),
    "model": ("train_log.jsonl", "model/model_index.json"),
    "samples": ("index.parquet", "shard-00000.npy"),
    "dataset": ("manifest.json", "metadata.jsonl", "LICENSE.md"),
    "extraction": ("per_prompt.parquet", "summary.json", "matches.parquet"),
    "mia": ("summary.json", "scores.parquet"),
    "forget": ("forget.json", "request.json"),
    "verification": ("audit_record.json",),
}
# Writers that may work inside a folder of another kind: a deletion trains its new model in its own folder.
HOLDS: dict[str, frozenset[str]] = {"forget": frozenset({"model"})}
OURS = frozenset({MARKER, LOCK})
_held: dict[Path, list] = {}  # lock files this process holds: path -> [fd, depth] (a nested claim reuses it)


def marker(folder: Path) -> dict | None:
    """The marker of `folder`, or None when it has none (or an unreadable one, or a link: never followed)."""
    path = Path(folder) / MARKER
    try:
        data = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("id"), str) else None


def _planted(folder: Path) -> list[str]:
    """Our file names present in `folder` as something we never write (a link, a folder): refused, not followed."""
    return [name for name in sorted(OURS) if (folder / name).is_symlink()
            or ((folder / name).exists() and not (folder / name).is_file())]


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
    return all((folder / name).exists() for name in SIGNATURES[kind])


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in OURS)


def mark(folder: Path, kind: str) -> str:
    """Write a fresh marker of `kind` into `folder` (a folder being built, before it is moved into place)."""
    fid = uuid.uuid4().hex[:12]
    fd = os.open(Path(folder) / MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"kind": kind, "id": fid}))
    return fid


def check_owned(out: Path, kind: str, adopt: bool = True) -> str | None:
    """The id of `out` if diffaudit may write a `kind` there (None when it does not exist or is empty; with `adopt`,
    a folder an earlier diffaudit wrote is marked now); otherwise a one-line refusal that names the folder, what it
    is and the fix."""
    out = Path(out)
    if out.is_symlink():
        raise ConfigError(f"output {out} is a symbolic link; pass the folder it points to, or another path")
    if not out.exists():
        return None
    if not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder; choose another path")
    if _planted(out):
        raise ConfigError(f"output {out} holds {', '.join(_planted(out))} as a link or folder, which diffaudit never "
                          "writes; remove it or choose another path")
    found = marker(out)
    if found:
        holder = out.resolve() / LOCK in _held and kind in HOLDS.get(found.get("kind"), ())
        if found.get("kind") != kind and not holder:  # a deletion's own model, inside its claim only
            raise ConfigError(f"output {out} is a diffaudit {found.get('kind')} folder, not a {kind} folder; "
                              "choose another path")
        return found["id"]
    if not _visible(out):
        return None
    if _adoptable(out, kind) or folder_id(out.parent):  # our manifest, or inside a folder of ours (a run's parts)
        return mark(out, kind) if adopt else ""
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
    key = out.resolve() / LOCK
    if key in _held:
        _held[key][1] += 1
    else:
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
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
    check_owned(out, kind, adopt=False)  # refused before anything is written
    created = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):  # the marker is written under the lock: a second writer never sees half a claim
        fid = check_owned(out, kind)
        fresh = fid is None
        fid = fid or mark(out, kind)
        try:
            yield fid
        finally:
            if fresh and not _visible(out):  # nothing written: leave the folder as it was found
                (out / MARKER).unlink(missing_ok=True)
                (out / LOCK).unlink(missing_ok=True)
                for folder in created:  # innermost first; a created parent goes only when empty
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()


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


def check_removable(out: Path, kind: str) -> None:
    """Refuse to replace `out` unless it carries our `kind` marker (a guess from its file names is not enough to
    delete on), and never the working folder or one holding it."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir() or (marker(out) or {}).get("kind") != kind:
        raise ConfigError(f"output {out} is not a {kind} folder diffaudit marked ({MARKER}); it is left as it is: "
                          "choose another path, or delete it yourself")
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise ConfigError(f"output {out} holds the working folder; it is not replaced from inside")


def remove_owned(out: Path, kind: str) -> None:
    """Delete `out` only if it is a marked diffaudit `kind` folder (`check_removable`)."""
    check_removable(out, kind)
    if Path(out).exists():
        shutil.rmtree(out)
