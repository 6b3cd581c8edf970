"""A port-forward that drops during a smoke check: one retry through a new forward, then a report
that names the drop.

kubectl is tests/forward_kubectl.py: its port-forward is a real TCP forward to a real server
(`mlflow server` with moto S3, a dask scheduler with a worker) that drops as a kubectl whose
pod went away does: "error: lost connection to pod" on stderr, exit 1, every connection closed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from invoke import Context

from playbooks.backends import ClusterBackend
from playbooks.services import dask, mlflow
from tests.manifests import config, target

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
LOST = "error: lost connection to pod"


class FakeKubectl:
    def __init__(self, folder: Path, monkeypatch):
        self.folder = folder
        self.script = folder / "kubectl"
        self.script.write_text(f'#!/bin/sh\nexec {sys.executable} {ROOT / "tests" / "forward_kubectl.py"} "$@"\n')
        self.script.chmod(0o755)
        monkeypatch.setenv("FORWARD_DIR", str(folder))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    def plan(self, upstream: dict[str, int], drops: list, items: list[dict]) -> None:
        (self.folder / "plan.json").write_text(
            json.dumps({"upstream": upstream, "drops": drops, "get": {"kind": "List", "items": items}})
        )

    def forwards(self) -> list[str]:
        log = self.folder / "forwards.log"
        return log.read_text().splitlines() if log.exists() else []

    def context(self) -> Context:
        return Context(config=config({"tools": {"kubectl": str(self.script)}}))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return FakeKubectl(tmp_path, monkeypatch)


def deployment(name: str, labels: dict, args: list[str] | None = None) -> dict:
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "main", "args": args or []}]}}},
    }


def port(url: str) -> int:
    return int(url.rpartition(":")[2])


def mlflow_smoke(fake, server, drops: list, monkeypatch, s3_server):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    args = ["--artifacts-destination", f"s3://{server.bucket}/{server.prefix}"]
    labels = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow"}
    fake.plan({"mlflow": port(server.url)}, drops, [deployment("mlflow", labels, args)])
    c = fake.context()
    found = target("namespace")
    return mlflow.SERVICE_SPEC.cluster.smoke_reports(ClusterBackend.on(c, found), name="mlflow")


def test_a_forward_dropped_mid_check_is_retried_once_and_the_check_passes(
    fake, mlflow_server, s3_server, monkeypatch, capsys
):
    [report] = mlflow_smoke(fake, mlflow_server, [3], monkeypatch, s3_server)
    out = capsys.readouterr().out
    assert report.ok, out
    assert fake.forwards() == ["mlflow:5000", "mlflow:5000"]
    assert f"mlflow: port-forward to service/mlflow dropped: {LOST}; trying once more through a new port-forward" in out
    assert out.count("mlflow: checking http://127.0.0.1:") == 2
    assert "ok   artifact in bucket" in out, "the second attempt runs the whole check"


def test_a_forward_that_drops_twice_fails_the_report_with_kubectls_reason(
    fake, mlflow_server, s3_server, monkeypatch, capsys
):
    [report] = mlflow_smoke(fake, mlflow_server, [3, 3], monkeypatch, s3_server)
    out = capsys.readouterr().out
    assert not report.ok
    assert fake.forwards() == ["mlflow:5000", "mlflow:5000"], "one retry, not more"
    assert report.failure.endswith(f": port-forward to service/mlflow dropped: {LOST}"), report.failure
    assert "mlflow: FAIL" in out and f"dropped: {LOST}" in report.render()


def test_a_check_that_fails_through_a_healthy_forward_is_not_retried(
    fake, strict_mlflow_server, s3_server, monkeypatch, capsys
):
    [report] = mlflow_smoke(fake, strict_mlflow_server, [], monkeypatch, s3_server)
    assert not report.ok
    assert "Invalid Host header" in report.failure, report.failure
    assert fake.forwards() == ["mlflow:5000"]
    assert "trying once more" not in capsys.readouterr().out


def test_dask_check_gets_the_same_retry(fake, dask_cluster, capsys):
    labels = {"app.kubernetes.io/name": "dask", "app.kubernetes.io/instance": "dask"}
    items = [
        deployment(f"dask-{part}", {**labels, "app.kubernetes.io/component": part}) for part in ("scheduler", "worker")
    ]
    fake.plan({"dask-scheduler": port(dask_cluster.address)}, [4], items)
    c = fake.context()
    found = target("namespace")
    [report] = dask.SERVICE_SPEC.cluster.smoke_reports(ClusterBackend.on(c, found), name="dask", timeout=30)
    out = capsys.readouterr().out
    assert report.ok, out
    assert fake.forwards() == ["dask-scheduler:8786", "dask-scheduler:8786"]
    assert f"dask: port-forward to service/dask-scheduler dropped: {LOST}; trying once more" in out
