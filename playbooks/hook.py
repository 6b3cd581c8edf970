"""`up --quiet [--deadline S]`: `up` for a session's start-up script.

One line on stderr whatever happens: what runs, after how long -- or one `error:` line and
exit 1, with the full output kept in a log file the line names. The deadline bounds the run:
at the deadline less a grace, every wait is told to stop (as Ctrl-C does: a local process
being started is left running, and the next `up` takes it over); at the deadline itself the
process ends with the error line even if a call is still blocked. It never outlives its deadline.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from playbooks.errors import PlaybookError
from playbooks.together import STOP

DEFAULT_DEADLINE = 300.0


def deadline_seconds(value) -> float | None:
    """--deadline: a number of seconds from 1 to 3600; None when not given."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 1 <= seconds <= 3600:
        raise PlaybookError(
            f"--deadline must be a number of seconds from 1 to 3600, got {value!r}: pass e.g. --deadline 300"
        )
    return seconds


class Watchdog:
    """Stops the waits at `deadline - grace` and ends the process at `deadline`, unless finished first."""

    def __init__(self, deadline: float, line: Callable[[], str]) -> None:
        self.deadline = deadline
        self.line = line
        self.done = threading.Lock()
        self.grace = min(5.0, deadline / 3)
        self.fired = False
        self.soft = threading.Timer(deadline - self.grace, self._stop_waits)
        self.hard = threading.Timer(deadline, self._end)
        for timer in (self.soft, self.hard):
            timer.daemon = True

    def __enter__(self) -> Watchdog:
        self.soft.start()
        self.hard.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.acquire()  # from here on the hard stop cannot fire
        self.soft.cancel()
        self.hard.cancel()
        if self.fired:  # the run is over: later tasks of the chain may wait again
            STOP.clear()

    def _stop_waits(self) -> None:
        self.fired = True
        STOP.set()

    def _end(self) -> None:
        if not self.done.acquire(blocking=False):
            return
        os.write(2, (self.line() + "\n").encode())
        os._exit(1)


def run(what: Callable[[], str], quiet: bool, deadline: float | None) -> None:
    """Run `what` (it returns the summary line) quietly and/or within a deadline."""
    start = time.monotonic()
    log_path = None
    if quiet:
        fd, name = tempfile.mkstemp(prefix="datalab-playbooks-up-", suffix=".log")  # 0600
        log_path = Path(name)
        log = os.fdopen(fd, "w", buffering=1)
    where = f" (output in {log_path})" if log_path else ""
    late = f"up did not finish within its {deadline or 0:.0f}s deadline{where}: raise --deadline; the next `up` takes over what it started"
    watchdog = Watchdog(deadline, lambda: f"error: {late}") if deadline else None
    try:
        if watchdog:
            watchdog.__enter__()
        if quiet:
            with redirect_stdout(log), redirect_stderr(log):
                summary = what()
        else:
            summary = what()
    except PlaybookError as error:
        if watchdog and watchdog.fired:
            raise PlaybookError(late) from None
        if log_path:
            raise PlaybookError(f"{error} (full output in {log_path})") from None
        raise
    finally:
        if watchdog:
            watchdog.__exit__()
        if quiet:
            log.close()
    if quiet:
        log_path.unlink(missing_ok=True)
        print(f"{summary} in {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)
