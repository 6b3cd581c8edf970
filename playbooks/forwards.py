"""Supervised port-forwards to the running services: what to forward, on which local port, and
the background supervisor (playbooks/forwarder.py) that keeps them.

One supervisor per target (API server, context, namespace), with its files in a folder of its
own under `forward.state_dir` (default: $XDG_STATE_HOME/datalab-playbooks/forwards):
spec.json (what is wanted), status.json (what the supervisor says), supervisor.json (its
identity: it is signalled only while pid, start time and command line still match) and
forwarder.log. spec.json is kept after a stop, so a service keeps its local port next time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from playbooks import procs, runner, statefile
from playbooks.defaults import DEFAULTS
from playbooks.errors import PlaybookError

if TYPE_CHECKING:
    from playbooks.backends import ClusterBackend

# kubectl's words for an error that retrying does not fix.
FATAL = ("forbidden", "unauthorized")
LOCK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Want:
    """A port of a service that a forward makes reachable on 127.0.0.1."""

    service: str
    instance: str
    resource: str  # what kubectl forwards to: service/<name>
    remote: int
    port_key: str  # forward.ports.<key>: the preferred local port
    scheme: str = "http"  # of the address shown: http, tcp, gateway
    probe: str | None = None  # an HTTP path that tells the service answers; None: a TCP service
    label: str = ""  # which port of the service, when it has several (dashboard, proxy)

    @property
    def name(self) -> str:
        return "/".join(part for part in (self.service, self.instance, self.label) if part)


def url(scheme: str, port: int) -> str:
    return f"{scheme}://127.0.0.1:{port}"


# ---------------------------------------------------------------- where the files are


def base_dir(c) -> Path:
    configured = c.config.forward.state_dir
    if configured:
        return Path(os.path.expanduser(str(configured)))
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state_home) / "datalab-playbooks" / "forwards"


def folder(backend: ClusterBackend) -> Path:
    target = backend.target
    key = "\0".join([target.server, target.context or "", target.source.kubeconfig or "", target.namespace])
    return base_dir(backend.c) / f"{target.namespace}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


@contextlib.contextmanager
def writing(where: Path, timeout: float = LOCK_TIMEOUT):
    """One `forward`, `forward.stop` or `down` at a time per folder."""
    try:
        statefile.private_dir(where)
        fd = os.open(where / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise PlaybookError(
            f"cannot use the forwards folder {where} ({error.strerror}): make it writable or set forward.state_dir"
        ) from None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PlaybookError(
                        f"another run holds the forwards folder {where} after {timeout:.0f}s: let it finish, then retry"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def _read(path: Path, what: str) -> dict | None:
    data, problem = statefile.read_json(path)
    if problem:
        print(f"forward: warning: {path} {problem}; {what}", flush=True)
    return data


def read_spec(where: Path) -> dict:
    data = _read(where / "spec.json", "starting from no forwards") or {}
    return data if isinstance(data.get("forwards"), list) else {"forwards": []}


def read_status(where: Path) -> dict:
    data = _read(where / "status.json", "the supervisor rewrites it on its next change") or {}
    forwards = data.get("forwards")
    return forwards if isinstance(forwards, dict) else {}


# ---------------------------------------------------------------- the supervisor process


def supervisor(where: Path) -> procs.Identity | None:
    """The running supervisor of the folder, only if /proc still shows the process that was started."""
    record = _read(where / "supervisor.json", "treated as no supervisor") or {}
    pid = record.get("pid")
    if not isinstance(pid, int):
        return None
    found = procs.identity(pid)
    if found is None or found.start_time != record.get("start_time") or list(found.cmdline) != record.get("cmdline"):
        return None
    return found


def _launch(backend: ClusterBackend, where: Path) -> procs.Identity:
    import playbooks

    argv = [sys.executable, "-m", "playbooks.forwarder", str(where)]
    env = runner.child_env(os.environ, backend.target.source.kubeconfig)
    package_root = str(Path(playbooks.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    child = procs.start(argv, env, where / "forwarder.log", cwd=where)
    deadline = time.monotonic() + 10
    found = None
    while time.monotonic() < deadline:
        found = procs.identity(child.pid)
        if found is None or child.poll() is not None:
            break
        if list(found.cmdline) == argv:
            break
        time.sleep(0.05)
    if found is None or child.poll() is not None:
        raise PlaybookError(f"the forward supervisor exited at start: see {where / 'forwarder.log'}")
    statefile.write_json(
        where / "supervisor.json", {"pid": found.pid, "start_time": found.start_time, "cmdline": list(found.cmdline)}
    )
    return found


def _end(where: Path, found: procs.Identity, grace: float = 5.0) -> None:
    """Stop the supervisor's process group (its identity checked by the caller), then forget it."""
    procs.stop_group(found.pgid, grace)
    for name in ("supervisor.json", "status.json"):
        with contextlib.suppress(FileNotFoundError):
            (where / name).unlink()


