"""Faults during a rollout wait: the API server goes away and comes back, or stays away.

The wait must resume and succeed, or fail with one clear line by its deadline; never hang.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time

import pytest

from tests.e2e.conftest import CLI


class Running:
    """The CLI in the background; its output lines as they come, without ever blocking the test."""

    def __init__(self, session, *args: str, env: dict[str, str] | None = None):
        self.process = subprocess.Popen(
            [CLI, *args], cwd=session.tmp, env={**session.env, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr = ""
        self.ended: float | None = None  # time.monotonic() when it exited
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.process.wait()
        self.ended = time.monotonic()

    def wait_for(self, needle: str, timeout: float) -> float:
        """Wait until a stdout line contains needle; return when it came (time.monotonic())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.stdout.append(line)
            if needle in line:
                return time.monotonic()
        self.finish(5)
        raise AssertionError(f"never printed {needle!r}:\n{''.join(self.stdout)}{self.stderr}")

    def finish(self, timeout: float) -> int:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running after {timeout:.0f}s:\n{self.output}") from None
        finally:
            self.stderr = self.process.stderr.read()
            self.reader.join(10)
        return self.process.returncode

    @property
    def output(self) -> str:
        while not self.lines.empty():
            self.stdout.append(self.lines.get())
        return "".join(self.stdout) + self.stderr


@pytest.fixture
def plane(session):
    if session.cluster.plane is None:
        pytest.skip("restarting the API server needs the envtest provider")
    plane = session.cluster.plane
    yield plane
    # Whatever happened, later tests of this worker get a healthy API server.
    if not plane.ready():
        plane.start_apiserver()
    session.cluster.kubelet.ignored_namespaces.discard(session.namespace)


def test_rollout_wait_survives_an_api_server_restart(session, plane):
    session.cluster.kubelet.ignored_namespaces.add(session.namespace)  # the rollout waits for us
    up = Running(session, "mlflow.up")
    up.wait_for("mlflow: 0/1 available", 120)
    plane.stop_apiserver()
    up.wait_for("mlflow: not yet, API unreachable: cannot reach the Kubernetes API", 30)
    plane.start_apiserver()
    session.cluster.kubelet.ignored_namespaces.discard(session.namespace)
    up.wait_for("mlflow: ready after", 120)
    assert up.finish(30) == 0, up.output
    assert "Traceback" not in up.output
    status = session.run("mlflow.status")
    assert "mlflow: ready (1/1 replicas)" in status.stdout, status.stdout + status.stderr


def test_rollout_wait_fails_clearly_by_its_deadline_while_the_api_stays_down(session, plane):
    timeout = 12
    session.cluster.kubelet.ignored_namespaces.add(session.namespace)
    up = Running(session, "mlflow.up", env={"INVOKE_MLFLOW_ROLLOUT_TIMEOUT": str(timeout)})
    began = up.wait_for("mlflow: 0/1 available", 120)
    plane.stop_apiserver()
    code = up.finish(timeout + 30)
    assert code == 1, up.output
    assert up.ended - began <= timeout + 5, f"the wait took {up.ended - began:.0f}s for a {timeout}s deadline"
    assert "mlflow: not yet, API unreachable: cannot reach the Kubernetes API" in up.output
    errors = up.stderr.strip().splitlines()
    assert len(errors) == 1, up.stderr
    assert errors[0].startswith(f"error: mlflow: not ready within {timeout}s and the API is unreachable: ")
    assert f"cannot reach the Kubernetes API at {plane.server}" in errors[0]
    assert "evidence follows" not in up.output, "no evidence can be fetched from an API that is down"
    plane.start_apiserver()
    assert plane.ready()
