"""One writer at a time: a lock on the local state folder, held by every task that changes it.

The lock is an flock on `<state>/.lock`, so it goes with the process that held it, however
it ended (and the servers we start do not inherit it: Python's descriptors are not
inheritable). A run that waits names the holder from /proc/locks (pid, its command, since
when it runs), so taking the lock writes nothing: a refused task leaves the folder as it was.
Inside one run the lock is reentrant: `invoke up` starts services in threads, each takes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from playbooks import procs, statefile
from playbooks.errors import PlaybookError
from playbooks.together import pause

LOCK_FILE = ".lock"
_guard = threading.Lock()
_held: dict = {"count": 0, "fd": None}


def holder(root: Path) -> str:
    """Who holds the lock: the process /proc/locks names for the lock file."""
    try:
        inode = (root / LOCK_FILE).stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another run"
    for line in lines:
        fields = line.split()  # 1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = int(fields[4])
            found = procs.identity(pid)
            if found is None:
                return f"pid {pid}"
            command = " ".join(Path(part).name if i < 2 else part for i, part in enumerate(found.cmdline))
            started = time.time() - (_uptime() - found.start_time / os.sysconf("SC_CLK_TCK"))
            return f"pid {pid} ({command}) since {time.strftime('%H:%M:%S', time.localtime(started))}"
    return "another run"


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def check_writable(root: Path) -> None:
    """Refuse before changing anything when the state folder, or one of its service folders, is read-only."""
    for folder in [root, *(path for path in root.iterdir() if path.is_dir())]:
        if not os.access(folder, os.W_OK):  # also false on a read-only file system, even for root
            raise PlaybookError(
                f"the state folder {folder} is not writable: nothing was changed; "
                f"make it writable (chmod u+w {folder}) or point local.state_dir elsewhere"
            )


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
                os.close(_held["fd"])  # closing releases the flock
                _held["fd"] = None
