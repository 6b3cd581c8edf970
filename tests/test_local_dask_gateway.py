"""Dask and Dask Gateway in local mode, for real: the CLI with no Kubernetes runs them on 127.0.0.1."""

import asyncio
import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from playbooks.procs import http_ok, tcp_ok
from tests.conftest import gone, processes_under, state
from tests.test_local_mode import run


def wait_gone(pid: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(pid), f"process {pid} still runs after {seconds}s"


def states(workdir: Path, service: str) -> list[Path]:
    """The process state files of a service (ports.json keeps the ports of last time, for the next up)."""
    return [path for path in (workdir / ".playbooks/local" / service).glob("*.json") if path.stem != "ports"]


def pids(workdir: Path) -> dict[str, int]:
    return {path.stem: json.loads(path.read_text())["pid"] for path in states(workdir, "dask")}


def assert_nothing_left(workdir: Path, records: list[dict], service: str) -> None:
    for record in records:
        assert gone(record["pid"])
        for port in record["ports"].values():
            assert not tcp_ok("127.0.0.1", port), f"port {port} still answers"
    assert not states(workdir, service)
    assert processes_under(workdir) == []


# ---------------------------------------------------------------- Dask


@pytest.mark.slow
def test_dask_lifecycle(workdir):
    up = run(workdir, "dask.up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "scheduler and 2 worker(s) (dask.workers)" in up.stdout
    assert "dask: 2 worker(s) joined the scheduler" in up.stdout
    first = pids(workdir)
    assert sorted(first) == ["scheduler", "worker-0", "worker-1"]
    scheduler = state(workdir, "dask", "scheduler")
    port, dashboard = scheduler["ports"]["tcp"], scheduler["ports"]["dashboard"]

    status = run(workdir, "dask.status")
    assert status.returncode == 0, status.stderr
    for name, pid in first.items():
        assert f"dask/{name}: healthy (pid {pid})" in status.stdout
    assert "dask: the scheduler counts 2 worker(s)" in status.stdout
    assert f"Client('tcp://127.0.0.1:{port}')" in status.stdout
    assert f"http://127.0.0.1:{dashboard}/status" in status.stdout
    # Bokeh renders its first page slowly on a busy machine.
    assert http_ok(f"http://127.0.0.1:{dashboard}/status", timeout=15), "the dashboard (bokeh) answers"

    smoke = run(workdir, "smoke")  # the root smoke: every local service that runs
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert f"dask: checking tcp://127.0.0.1:{port} (local processes)" in smoke.stdout
    assert "ok   workers" in smoke.stdout and "2 worker(s)" in smoke.stdout
    assert "dask     PASS" in smoke.stdout and "gateway" not in smoke.stdout

    again = run(workdir, "dask.up")
    assert again.returncode == 0, again.stderr
    assert "already running and healthy" in again.stdout and "no change" in again.stdout
    assert pids(workdir) == first

    scale = run(workdir, "dask.scale", "1")
    assert scale.returncode == 0, scale.stdout + scale.stderr
    assert f"dask: stopped worker-1 (pid {first['worker-1']})" in scale.stdout
    assert pids(workdir) == {"scheduler": first["scheduler"], "worker-0": first["worker-0"]}
    assert gone(first["worker-1"])
    kept = run(workdir, "dask.up")
    assert "1 worker(s) (kept from the running cluster" in kept.stdout and "no change" in kept.stdout

    dashboard_url = run(workdir, "dask.dashboard")
    assert dashboard_url.stdout.strip().endswith(f"dask: dashboard at http://127.0.0.1:{dashboard}/status")

    down = run(workdir, "dask.down")
    assert down.returncode == 0, down.stderr
    assert down.stdout.index("worker-0") < down.stdout.index("scheduler"), "workers stop before their scheduler"
    assert_nothing_left(workdir, [scheduler], "dask")
    assert "dask: nothing running" in run(workdir, "dask.down").stdout
    assert "==> scheduler.log <==" in run(workdir, "dask.logs", "--lines", "5").stdout


@pytest.mark.slow
def test_killed_worker_shows_unhealthy_and_up_restarts_it(workdir):
    assert run(workdir, "dask.up", "--workers", "2").returncode == 0
    first = pids(workdir)
    os.killpg(first["worker-1"], signal.SIGKILL)
    wait_gone(first["worker-1"])

    status = run(workdir, "dask.status")
    assert f"dask/worker-1: process {first['worker-1']} is gone" in status.stdout
    assert f"dask/worker-0: healthy (pid {first['worker-0']})" in status.stdout

    up = run(workdir, "dask.up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"dask/worker-1: stale state (process {first['worker-1']} is gone); starting afresh" in up.stdout
    assert "dask: 2 worker(s) joined the scheduler" in up.stdout
    second = pids(workdir)
    assert second["worker-1"] != first["worker-1"]
    assert {k: second[k] for k in ("scheduler", "worker-0")} == {k: first[k] for k in ("scheduler", "worker-0")}
    scheduler = state(workdir, "dask", "scheduler")
    assert run(workdir, "dask.down").returncode == 0
    assert_nothing_left(workdir, [scheduler], "dask")


# ---------------------------------------------------------------- Dask Gateway


@pytest.mark.slow
def test_gateway_lifecycle(workdir):
    up = run(workdir, "gateway.up")
    assert up.returncode == 0, up.stdout + up.stderr
    folder = workdir / ".playbooks/local/gateway"
    record = state(workdir, "gateway")
    password = (folder / "password").read_text().strip()
    assert len(password) >= 24
    for private in ("password", "config.py"):
        assert stat.S_IMODE((folder / private).stat().st_mode) == 0o600
    assert password not in (folder / "config.py").read_text()
    assert password not in Path(f"/proc/{record['pid']}/cmdline").read_text()
    assert password not in Path(f"/proc/{record['pid']}/environ").read_bytes().decode(errors="replace")
    address = f"http://127.0.0.1:{record['ports']['http']}"
    assert f'Gateway("{address}", proxy_address="gateway://127.0.0.1:{record["ports"]["proxy"]}"' in up.stdout

    smoke = run(workdir, "gateway.smoke")
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert f"gateway: checking {address} (local process)" in smoke.stdout
    assert "dask-gateway: PASS" in smoke.stdout and "ok   password enforced" in smoke.stdout

    status = run(workdir, "gateway.status")
    assert f"gateway: healthy (pid {record['pid']})" in status.stdout
    assert "gateway: 0 Dask cluster(s) running" in status.stdout
    assert "--show-password" in status.stdout
    shown = run(workdir, "gateway.status", "--show-password")
    assert f"gateway: password         {password}" in shown.stdout

    again = run(workdir, "gateway.up")
    assert "already running and healthy" in again.stdout and state(workdir, "gateway")["pid"] == record["pid"]

    down = run(workdir, "gateway.down")
    assert down.returncode == 0, down.stderr
    assert f"gateway: stopped gateway (pid {record['pid']})" in down.stdout
    assert_nothing_left(workdir, [record], "gateway")
    assert not (folder / "clusters").exists()
    for output in (up, smoke, status, again, down):
        assert password not in output.stdout + output.stderr
    assert password not in (folder / "gateway.log").read_text()


@pytest.mark.slow
def test_gateway_down_stops_clusters_a_killed_server_left(workdir):
    """A server killed with its clusters running (their list was in memory): down still stops them."""
    assert run(workdir, "gateway.up").returncode == 0
    record = state(workdir, "gateway")
    password = (workdir / ".playbooks/local/gateway/password").read_text().strip()
    name = _start_cluster(record["ports"], password)
    cluster_dir = workdir / ".playbooks/local/gateway/clusters" / name
    deadline = time.monotonic() + 60
    while not processes_under(cluster_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_under(cluster_dir), "the cluster's scheduler runs"
    os.kill(record["pid"], signal.SIGKILL)
    wait_gone(record["pid"])
    assert "process" in run(workdir, "gateway.status").stdout

    down = run(workdir, "gateway.down")
    assert down.returncode == 0, down.stderr
    assert "leftover cluster scheduler" in down.stdout
    assert_nothing_left(workdir, [record], "gateway")


def _start_cluster(ports: dict, password: str) -> str:
    from dask_gateway import BasicAuth, Gateway

    async def submit() -> str:
        async with Gateway(f"http://127.0.0.1:{ports['http']}", proxy_address=f"gateway://127.0.0.1:{ports['proxy']}",
                           auth=BasicAuth("someone", password), asynchronous=True) as gateway:  # fmt: skip
            return await gateway.submit()

    return asyncio.run(submit())


# ---------------------------------------------------------------- bad input, in one line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dask.up", "--workers", "51"], "--workers must be a whole number from 0 to 50, got '51'"),
        (["dask.up", "--worker-memory", "lots"], "--worker-memory 'lots' is not a memory quantity"),
        (["dask.up", "--dry-run"], "--dry-run is for the cluster modes"),
        (["dask.scale", "2"], "the local Dask scheduler is not running: run `invoke dask.up` first"),
        (["dask.smoke"], "dask is not running on this machine: run `invoke dask.up`"),
        (["dask.smoke", "--in-cluster"], "--in-cluster needs a Kubernetes cluster and local mode has none"),
        (["dask.dashboard"], "the local Dask scheduler is not running: run `invoke dask.up` first"),
        (["gateway.up", "--dry-run"], "--dry-run is for the cluster modes"),
        (["gateway.smoke"], "Dask Gateway is not running on this machine: run `invoke gateway.up`"),
    ],
)
def test_bad_input_is_one_line(workdir, args, message):
    result = run(workdir, *args, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not list(workdir.glob(".playbooks/local/*/*.json"))
