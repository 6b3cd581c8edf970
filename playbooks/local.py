"""Local mode: services as supervised processes on this machine, with their state in a folder.

Each process of a service has a state file (`<state>/<service>/<process>.json`: PID, the
command's fingerprint, ports, inputs) and a log. `up` leaves a healthy process with the
same inputs alone, replaces a stale PID file (the process is gone, or the PID now belongs
to another program), and restarts a process whose inputs changed or that does not answer.
`down` stops the whole process group: TERM, then KILL after a deadline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from playbooks.errors import PlaybookError
from playbooks.procs import free_port, http_ok, start, stop_group, tcp_ok


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


def state_root(c) -> Path:
    return Path(c.config.local.state_dir).expanduser().resolve()


def service_dir(c, service: str) -> Path:
    return state_root(c) / service


def tool(name: str) -> str:
    """A console script of this environment (mlflow, dask, moto_server), else from PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise PlaybookError(f"{name} not found: install the local extra (pip install 'datalab-playbooks[local]')")
    return found


def choose_port(given, configured=None, previous: dict | None = None, key: str = "http") -> int:
    """The given port, else the running process's, else its last one if still free, else a free one.

    key names the port in the process's recorded ports (a process may have several).
    """
    if previous and previous.get("ports", {}).get(key):
        recorded = int(previous["ports"][key])
        if given and str(given) == str(recorded) and alive(previous):
            return recorded
        if not given and (alive(previous) or not tcp_ok("127.0.0.1", recorded)):
            return recorded
    value = given or configured
    if value in (None, "", 0, "0", "auto"):
        return free_port()
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise PlaybookError(f"invalid port {value!r}: use a number from 1024 to 65535") from None
    if not 1024 <= port <= 65535:
        raise PlaybookError(f"invalid port {port}: use a number from 1024 to 65535")
    if tcp_ok("127.0.0.1", port):
        raise PlaybookError(f"port {port} is already taken on 127.0.0.1: pick another port or leave it out")
    return port


# ---------------------------------------------------------------- state


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"corrupt": True}


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    parts = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    return parts or None  # a zombie has an empty command line: as good as gone


def alive(state: dict | None) -> bool:
    """The recorded process is running and still the program it was (not a reused PID)."""
    if not state or state.get("corrupt") or not state.get("pid"):
        return False
    cmdline = _cmdline(int(state["pid"]))
    if cmdline is None:
        return False
    try:
        stat = Path(f"/proc/{state['pid']}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except OSError:
        return False
    # A console script runs as `python /path/script args`: match the program's name and its arguments.
    argv = state["argv"]
    program = Path(argv[0]).name
    tail = cmdline[len(cmdline) - len(argv) + 1 :] if len(argv) > 1 else []
    return tail == argv[1:] and any(Path(part).name == program for part in cmdline[: len(cmdline) - len(argv) + 1])


def leftovers(state: dict | None) -> list[int]:
    """Processes still in the group of a recorded process that is gone: a crash or kill -9 of the
    leader leaves its children running (mlflow's uvicorn keeps answering on the port).

    While any member lives, the group's ID (the leader's PID) cannot be handed out again, so
    these are the service's own processes.
    """
    if not state or state.get("corrupt") or not state.get("pid") or _cmdline(int(state["pid"])) is not None:
        return []
    pgid, members = int(state["pid"]), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # fields: state, ppid, pgrp, ...
            members.append(int(stat.parent.name))
    return sorted(members)


def stale_reason(state: dict | None) -> str | None:
    if state is None:
        return None
    if state.get("corrupt"):
        return "unreadable state file"
    if _cmdline(int(state["pid"])) is None:
        return f"process {state['pid']} is gone"
    if not alive(state):
        return f"PID {state['pid']} now belongs to another program"
    return None


def write_state(path: Path, process: Process, pid: int, ports: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "pid": pid,
        "argv": process.argv,
        "fingerprint": process.fingerprint(),
        "health_url": process.health_url,
        "health_port": process.health_port,
        "ports": ports,
        "inputs": process.inputs,
        "started": time.time(),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


# ---------------------------------------------------------------- lifecycle


def ensure(c, service: str, process: Process, ports: dict, timeout: float, out=print) -> str:
    """Start the process unless a healthy one with the same inputs runs; return what happened."""
    folder = service_dir(c, service)
    path = folder / f"{process.name}.json"
    log = folder / f"{process.name}.log"
    state = read_state(path)
    label = f"{service}/{process.name}" if process.name != service else service
    if alive(state):
        if state["fingerprint"] == process.fingerprint() and _healthy_state(state):
            return "running"
        why = "inputs changed" if state["fingerprint"] != process.fingerprint() else "not answering"
        out(f"{label}: {why}; restarting (pid {state['pid']})")
        stop_group(int(state["pid"]))
    elif (reason := stale_reason(state)) is not None:
        out(f"{label}: stale state ({reason}); starting afresh")
        if leftovers(state):
            stop_group(int(state["pid"]))
    path.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    child = start(process.argv, process.env, log, cwd=folder)
    write_state(path, process, child.pid, ports)
    _wait_healthy(process, child, log, timeout, label, out)
    return "started"


def _healthy_state(state: dict) -> bool:
    return _answers(state.get("health_url"), state.get("health_port"))


def _answers(url: str | None, port: int | None) -> bool:
    """The HTTP check, else the TCP check; a process that declares neither is healthy while it runs."""
    if url:
        return http_ok(url)
    if port is not None:
        return tcp_ok("127.0.0.1", port)
    return True


def _wait_healthy(process: Process, child, log: Path, timeout: float, label: str, out) -> None:
    start_time = time.monotonic()
    last = start_time
    while time.monotonic() - start_time < timeout:
        if process.healthy() and child.poll() is None:
            what = "ready after" if process.health_url or process.health_port else "started in"
            out(f"{label}: {what} {time.monotonic() - start_time:.0f}s (pid {child.pid})")
            return
        if child.poll() is not None:
            break
        if time.monotonic() - last >= 5:
            out(f"{label}: starting [{time.monotonic() - start_time:.0f}s/{timeout:.0f}s]")
            last = time.monotonic()
        time.sleep(0.25)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:]) if log.exists() else ""
    state = f"exited with code {child.returncode}" if child.poll() is not None else f"not ready within {timeout:.0f}s"
    out(f"{label}: {state}; last lines of {log}:\n{tail}")
    stop_group(child.pid)
    raise PlaybookError(f"{label} {state} (log above, full log in {log}); fix the cause or raise the timeout")