# ---------------------------------------------------------------- ports


def tcp_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the supervisor binds: TIME_WAIT is no owner
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_ports(c, wants: list[Want], before: dict[str, int], running: set[str]) -> tuple[dict[str, int], list[str]]:
    """A local port per forward: the one it has, else last time's, else forward.ports' (when free), else any
    free one; returns the ports and a line for each that could not have its preferred port."""
    preferred = dict(c.config.forward.ports)
    chosen: dict[str, int] = {}
    notes = []
    for want in wants:
        if want.name in running and want.name in before:
            chosen[want.name] = before[want.name]
    taken = set(chosen.values())
    for want in wants:
        if want.name in chosen:
            continue
        wish = int(preferred.get(want.port_key) or 0)
        for candidate in (before.get(want.name), wish or None):
            if candidate and candidate not in taken and tcp_free(candidate):
                chosen[want.name] = candidate
                break
        else:
            chosen[want.name] = procs.free_port()
            if wish:
                notes.append(
                    f"forward: 127.0.0.1:{wish} is taken: {want.name} is on {url(want.scheme, chosen[want.name])}"
                )
        taken.add(chosen[want.name])
    return chosen, notes


# ---------------------------------------------------------------- what the tasks do


def wanted(backend: ClusterBackend, services) -> list[Want]:
    found = []
    for service in services:
        if service.cluster is not None and service.supports(backend.mode):
            found += service.cluster.forwards(backend)
    return found


def kubectl_argv(backend: ClusterBackend) -> list[str]:
    binary = backend.c.config.tools.kubectl
    path = binary if os.sep in binary else shutil.which(binary)
    if not path:
        raise PlaybookError(f"{binary} not found: install kubectl or set tools.kubectl in invoke.yaml")
    return [path, *backend.target.kubectl_flags()]


def start(backend: ClusterBackend, wants: list[Want], timeout: float, out=print) -> list[dict]:
    """Start or update the supervisor so that it forwards exactly `wants`; wait until each is connected."""
    where = folder(backend)
    with writing(where):
        old = read_spec(where)
        running = supervisor(where)
        before = {entry["name"]: entry["local"] for entry in old["forwards"] if isinstance(entry, dict)}
        ports, notes = choose_ports(backend.c, wants, before, {n for n in before} if running else set())
        for line in notes:
            out(line)
        entries = [{**asdict(want), "name": want.name, "local": ports[want.name]} for want in wants]
        spec = {"kubectl": kubectl_argv(backend), "forwards": entries}
        changed = spec != {"kubectl": old.get("kubectl"), "forwards": old["forwards"]}
        statefile.write_json(where / "spec.json", spec)
        if running is None:
            with contextlib.suppress(FileNotFoundError):
                (where / "status.json").unlink()  # a dead supervisor's word
            running = _launch(backend, where)
        elif changed:
            procs.signal_pid(running.pid, signal.SIGUSR1)
        states = wait_connected(where, running, entries, timeout, out)
    return [{**entry, **states.get(entry["name"], {})} for entry in entries]


def wait_connected(where: Path, running: procs.Identity, entries: list[dict], timeout: float, out) -> dict:
    started = last = time.monotonic()
    deadline = started + timeout
    while True:
        states = read_status(where)
        pending = [e for e in entries if states.get(e["name"], {}).get("state") != "connected"]
        if not pending:
            return states
        errors = [(e, str(states.get(e["name"], {}).get("error") or "")) for e in pending]
        fatal = [(e, error) for e, error in errors if any(word in error.lower() for word in FATAL)]
        if fatal:
            entry, error = fatal[0]
            _end(where, running)
            raise PlaybookError(
                f"kubectl may not port-forward to {entry['resource']} ({error}): the session needs `create` on "
                "pods/portforward in the namespace; the forwards were stopped"
            )
        if procs.identity(running.pid) is None:
            raise PlaybookError(f"the forward supervisor stopped: see {where / 'forwarder.log'}")
        waited = time.monotonic() - started
        if time.monotonic() >= deadline:
            entry, error = errors[0]
            raise PlaybookError(
                f"{entry['name']} not connected within {timeout:.0f}s ({error or 'no answer yet'}); the supervisor "
                "keeps retrying: `invoke forward.status` shows it, `invoke forward.stop` ends it"
            )
        if time.monotonic() - last >= 5:
            names = ", ".join(f"{e['name']} ({states.get(e['name'], {}).get('state', 'starting')})" for e in pending)
            out(f"forward: waiting for {names} [{waited:.0f}s/{timeout:.0f}s]", flush=True)
            last = time.monotonic()
        time.sleep(0.2)


