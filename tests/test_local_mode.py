"""Local mode for real: the CLI with no Kubernetes configured runs supervised processes on 127.0.0.1."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from playbooks.procs import tcp_ok
from tests.conftest import ANY_PORT, QUIET_ENV, gone, state

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "playbooks")


def run(workdir: Path, *args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir), **QUIET_ENV, **ANY_PORT, **(env or {})}
    return subprocess.run([CLI, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def test_mlflow_with_local_s3_lifecycle(workdir):
    up = run(workdir, "storage.up", "mlflow.up", "--storage", "local-s3")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "target: local mode" in up.stdout
    assert "artifacts go to s3://datalab/mlflow (the local S3 server" in up.stdout
    storage, mlflow = state(workdir, "storage"), state(workdir, "mlflow")
    secret = (workdir / ".playbooks/local/storage/aws_secret_access_key").read_text()
    assert secret and secret not in up.stdout + up.stderr

    smoke = run(workdir, "smoke")
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "ok   artifact in bucket" in smoke.stdout and "s3://datalab/mlflow/" in smoke.stdout

    again = run(workdir, "mlflow.up")
    assert again.returncode == 0 and "already running and healthy" in again.stdout
    assert state(workdir, "mlflow")["pid"] == mlflow["pid"]

    status = run(workdir, "mlflow.status")
    assert f"mlflow: healthy (pid {mlflow['pid']})" in status.stdout

    down = run(workdir, "mlflow.down", "storage.down")
    assert down.returncode == 0, down.stderr
    for record in (mlflow, storage):
        assert gone(record["pid"])
        assert not tcp_ok("127.0.0.1", record["ports"]["http"])
    assert (workdir / ".playbooks/local/mlflow/mlflow.db").exists(), "down keeps the database without --purge"
    assert "nothing running" in run(workdir, "mlflow.down").stdout


def test_killed_service_shows_unhealthy_and_up_restarts_it(workdir):
    assert run(workdir, "storage.up").returncode == 0
    first = state(workdir, "storage")
    os.killpg(first["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not gone(first["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    status = run(workdir, "storage.status")
    assert "not running" in status.stdout
    again = run(workdir, "storage.up")
    assert again.returncode == 0, again.stderr
    assert f"process {first['pid']} is gone" in again.stdout
    second = state(workdir, "storage")
    assert second["pid"] != first["pid"] and second["ports"]["http"] == first["ports"]["http"]
    assert run(workdir, "storage.down").returncode == 0 and gone(second["pid"])


def test_stale_pid_file_of_another_program(workdir):
    assert run(workdir, "storage.up").returncode == 0
    record = state(workdir, "storage")
    assert run(workdir, "storage.down").returncode == 0
    other = subprocess.Popen(["sleep", "60"])
    try:
        record["pid"] = other.pid
        path = workdir / ".playbooks/local/storage/storage.json"
        path.write_text(json.dumps(record))
        up = run(workdir, "storage.up")
        assert up.returncode == 0, up.stderr
        assert f"PID {other.pid} now belongs to another program" in up.stdout
        assert other.poll() is None, "up must never signal a process that is not its own"
        assert run(workdir, "storage.down").returncode == 0
        assert other.poll() is None
    finally:
        other.kill()


def test_port_already_taken_is_one_line(workdir):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run(workdir, "storage.up", "--port", str(port))
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"error: port {port} is already taken on 127.0.0.1: pick another port or leave it out"
    )
    assert not (workdir / ".playbooks/local/storage/storage.json").exists()


def test_mlflow_without_object_storage_keeps_artifacts_on_disk(workdir):
    up = run(workdir, "mlflow.up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "a local folder (no object storage configured)" in up.stdout
    smoke = run(workdir, "mlflow.smoke", "--keep")  # a passing check deletes its artifact otherwise
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    line = next(line for line in smoke.stdout.splitlines() if "artifact on disk" in line)
    path = Path(line.split()[-1])
    assert line.strip().startswith("ok") and path.is_file() and path.is_relative_to(workdir)
    record = state(workdir, "mlflow")
    purge = run(workdir, "mlflow.down", "--purge")
    assert purge.returncode == 0 and gone(record["pid"])
    assert not (workdir / ".playbooks/local/mlflow").exists()


def process_tree(pid: int) -> dict[int, list[str]]:
    """pid and every descendant: their command lines."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        tree += children
        todo += children
    out = {}
    for member in tree:
        try:
            out[member] = Path(f"/proc/{member}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
    return out


def test_mlflow_runs_without_job_consumers_and_stops_at_once(workdir):
    """MLflow 3.17 starts huey job consumers (~245 MB each, deaf to SIGTERM) unless told not to:
    mlflow.job_execution is off by default, so the server is one process pair and `down` is quick."""
    up = run(workdir, "mlflow.up")
    assert up.returncode == 0, up.stdout + up.stderr
    record = state(workdir, "mlflow")
    assert record["inputs"]["job_execution"] is False
    time.sleep(3)  # the consumers, when enabled, start a moment after /health answers
    tree = process_tree(record["pid"])
    assert len(tree) >= 2, tree  # `mlflow server` and its uvicorn
    commands = [" ".join(argv) for argv in tree.values()]
    assert not [c for c in commands if "huey_consumer" in c or "_job_runner" in c], commands
    environ = Path(f"/proc/{record['pid']}/environ").read_bytes().split(b"\0")
    assert b"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in environ

    started = time.monotonic()
    down = run(workdir, "mlflow.down")
    took = time.monotonic() - started
    assert down.returncode == 0, down.stdout + down.stderr
    assert all(gone(pid) for pid in tree)
    assert took < 3, f"mlflow.down took {took:.1f}s"
