"""Interrupted runs converge: Ctrl-C or SIGTERM in the middle of `up`, then `up` or `down` again;
two `up` runs at once on one namespace."""

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import CLI

ONLY = ("--only", "mlflow,dask")


def start_up(session) -> subprocess.Popen:
    return subprocess.Popen(
        [CLI, "up", *ONLY],
        cwd=session.tmp,
        env=session.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_line(process: subprocess.Popen, needle: str, timeout: float = 90) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"never printed {needle!r}: {''.join(seen)}")


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_up_then_up_converges(session, how):
    session.cluster.kubelet.ignored_namespaces.add(session.namespace)  # the rollout stays pending
    process = start_up(session)
    wait_for_line(process, "available")
    started = time.monotonic()
    process.send_signal(how)
    process.wait(timeout=30)
    assert process.returncode != 0
    assert time.monotonic() - started < 10, "an interrupted wait stops promptly, not at its deadline"
    session.cluster.kubelet.ignored_namespaces.discard(session.namespace)
    again = session.run("up", *ONLY)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ready after" in again.stdout
    assert len([n for n in session.labelled() if n.startswith("deployment")]) == 3


def test_interrupted_up_then_down_removes_everything(session):
    session.cluster.kubelet.ignored_namespaces.add(session.namespace)
    process = start_up(session)
    wait_for_line(process, "available")
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    down = session.run("down", "--purge")
    assert down.returncode == 0, down.stdout + down.stderr
    assert session.labelled() == []


def test_two_concurrent_ups_end_consistent(session):
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: session.run("mlflow.up"), range(2)))
    assert all(r.returncode == 0 for r in results), [r.stdout + r.stderr for r in results]
    names = session.labelled()
    assert len(names) == len(set(names)) == 6
    pods = session.cluster.kubectl(
        "get", "pods", "-n", session.namespace, "-l", "app.kubernetes.io/name=mlflow", "-o", "name"
    ).stdout.split()
    assert len(pods) == 1