def stop(backend: ClusterBackend, out=print) -> bool:
    """End the target's supervisor, if it runs; True when one was stopped."""
    where = folder(backend)
    if not where.is_dir():
        return False
    with writing(where):
        running = supervisor(where)
        if running is None:
            for name in ("supervisor.json", "status.json"):
                with contextlib.suppress(FileNotFoundError):
                    (where / name).unlink()
            return False
        _end(where, running)
    return True


def forget(backend: ClusterBackend, services: list[str], instance: str | None = None) -> None:
    """After a `down`: stop forwarding to what it removed (the whole supervisor when nothing is left)."""
    where = folder(backend)
    if not where.is_dir():
        return
    with writing(where):
        running = supervisor(where)
        if running is None:
            return
        spec = read_spec(where)

        def removed(entry: dict) -> bool:
            return entry.get("service") in services and instance in (None, entry.get("instance"))

        left = [entry for entry in spec["forwards"] if not removed(entry)]
        if len(left) == len(spec["forwards"]):
            return
        if not left:
            _end(where, running)
            print("forward: stopped (nothing left to forward)", flush=True)
            return
        statefile.write_json(where / "spec.json", {**spec, "forwards": left})
        procs.signal_pid(running.pid, signal.SIGUSR1)
        print(f"forward: no longer forwarding {', '.join(services)}", flush=True)


def current(backend: ClusterBackend) -> tuple[procs.Identity | None, list[dict]]:
    """The supervisor (or None) and each wanted forward with its state (no lock: a reader)."""
    where = folder(backend)
    if not where.is_dir():
        return None, []
    running = supervisor(where)
    if running is None:
        return None, []
    states = read_status(where)
    return running, [{**entry, **states.get(entry["name"], {})} for entry in read_spec(where)["forwards"]]


def local_port(backend: ClusterBackend, want: Want) -> tuple[int, bool]:
    """The local port `env` names for a forward: the running forward's, else the preferred one; and whether it runs."""
    with contextlib.suppress(Exception):
        _, entries = current(backend)
        for entry in entries:
            if entry.get("name") == want.name:
                return int(entry["local"]), True
    # forward.ports' 0 means any free port, known only once `forward` runs: name the usual one meanwhile.
    usual = DEFAULTS["forward"]["ports"].get(want.port_key)
    return int(backend.c.config.forward.ports.get(want.port_key) or usual or want.remote), False


def describe(entry: dict) -> tuple[str, str, str, str]:
    state = str(entry.get("state", "starting"))
    if entry.get("error") and state != "connected":
        state = f"{state}: {entry['error']}"
    return (entry["name"], url(entry["scheme"], entry["local"]), f"{entry['resource']}:{entry['remote']}", state)


def as_json(entry: dict) -> dict:
    return {
        "service": entry["service"],
        "instance": entry["instance"],
        "port": entry.get("label") or "",
        "address": url(entry["scheme"], entry["local"]),
        "to": f"{entry['resource']}:{entry['remote']}",
        "state": str(entry.get("state", "starting")),
        "connected": entry.get("state") == "connected",
        "reconnects": int(entry.get("reconnects") or 0),
        "error": entry.get("error"),
    }


def table(entries: list[dict]) -> list[str]:
    """The forwards as the `forward`, `forward.status` and `status` tables show them."""
    from playbooks.report import columns

    return columns([("forward", "address", "to", "state"), *map(describe, entries)])


def forwarded(backend: ClusterBackend, want: Want) -> tuple[int, str]:
    """The local port `env` gives for a forwarded service, and a comment that says what makes it answer."""
    port, running = local_port(backend, want)
    if running:
        return port, f"through `invoke forward` ({want.resource}:{want.remote})"
    command = backend.kubectl_command("port-forward", want.resource, f"{port}:{want.remote}")
    return port, f"answers once `invoke forward` runs (or: {command})"
