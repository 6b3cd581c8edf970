"""One writer at a time: a lock on the local state folder, held by every task that changes it.

The lock is an flock on `<state>/.lock`, so it goes with the process that held it, however
it ended. The file names the holder (pid, task, since when) for the runs that wait. Inside
one run the lock is reentrant: `invoke up` starts services in threads, each takes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from playbooks import statefile
from playbooks.errors import PlaybookError
from playbooks.together import pause

LOCK_FILE = ".lock"
_guard = threading.Lock()
_held: dict = {"count": 0, "fd": None}


def holder(root: Path) -> str:
    """Who holds the lock, as the lock file says."""
    data, _ = statefile.read_json(root / LOCK_FILE)
    if not data:
        return "another run"
    since = time.strftime("%H:%M:%S", time.localtime(data.get("since", 0)))
    return f"pid {data.get('pid')} ({data.get('task')}) since {since}"


def check_writable(root: Path) -> None:
    """Refuse before changing anything when the state folder, or one of its service folders, is read-only."""
    folders = [root, *(path for path in root.iterdir() if path.is_dir())]
    for folder in folders:
        probe = folder / f".write-probe-{os.getpid()}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            probe.unlink()
        except OSError as error:
            raise PlaybookError(
                f"the state folder {folder} is not writable ({error.strerror}): nothing was changed; "
                f"make it writable (chmod u+w {folder}) or point local.state_dir elsewhere"
            ) from None


def _acquire(root: Path, task: str, timeout: float, out) -> int:
    try:
        statefile.private_dir(root)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise PlaybookError(
            f"cannot lock the state folder {root} ({error.strerror}): make it writable or point local.state_dir elsewhere"
        ) from None
    start = last = time.monotonic()
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            waited = time.monotonic() - start
            if waited >= timeout:
                who = holder(root)
                os.close(fd)
                raise PlaybookError(
                    f"the state folder {root} is still locked by {who} after {timeout:.0f}s: "
                    "let that run finish (or stop it), then run this again; local.lock_timeout sets the wait"
                ) from None
            if not announced or time.monotonic() - last >= 5:
                out(f"local: waiting for {holder(root)}, which holds the state folder [{waited:.0f}s/{timeout:.0f}s]")
                announced, last = True, time.monotonic()
            try:
                pause(0.1)
            except BaseException:
                os.close(fd)
                raise
    try:
        check_writable(root)
    except PlaybookError:
        os.close(fd)
        raise
    record = json.dumps({"pid": os.getpid(), "task": task, "since": time.time()})
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    return fd


@contextlib.contextmanager
def held(root: Path, task: str, timeout: float, out=print) -> Iterator[None]:
    """Hold the state folder's lock for the block (reentrant within this process)."""
    with _guard:
        if _held["count"] == 0:
            _held["fd"] = _acquire(root, task, timeout, lambda line: out(line, flush=True))
        _held["count"] += 1
    try:
        yield
    finally:
        with _guard:
            _held["count"] -= 1
            if _held["count"] == 0:
                os.ftruncate(_held["fd"], 0)
                os.close(_held["fd"])  # closing releases the flock
                _held["fd"] = None
