"""Dask Gateway in local mode: `dask-gateway-server` with a local-process backend, all on 127.0.0.1.

The state folder holds a generated password (0600) and the server's config file (0600), which
reads the password from that file: the password is in no argv, environment, log or output.
The server starts each Dask cluster as `dask scheduler`/`dask worker` processes, each in its
own session with its working directory under `clusters/`; `down` stops any left behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import secrets
import shutil
import signal
import time
from pathlib import Path

from playbooks import local, procs, statefile
from playbooks.errors import PlaybookError
from playbooks.quantity import memory_bytes
from playbooks.report import Report

SERVICE = "gateway"
BACKEND = "playbooks.gateway_backend.LoopbackBackend"
INSTALL = "pip install 'datalab-playbooks[local]' (it brings dask-gateway-server[local])"


def folder(c) -> Path:
    return local.service_dir(c, SERVICE)


def password_file(c) -> Path:
    return folder(c) / "password"


def clusters_dir(c) -> Path:
    return folder(c) / "clusters"


def password(c) -> str:
    """Generated once, kept in the state folder."""
    path = password_file(c)
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    statefile.write_private(path, value)
    return value


def check_installed() -> None:
    """Refuse in one line when the server, its local backend or its proxy binary is missing."""
    spec = importlib.util.find_spec("dask_gateway_server")
    if spec is None or importlib.util.find_spec("sqlalchemy") is None:
        raise PlaybookError(f"dask-gateway-server with its local backend is not installed: {INSTALL}")
    proxy = Path(spec.origin).parent / "proxy" / "dask-gateway-proxy"
    if not proxy.exists():
        raise PlaybookError(
            f"dask-gateway-server has no prebuilt proxy ({proxy} is missing; installed from source?): "
            "install its manylinux wheel (pip install --only-binary :all: 'dask-gateway-server[local]==2026.3.0')"
        )


def config_text(c, port: int, proxy_port: int) -> str:
    """The server's config file (Python, as dask-gateway-server reads it)."""
    cfg = c.config.gateway
    dask = local.tool("dask")
    settings = {
        # The private API; clients use the proxy's address, which serves the API too.
        "DaskGateway.address": "127.0.0.1:0",
        "Proxy.address": f"127.0.0.1:{port}",
        "Proxy.tcp_address": f"127.0.0.1:{proxy_port}",
        "DaskGateway.backend_class": BACKEND,
        "DaskGateway.authenticator_class": "dask_gateway_server.auth.SimpleAuthenticator",
        "LocalBackend.clusters_directory": str(clusters_dir(c)),
        "LocalBackend.sigint_timeout": 5,
        "LocalBackend.sigterm_timeout": 5,
        # distributed 2026.8 has no dask-scheduler / dask-worker commands.
        "LocalClusterConfig.scheduler_cmd": [dask, "scheduler"],
        "LocalClusterConfig.worker_cmd": [dask, "worker"],
        "LocalClusterConfig.scheduler_memory": memory_bytes(
            cfg.scheduler.memory.limit, "gateway.scheduler.memory.limit"
        ),
        "LocalClusterConfig.worker_memory": memory_bytes(cfg.worker.memory.limit, "gateway.worker.memory.limit"),
        "LocalClusterConfig.worker_threads": _threads(cfg.worker.threads),
    }
    lines = [
        "# Written by datalab-playbooks (gateway.up, local mode); rewritten by every gateway.up.",
        "from pathlib import Path",
        "",
    ]
    lines += [f"c.{key} = {value!r}" for key, value in settings.items()]
    lines.append(f"c.SimpleAuthenticator.password = Path({str(password_file(c))!r}).read_text().strip()")
    return "\n".join(lines) + "\n"


def _threads(value) -> int:
    if isinstance(value, bool) or not str(value).strip().isdigit() or not 1 <= int(value) <= 64:
        raise PlaybookError(f"gateway.worker.threads must be a whole number from 1 to 64, got {value!r}")
    return int(value)


def server_process(c, port: int, proxy_port: int, config: Path, config_digest: str) -> local.Process:
    argv = [local.tool("dask-gateway-server"), "--config", str(config)]
    digest = hashlib.sha256(password(c).encode()).hexdigest()[:16]
    return local.Process(
        SERVICE, argv, local.quiet_env(), health_url=f"http://127.0.0.1:{port}/api/health",
        inputs={"config": config_digest, "password": digest},
    )  # fmt: skip


# ---------------------------------------------------------------- lifecycle


def up(c, port=None, proxy_port=None, timeout=None) -> None:
    check_installed()
    if port and proxy_port and str(port) == str(proxy_port) and str(port) != "0":
        raise PlaybookError(f"--port and --proxy-port are both {port}: give two different ports, or leave one out")
    local.check_ports(port, proxy_port)
    with local.writing(c, "gateway.up"):
        _up(c, port, proxy_port, timeout)


