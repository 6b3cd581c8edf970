"""The Dask smoke check against a real `dask scheduler` and `dask worker` on 127.0.0.1."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from playbooks.dask_check import (
    decode_report,
    encode_report,
    run_check,
    version_problem,
    version_summary,
)
from playbooks.defaults import DASK_VERSION
from playbooks.errors import PlaybookError
from playbooks.procs import free_port, http_ok, start, stop_group, tcp_ok, wait_until
from playbooks.report import Report, Step
from playbooks.services.dask import hold_forward, smoke_code
from tests.conftest import QUIET_ENV, tool

STEPS = ["connect", "workers", "versions", "sum job", "array sum"]


@dataclass
class Scheduler:
    address: str
    log: Path


def start_scheduler(tmp: Path) -> tuple[subprocess.Popen, Scheduler]:
    port, dashboard = free_port(), free_port()
    log = tmp / "scheduler.log"
    argv = [
        tool("dask"),
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-address",
        f"127.0.0.1:{dashboard}",
    ]
    process = start(argv, {**os.environ, **QUIET_ENV}, log, cwd=tmp)
    try:
        wait_until(lambda: tcp_ok("127.0.0.1", port), 60, "dask scheduler", process, log)
    except BaseException:
        stop_group(process.pid)
        raise
    return process, Scheduler(f"tcp://127.0.0.1:{port}", log)


def start_worker(tmp: Path, scheduler: Scheduler) -> subprocess.Popen:
    http = free_port()
    log = tmp / "worker.log"
    argv = [
        tool("dask"), "worker", scheduler.address, "--host", "127.0.0.1", "--nthreads", "1",
        "--memory-limit", "512MiB", "--no-dashboard", "--dashboard-address", f"127.0.0.1:{http}",
        "--local-directory", str(tmp),
    ]  # fmt: skip
    process = start(argv, {**os.environ, **QUIET_ENV}, log, cwd=tmp)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{http}/health"), 60, "dask worker", process, log)
    except BaseException:
        stop_group(process.pid)
        raise
    return process


@pytest.fixture(scope="module")
def lonely_scheduler(tmp_path_factory):
    """A real scheduler that no worker ever joins."""
    process, scheduler = start_scheduler(tmp_path_factory.mktemp("dask-lonely"))
    yield scheduler
    stop_group(process.pid)


@pytest.mark.slow
def test_check_passes_against_a_real_cluster(dask_cluster):
    report = run_check(dask_cluster.address, timeout=60, service="dask-local")
    assert report.ok, report.render()
    assert [s.name for s in report.steps] == STEPS
    details = {s.name: s.detail for s in report.steps}
    assert details["connect"] == dask_cluster.address
    assert details["workers"] == "1 worker(s), 1 thread(s)"
    assert details["versions"].startswith(f"dask {DASK_VERSION}, distributed {DASK_VERSION}, python ")
    assert details["sum job"] == "sum(range(101)) = 5050"
    assert "1000000" in details["array sum"]
    assert report.render().startswith("dask-local: PASS in ")


@pytest.mark.slow
def test_no_worker_is_a_clear_failure_within_the_deadline(lonely_scheduler):
    started = time.monotonic()
    report = run_check(lonely_scheduler.address, timeout=3)
    elapsed = time.monotonic() - started
    assert not report.ok
    assert [s.name for s in report.steps] == ["connect", "workers"]
    assert report.failure == f"workers: no worker joined the scheduler at {lonely_scheduler.address} within 3s"
    assert elapsed < 10


@pytest.mark.slow
def test_too_few_workers_says_how_many_joined(dask_cluster):
    report = run_check(dask_cluster.address, timeout=3, min_workers=2)
    assert report.failure == f"workers: only 1 of 2 workers joined the scheduler at {dask_cluster.address} within 3s"


@pytest.mark.slow
def test_no_scheduler_is_a_clear_failure():
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    report = run_check(address, timeout=3)
    assert report.failure == f"connect: no Dask scheduler answers at {address} within 3s"
    assert time.monotonic() - started < 15


def run_shipped_check(
    tmp: Path, address: str, timeout: str, pythonpath: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess:
    """Run the check exactly as the in-cluster Job does: the ConfigMap's files, not the installed package."""
    package = tmp / "playbooks"
    package.mkdir()
    for name, text in smoke_code().items():
        (package / name).write_text(text)
    path = os.pathsep.join(map(str, (*pythonpath, tmp)))
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import playbooks.dask_check as m; print(m.__file__)"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert where.stdout.strip() == str(package / "dask_check.py")
    argv = [sys.executable, "-m", "playbooks.dask_check", address, "--timeout", timeout, "--service", "dask"]
    return subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_jobs_script_reports_through_its_logs(dask_cluster, tmp_path):
    result = run_shipped_check(tmp_path, dask_cluster.address, "60")
    assert result.returncode == 0, result.stderr
    report = decode_report(result.stdout + result.stderr)
    assert report is not None and report.ok
    assert [s.name for s in report.steps] == STEPS


