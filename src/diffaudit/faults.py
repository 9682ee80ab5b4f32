"""Seeded fault injection: die at the N-th crash point, as `kill -9` would, so resume tests are repeatable.

Long-running writers call `point(site)` where a real crash could land (between training steps, before and
after each atomic rename, between generation shards and study steps). With `DIFFAUDIT_CRASH_AT=N` in the
environment the process exits with status 137 at the N-th call, running no `finally` blocks and flushing no
buffers. Without it a call is a counter increment.
"""

import os
import sys

ENV = "DIFFAUDIT_CRASH_AT"
CRASH_STATUS = 137  # what a shell reports for a process killed by SIGKILL
_calls = 0


def point(site: str) -> None:
    global _calls
    _calls += 1
    target = os.environ.get(ENV)
    if target is not None and _calls == int(target):
        sys.stderr.write(f"diffaudit: injected crash at point {_calls} ({site})\n")
        sys.stderr.flush()
        os._exit(CRASH_STATUS)


def calls() -> int:
    """How many crash points this process has passed (the fault tests draw kill points below it)."""
    return _calls