def _up(c, port, proxy_port, timeout) -> None:
    state = local.processes(c, SERVICE).get(SERVICE)
    if state and not local.alive(state):
        # The server is gone (its clusters list was in memory): its clusters would run on unmanaged.
        for pid, what in stop_leftovers(c, float(c.config.local.stop_grace)):
            print(f"gateway: stopped {what} (pid {pid})", flush=True)
    last = local.last_ports(c, SERVICE, SERVICE)
    api = local.choose_port(port, local.preferred_port(c, "gateway"), previous=state, key="http", last=last)
    proxy = local.choose_port(
        proxy_port, local.preferred_port(c, "gateway_proxy"), previous=state, key="proxy", last=last
    )
    while proxy == api:
        proxy = local.choose_port(0)
    password(c)
    text = config_text(c, api, proxy)
    config = folder(c) / "config.py"
    if not config.exists() or config.read_text() != text:
        statefile.write_private(config, text)
    clusters_dir(c).mkdir(parents=True, exist_ok=True)
    process = server_process(c, api, proxy, config, hashlib.sha256(text.encode()).hexdigest()[:16])
    seconds = float(timeout if timeout is not None else c.config.local.start_timeout)
    result = local.ensure(c, SERVICE, process, {"http": api, "proxy": proxy}, seconds)
    if result == "running":
        print(f"gateway: already running and healthy (pid {state['pid']}): no change")
    print_access(c, api, proxy)


def down(c, purge: bool = False) -> None:
    with local.writing(c, "gateway.down", create=False):
        _down(c, purge)


def _down(c, purge: bool) -> None:
    stopped = local.stop(c, SERVICE, grace=float(c.config.local.stop_grace))
    stopped += [f"{what} (pid {pid})" for pid, what in stop_leftovers(c, float(c.config.local.stop_grace))]
    print(f"gateway: stopped {', '.join(stopped)}" if stopped else "gateway: nothing running")
    shutil.rmtree(clusters_dir(c), ignore_errors=True)  # working directories hold each cluster's TLS key
    if purge:
        local.purge(c, SERVICE)
        print(f"gateway: deleted {folder(c)} (password and config)")
    elif folder(c).exists():
        print(f"gateway: kept {folder(c)} (password and logs; pass --purge to delete it)")


def leftovers(c) -> list[tuple[int, str]]:
    """(pid, what) of processes the server started and left: its proxy, the clusters' schedulers and workers.

    Found by their working directory in the state folder and their program, never by name alone.
    """
    home, clusters = folder(c).resolve(), clusters_dir(c).resolve()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            argv = [part.decode(errors="replace") for part in (proc / "cmdline").read_bytes().split(b"\0") if part]
        except OSError:
            continue
        names = [Path(part).name for part in argv[:2]]
        if cwd == home and "dask-gateway-proxy" in names:
            found.append((int(proc.name), "leftover proxy"))
        elif cwd.is_relative_to(clusters) and "dask" in names and argv[2:3] in (["scheduler"], ["worker"]):
            found.append((int(proc.name), f"leftover cluster {argv[2]}"))
    return found


def stop_leftovers(c, grace: float) -> list[tuple[int, str]]:
    """TERM each leftover's process group (each runs in its own session), KILL what is left after grace."""
    found = leftovers(c)
    for pid, _ in found:
        procs.signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and leftovers(c):
        local.pause(0.2)
    for pid, _ in leftovers(c):
        procs.signal_group(pid, signal.SIGKILL)
    return found


# ---------------------------------------------------------------- status, access, smoke, logs


def running(c) -> dict | None:
    """The state of the running gateway server, or None."""
    state = local.processes(c, SERVICE).get(SERVICE)
    return state if local.alive(state) else None


def addresses(state: dict) -> tuple[str, str]:
    ports = state["ports"]
    return f"http://127.0.0.1:{ports['http']}", f"gateway://127.0.0.1:{ports['proxy']}"


def print_access(c, port: int, proxy_port: int, show_password: bool = False) -> None:
    api, proxy = addresses({"ports": {"http": port, "proxy": proxy_port}})
    print(f"gateway: address          {api}")
    print(f"gateway: proxy address    {proxy}")
    print(
        f'gateway: from Python      Gateway("{api}", proxy_address="{proxy}", auth=BasicAuth("<any user name>", password))'
    )
    if show_password:
        print(f"gateway: password         {password(c)}")
    else:
        print(f"gateway: password         in {password_file(c)} (pass --show-password to gateway.status to print it)")


def status(c, show_password: bool = False) -> bool:
    state = local.processes(c, SERVICE).get(SERVICE)
    if not state:
        print("gateway: not running")
        return False
    health = local.health(state)
    if not local.alive(state):
        print(f"gateway: {health}: run `invoke gateway.up` to start it again")
        for line in local.crash_report(c, SERVICE):
            print(line)
        local.refuse_crashed(c, SERVICE)
        return False
    print(f"gateway: {health} (pid {state['pid']})")
    clusters = [p.name for p in clusters_dir(c).iterdir() if p.is_dir()] if clusters_dir(c).is_dir() else []
    print(f"gateway: {len(clusters)} Dask cluster(s) running{': ' + ', '.join(clusters) if clusters else ''}")
    print_access(c, state["ports"]["http"], state["ports"]["proxy"], show_password)
    return health == "healthy"


def smoke_reports(c) -> list[Report]:
    from playbooks.gateway_check import run_check

    state = local.processes(c, SERVICE).get(SERVICE)
    if not state:
        return []
    if not local.alive(state):
        raise PlaybookError(f"the local gateway is not running ({local.health(state)}): run `invoke gateway.up`")
    api, proxy = addresses(state)
    print(f"gateway: checking {api} (local process)", flush=True)
    report = run_check(api, proxy, password(c), float(c.config.gateway.smoke_timeout), service="dask-gateway")
    print(report.render(), flush=True)
    return [report]


def logs(c, lines: int) -> str:
    return local.tail_log(c, SERVICE, SERVICE, lines)