def processes(c, service: str) -> dict[str, dict]:
    """The recorded processes of a service: name -> state (other JSON files in the folder, such as
    storage's credentials.json, are not process states)."""
    folder = service_dir(c, service)
    if not folder.is_dir():
        return {}
    states = {p.stem: read_state(p) or {} for p in sorted(folder.glob("*.json"))}
    return {name: state for name, state in states.items() if state.get("corrupt") or "pid" in state}


def stop(c, service: str, names: list[str] | None = None, grace: float = 10.0, out=print) -> list[str]:
    """Stop the service's processes (or the named ones) by process group; forget their state."""
    chosen = {name: state for name, state in processes(c, service).items() if names is None or name in names}
    running = {name: int(state["pid"]) for name, state in chosen.items() if alive(state) or leftovers(state)}
    for pid in running.values():  # TERM them all first: their shutdowns overlap
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    for pid in running.values():
        stop_group(pid, grace)
    for name in chosen:
        (service_dir(c, service) / f"{name}.json").unlink(missing_ok=True)
    return [f"{name} (pid {pid})" for name, pid in running.items()]


def health(state: dict) -> str:
    if not alive(state):
        reason = stale_reason(state)
        # `down` forgets what it stops: a recorded process that is gone ended without it.
        return f"{reason} (crashed or killed)" if reason and not state.get("corrupt") else reason or "not running"
    return "healthy" if _healthy_state(state) else "running but not answering"


def crash_report(c, service: str | None = None, lines: int = 15) -> list[str]:
    """For each recorded process (of service, or of every service) that died: the end of its log."""
    services = [service] if service else sorted(p.name for p in state_root(c).glob("*") if p.is_dir())
    report = []
    for name in services:
        for process, state in processes(c, name).items():
            if state.get("corrupt") or alive(state):
                continue
            label = f"{name}/{process}" if process != name else name
            log = service_dir(c, name) / f"{process}.log"
            tail = tail_log(c, name, process, lines)
            report.append(f"{label}: last lines of {log}:" if tail else f"{label}: {log} is empty")
            report += [f"  {line}" for line in tail.splitlines()]
            if left := leftovers(state):
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