@pytest.mark.slow
def test_a_client_without_numpy_fails_the_array_step_in_one_line_that_names_the_fix(dask_cluster, tmp_path):
    """`pip install datalab-playbooks` used to bring dask[distributed] without numpy: "No module named 'numpy'"."""
    blocker = tmp_path / "no-numpy"
    (blocker / "numpy").mkdir(parents=True)
    (blocker / "numpy" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'numpy'\", name='numpy')  # as if it were not installed\n"
    )
    run = tmp_path / "run"
    run.mkdir()
    result = run_shipped_check(run, dask_cluster.address, "60", pythonpath=(blocker,))
    assert result.returncode == 1, result.stdout + result.stderr
    report = decode_report(result.stdout)
    assert report is not None and [s.name for s in report.steps] == STEPS
    assert [s.ok for s in report.steps] == [True, True, True, True, False]
    assert report.failure == "array sum: numpy is not installed here, and dask.array needs it: pip install numpy"
    assert "Traceback" not in result.stderr


def test_the_core_install_brings_numpy_for_the_array_step():
    """pyproject's core dependency carries dask's `array` extra (numpy), as the release defines it."""
    import tomllib
    from importlib.metadata import metadata

    core = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"dask[array,distributed]=={DASK_VERSION}" in core
    dask = metadata("dask")
    assert dask["Version"] == DASK_VERSION and {"array", "distributed"} <= set(dask.get_all("Provides-Extra"))
    assert any(r.startswith("numpy") and 'extra == "array"' in r for r in dask.get_all("Requires-Dist"))


@pytest.mark.slow
def test_the_jobs_script_fails_with_exit_code_and_report(lonely_scheduler, tmp_path):
    result = run_shipped_check(tmp_path, lonely_scheduler.address, "3")
    assert result.returncode == 1
    report = decode_report(result.stdout)
    assert report is not None and not report.ok
    assert "no worker joined the scheduler" in report.failure


@pytest.mark.slow
def test_version_mismatch_is_one_line_naming_the_versions(dask_cluster):
    from distributed import Client

    with Client(dask_cluster.address, timeout=30, set_as_default=False) as client:
        client.wait_for_workers(1, timeout=30)
        real = client.get_versions()
    assert version_problem(real) is None
    skewed = copy.deepcopy(real)
    for worker in skewed["workers"].values():
        worker["packages"]["distributed"] = "2026.3.0"
    skewed["scheduler"]["packages"]["distributed"] = "2026.3.0"
    problem = version_problem(skewed)
    assert problem == (
        f"version mismatch: distributed client {DASK_VERSION}, scheduler 2026.3.0, workers 2026.3.0: "
        "pin the client to the image's release (dask.image) or change the image"
    )
    assert "\n" not in problem


def versions(client: dict, scheduler: dict, *workers: dict) -> dict:
    return {
        "client": {"packages": client},
        "scheduler": {"packages": scheduler},
        "workers": {f"tcp://10.0.0.{i}:8789": {"packages": w} for i, w in enumerate(workers, 1)},
    }


BASE = {
    "python": "3.11.7.final.0",
    "dask": "2026.8.0",
    "distributed": "2026.8.0",
    "cloudpickle": "3.1.1",
    "msgpack": "1.1.0",
    "numpy": "2.4.6",
}


def test_python_minor_skew_fails_but_micro_and_numpy_skew_are_only_shown():
    minor = versions(BASE, {**BASE, "python": "3.12.3.final.0"}, {**BASE, "python": "3.12.3.final.0"})
    assert version_problem(minor).startswith(
        "version mismatch: python client 3.11.7, scheduler 3.12.3, workers 3.12.3:"
    )
    micro = versions(BASE, {**BASE, "python": "3.11.9.final.0"}, {**BASE, "numpy": "2.3.0"}, BASE)
    assert version_problem(micro) is None
    summary = version_summary(micro)
    assert "numpy client 2.4.6, scheduler 2.4.6, workers 2.3.0/2.4.6" in summary
    assert "python client 3.11.7, scheduler 3.11.9, workers 3.11.7" in summary


def test_report_survives_the_trip_through_logs():
    report = Report(
        "dask", [Step("connect", True, 0.5, "tcp://x:8786"), Step("workers", False, 3.0, "no worker joined")]
    )
    logs = f"2026-11-26 INFO something\n{encode_report(report)}\ntrailing noise\n"
    assert decode_report(logs) == report
    assert decode_report("Traceback (most recent call last):\nOOM\n") is None


def test_dashboard_hold_ends_with_a_clear_error_when_the_forward_closes():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    threading.Timer(0.5, listener.close).start()
    started = time.monotonic()
    with pytest.raises(PlaybookError, match=r"port-forward to the dashboard closed: run `invoke dask.dashboard` again"):
        hold_forward(port, every=0.1)
    assert time.monotonic() - started < 5
