"""Local mode, a crashed service: status says so, shows the end of its log, and down cleans up."""

from __future__ import annotations

import os
import signal
import time

import pytest

from playbooks.procs import http_ok
from tests.conftest import gone, state
from tests.test_local_mode import run

pytestmark = pytest.mark.slow


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_status_reports_a_killed_mlflow_with_its_log_and_down_stops_what_it_left(workdir):
    up = run(workdir, "mlflow.up")
    assert up.returncode == 0, up.stdout + up.stderr
    record = state(workdir, "mlflow")
    pid, url = record["pid"], f"http://127.0.0.1:{record['ports']['http']}"
    os.kill(pid, signal.SIGKILL)  # the recorded process only, as a crash would
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(pid)
    log = workdir / ".playbooks/local/mlflow/mlflow.log"
    last = log.read_text().splitlines()[-1]

    status = run(workdir, "mlflow.status")
    assert status.returncode == 1, status.stderr  # a crashed service fails its status
    assert f"mlflow: process {pid} is gone (crashed or killed)" in status.stdout
    assert f"mlflow: last lines of {log}:" in status.stdout and f"  {last}" in status.stdout
    # Its server process (uvicorn) outlived it and still answers on the port: status names it.
    assert http_ok(f"{url}/health")
    assert "mlflow: processes it started still run (pids " in status.stdout

    table = run(workdir, "status")
    assert table.returncode == 1, table.stderr
    assert "error: mlflow crashed (report above): run `invoke up` to start it again" in table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("mlflow "))
    assert f"process {pid} is gone (crashed or killed)" in row
    assert f"mlflow: last lines of {log}:" in table.stdout

    down = run(workdir, "mlflow.down")
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 15
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(pid), "down stops what the crashed process left running"
    assert not http_ok(f"{url}/health")
    assert "mlflow: not running" in run(workdir, "mlflow.status").stdout
