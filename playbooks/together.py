"""Run jobs in threads and wait for all of them; Ctrl-C stops every wait promptly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from playbooks.errors import PlaybookError

# Set on Ctrl-C: the waiting loops check it and stop instead of running to their deadline.
STOP = threading.Event()


class Interrupted(PlaybookError):
    """A wait stopped because the run was interrupted."""


def pause(seconds: float) -> None:
    """Sleep, unless the run is being interrupted."""
    if STOP.wait(seconds):
        raise Interrupted("interrupted")


def run_all(jobs: dict[str, Callable[[], None]]) -> None:
    """Run the jobs concurrently (one runs inline); raise the first failure once all have ended."""
    if len(jobs) == 1:
        next(iter(jobs.values()))()
        return
    pool = ThreadPoolExecutor(max_workers=len(jobs))
    futures = {name: pool.submit(job) for name, job in jobs.items()}
    try:
        pending = set(futures.values())
        while pending:
            _, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
    except KeyboardInterrupt:
        STOP.set()
        raise
    finally:
        pool.shutdown(wait=True)
    for name, future in futures.items():
        error = future.exception()
        if error is None:
            continue
        if isinstance(error, PlaybookError):
            raise error
        raise PlaybookError(f"{name}: {error}") from error
