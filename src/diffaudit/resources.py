"""Work is planned before it is allocated: a request whose estimate exceeds this machine's free memory or disk is
refused with the estimate, instead of ending in a MemoryError traceback or a full disk mid-run."""

import os
import shutil
from pathlib import Path

from diffaudit.errors import ConfigError


def free_memory() -> int:
    """Bytes of memory available to a new allocation (Linux MemAvailable; physical free pages elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def free_disk(path: Path) -> int:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_fits(what: str, memory: float = 0, disk: float = 0, where: Path | None = None) -> None:
    """Refuse `what` when its estimated `memory` or `disk` bytes (at `where`) exceed what is free, naming both."""
    if memory > (free := free_memory()):
        raise ConfigError(f"{what} needs about {_size(memory)} of memory; {_size(free)} is free. Ask for less")
    if disk and where is not None and disk > (room := free_disk(where)):
        raise ConfigError(f"{what} needs about {_size(disk)} of disk at {where}; {_size(room)} is free. Ask for less "
                          "or write elsewhere")
