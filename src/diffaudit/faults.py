"""Seeded fault injection: die at the N-th crash point, as `kill -9` would, so resume tests are repeatable.

Long-running writers call `point(site)` where a real crash could land (between training steps, before and
after each atomic rename, between generation shards and study steps). With `DIFFAUDIT_CRASH_AT=N` in the
environment the process exits with status 137 at the N-th call, running no `finally` blocks and flushing no
buffers. Without it a call is a counter increment.

A Ray worker (`scale.ray_pool`) reads `DIFFAUDIT_WORKER_CRASH_AT` instead, so a crash meant for the driver does not
also kill every worker, and fires it once per `DIFFAUDIT_WORKER_CRASH_MARK` file: Ray restarts a dead worker with
a fresh counter, which would otherwise die at the same point forever.
"""

import os
import sys

ENV = "DIFFAUDIT_CRASH_AT"
WORKER_ENV = "DIFFAUDIT_WORKER_CRASH_AT"
WORKER_MARK = "DIFFAUDIT_WORKER_CRASH_MARK"
CRASH_STATUS = 137  # what a shell reports for a process killed by SIGKILL
_calls = 0
_worker = False


def as_worker() -> None:
    """This process is a Ray worker: read the worker's crash point from now on."""
    global _worker
    _worker = True


def _first_crash(mark: str | None) -> bool:
    """Claim the worker's one crash (O_EXCL: of two workers reaching the point, one dies)."""
    if mark is None:
        return True
    try:
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def point(site: str) -> None:
    global _calls
    _calls += 1
    target = os.environ.get(WORKER_ENV if _worker else ENV)
    if target and _calls == int(target) and (not _worker or _first_crash(os.environ.get(WORKER_MARK))):
        sys.stderr.write(f"diffaudit: injected crash at point {_calls} ({site})\n")
        sys.stderr.flush()
        os._exit(CRASH_STATUS)


def calls() -> int:
    """How many crash points this process has passed (the fault tests draw kill points below it)."""
    return _calls
