"""Local processes: free ports, start in a process group, know them again, stop them.

A process is known by its identity (pid, start time, command line, process group: see
`identity`), never by its PID alone, and by the marker variables it inherits from the
supervisor (see `marked`), so its descendants are found even when its state is lost.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Given to every process local mode starts (and so to everything they start in turn).
MARKER_STATE = "PLAYBOOKS_LOCAL_STATE"  # the state folder
MARKER_PROCESS = "PLAYBOOKS_LOCAL_PROCESS"  # <service>/<process>


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start(argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start argv in a new session (its own process group), output to a private log, umask 077."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as out:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=0o077,  # the database, objects and files the servers write are private too
        )


@dataclass(frozen=True)
class Identity:
    """What /proc says about a running process: enough to tell it from a later one with the same PID."""

    pid: int
    state: str
    pgid: int
    start_time: int  # clock ticks after boot: a reused PID has another
    cmdline: tuple[str, ...]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ... (field 3 onwards)


def identity(pid: int) -> Identity | None:
    """The running (not zombie) process pid, or None."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    cmdline = tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return Identity(pid, fields[0], int(fields[2]), int(fields[19]), cmdline)


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw.split(b"\0") if entry)
    return {key: value for key, _, value in pairs}


def _ancestors() -> set[int]:
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        fields = _stat_fields(pid)
        pid = int(fields[1]) if fields else 0
    return found


def marked(state_dir: Path) -> dict[int, str]:
    """Running processes that carry the marker of this state folder: pid -> "<service>/<process>"."""
    wanted, mine, found = str(state_dir), _ancestors(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        env = environ(int(entry.name))
        if env.get(MARKER_STATE) == wanted and identity(int(entry.name)) is not None:
            found[int(entry.name)] = env.get(MARKER_PROCESS, "?")
    return found


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(pid: int, grace: float = 10.0) -> None:
    """TERM the whole process group, then KILL what is left after the grace period.

    Only for a group this run started itself (the test fixtures; local mode checks identity first).
    """
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap(pid)
        if not group_running(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    reap(pid)


def group_running(pgid: int) -> bool:
    """Whether a process of the group still runs. A zombie does not: it has ended and holds
    no port or file, it only waits for its parent (often init, which may be slow) to reap it."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def reap(pid: int) -> None:
    """Collect the exit status of a child of this process, so it is not left a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on this TCP port, from /proc/net/tcp and tcp6 (state 0A: LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):  # a parent chain, not a loop
        if pid == ancestor:
            return True
        fields = _stat_fields(pid)
        if not fields or int(fields[1]) <= 1:
            return False
        pid = int(fields[1])
    return False


def listens_under(root: int, port: int) -> bool:
    """Whether the socket listening on port is held by the process root or one of its descendants
    (a server may hand listening to a child in a session of its own, as dask-gateway's proxy is):
    the server answering there is ours, not another program that took the port first."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            holds = any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir())
            if holds and _descends_from(int(entry.name), root):
                return True
        except OSError:
            continue
    return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    import urllib.error
    import urllib.request  # here, not at start-up: it pulls in ssl and email

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 400
    except (urllib.error.URLError, OSError):
        return False


def tcp_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    """Poll check() until true; fail with the log's tail if the deadline passes or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.25)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    state = (
        f"exited with {process.returncode}"
        if process is not None and process.poll() is not None
        else f"not ready within {timeout:.0f}s"
    )
    raise TimeoutError(f"{what} {state}{tail}")
