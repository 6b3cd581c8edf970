"""A port-forward that drops during a smoke check: one retry through a new forward, then a report
that names the drop.

kubectl is the strict fake (tests/fakes/kubectl.py): its port-forward is a real TCP forward to a
real server (`mlflow server` with moto S3, a dask scheduler with a worker) that drops as a kubectl
whose pod went away does: "error: lost connection to pod" on stderr, exit 1, every connection closed.
"""

from __future__ import annotations

import pytest
from invoke import Context

from playbooks.backends import ClusterBackend
from playbooks.services import dask, mlflow
from tests.fakes.kubectl import kube_list
from tests.manifests import config, target

pytestmark = pytest.mark.slow
LOST = "error: lost connection to pod"
FLAGS = ["--kubeconfig", "/dev/null", "--context", "ctx", "--namespace", "ws-frank-s1"]


@pytest.fixture
def fake(fake_kubectl, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    fake_kubectl.flags = FLAGS
    return fake_kubectl


def plan(fake, service: str, port: int, upstream: int, drops: list, deployments: dict[str, list[dict]]) -> None:
    """Each `get deployments.apps -l SELECTOR` answered, and the port-forwards expected, in order: each
    drops after so many chunks from the client (None: never). A port-forward more is unexpected."""
    for selector, items in deployments.items():
        fake.expect("get", "deployments.apps", "-o", "json", "-l", selector, stdout=kube_list(*items))
    for drop_after in drops:
        fake.expect("port-forward", "--address", "127.0.0.1", f"service/{service}", f":{port}", forward=upstream,
                    drop_after=drop_after, times=1)  # fmt: skip


def forwards(fake) -> list[str]:
    """service:port of each port-forward started, in order."""
    return [f"{c.args[3].removeprefix('service/')}{c.args[4]}" for c in fake.calls() if c.args[:1] == ["port-forward"]]


def context(fake) -> Context:
    return Context(config=config({"tools": {"kubectl": fake.path}}))


def deployment(name: str, labels: dict, args: list[str] | None = None) -> dict:
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "main", "args": args or []}]}}},
    }


def labels_selector(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def port(url: str) -> int:
    return int(url.rpartition(":")[2])


def mlflow_smoke(fake, server, drops: list, monkeypatch, s3_server):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    args = ["--artifacts-destination", f"s3://{server.bucket}/{server.prefix}"]
    labels = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow"}
    selector = f"app.kubernetes.io/managed-by=datalab-playbooks,{labels_selector(labels)}"
    plan(fake, "mlflow", 5000, port(server.url), drops, {selector: [deployment("mlflow", labels, args)]})
    c = context(fake)
    found = target("namespace")
    return mlflow.SERVICE_SPEC.cluster.smoke_reports(ClusterBackend.on(c, found), name="mlflow")


def test_a_forward_dropped_mid_check_is_retried_once_and_the_check_passes(
    fake, mlflow_server, s3_server, monkeypatch, capsys
):
    [report] = mlflow_smoke(fake, mlflow_server, [3, None], monkeypatch, s3_server)
    out = capsys.readouterr().out
    assert report.ok, out
    assert forwards(fake) == ["mlflow:5000", "mlflow:5000"]
    assert f"mlflow: port-forward to service/mlflow dropped: {LOST}; trying once more through a new port-forward" in out
    assert out.count("mlflow: checking http://127.0.0.1:") == 2
    assert "ok   artifact in bucket" in out, "the second attempt runs the whole check"


def test_a_forward_that_drops_twice_fails_the_report_with_kubectls_reason(
    fake, mlflow_server, s3_server, monkeypatch, capsys
):
    [report] = mlflow_smoke(fake, mlflow_server, [3, 3], monkeypatch, s3_server)
    out = capsys.readouterr().out
    assert not report.ok
    assert forwards(fake) == ["mlflow:5000", "mlflow:5000"], "one retry, not more"
    assert report.failure.endswith(f": port-forward to service/mlflow dropped: {LOST}"), report.failure
    assert "mlflow: FAIL" in out and f"dropped: {LOST}" in report.render()


def test_a_check_that_fails_through_a_healthy_forward_is_not_retried(
    fake, strict_mlflow_server, s3_server, monkeypatch, capsys
):
    [report] = mlflow_smoke(fake, strict_mlflow_server, [None], monkeypatch, s3_server)
    assert not report.ok
    assert "Invalid Host header" in report.failure, report.failure
    assert forwards(fake) == ["mlflow:5000"]
    assert "trying once more" not in capsys.readouterr().out


def test_dask_check_gets_the_same_retry(fake, dask_cluster, capsys):
    labels = {"app.kubernetes.io/name": "dask", "app.kubernetes.io/instance": "dask"}
    items = [
        deployment(f"dask-{part}", {**labels, "app.kubernetes.io/component": part}) for part in ("scheduler", "worker")
    ]
    selector = f"app.kubernetes.io/managed-by=datalab-playbooks,{labels_selector(labels)}"
    plan(fake, "dask-scheduler", 8786, port(dask_cluster.address), [4, None], {selector: items})
    c = context(fake)
    found = target("namespace")
    [report] = dask.SERVICE_SPEC.cluster.smoke_reports(ClusterBackend.on(c, found), name="dask", timeout=30)
    out = capsys.readouterr().out
    assert report.ok, out
    assert forwards(fake) == ["dask-scheduler:8786", "dask-scheduler:8786"]
    assert f"dask: port-forward to service/dask-scheduler dropped: {LOST}; trying once more" in out
