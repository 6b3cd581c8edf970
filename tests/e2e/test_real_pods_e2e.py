"""Every service on real pods, in both modes: up, smoke, a user's own client, down keeps data, up reads
it back, down --purge leaves nothing; memory within limits; waits that stop early and say why.

These need a cluster whose pods run (the real-node lab, found automatically; or --provider
existing/kind) and the images the defaults name, loaded on its node. Without them they skip
with one line.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from playbooks import defaults
from tests.e2e import lab
from tests.e2e.user_clients import (
    DASK_GROUPBY,
    GROUPBY_SUMS,
    LOG_A_RUN,
    READ_A_RUN,
    forward,
    user_python,
)

# Real pods start in tens of seconds on a busy 2-core node: far beyond the suite's default timeout.
pytestmark = pytest.mark.timeout(1800)
GATEWAY_IMAGES = [defaults.DEFAULTS["gateway"][key] for key in ("server_image", "backend_image", "traefik_image")]
CORE_IMAGES = [defaults.DEFAULTS["mlflow"]["image"], defaults.DEFAULTS["dask"]["image"]]
HEADROOM = 0.8  # every pod of ours peaks at or below 80 % of its memory limit


def need_images(session, images: list[str]) -> None:
    if session.cluster.provider != "lab":
        return
    missing = lab.missing_images(images)
    if missing:
        pytest.skip(
            f"real pods: the lab's node lacks {', '.join(missing)}: build them with shared/lab/images/datalab-images.sh"
        )


def gateway_chart() -> Path:
    """The real dask/dask-gateway chart (never committed): PLAYBOOKS_GATEWAY_CHART, else LAB_DIR/charts/dask-gateway."""
    chart = Path(os.environ.get("PLAYBOOKS_GATEWAY_CHART") or lab.lab_dir() / "charts" / "dask-gateway")
    if not (chart / "Chart.yaml").is_file():
        pytest.skip(
            f"real pods: no dask-gateway chart at {chart}: extract resources/helm/dask-gateway of dask/dask-gateway 2026.3.0 there"
        )
    return chart


def pod_memory(session) -> list[lab.ContainerMemory]:
    pods = json.loads(session.cluster.kubectl("get", "pods", "-n", session.namespace, "-o", "json").stdout)["items"]
    return lab.container_memory(pods)


def assert_headroom(session) -> None:
    if session.cluster.provider != "lab":
        return  # the cgroups are read on the node: only the lab's node is this machine
    rows = pod_memory(session)
    print("\n".join(row.row() for row in rows))
    ours = [row for row in rows if row.pod.startswith(("mlflow-", "dask-scheduler-", "dask-worker-"))]
    assert {row.pod.rsplit("-", 2)[0] for row in ours} >= {"mlflow", "dask-scheduler", "dask-worker"}, rows
    over = [row.row() for row in ours if row.limit and row.ratio > HEADROOM]
    assert not over, f"above {HEADROOM:.0%} of the memory limit: {over}"


def test_every_service_end_to_end_on_real_pods(real_session):
    """The whole path for every service the mode allows, and the memory each pod took on the way."""
    session = real_session
    need_images(session, CORE_IMAGES + (GATEWAY_IMAGES if session.mode == "vcluster" else []))
    if session.mode == "vcluster":
        session.env["INVOKE_GATEWAY_CHART"] = str(gateway_chart())
    try:
        up = session.run("up", timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        smoke = session.run("smoke", timeout=900)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        table = {
            line.split()[0]: line for line in smoke.stdout.splitlines() if re.match(r"^[\w-]+\s+(PASS|FAIL)\b", line)
        }
        expected = {"mlflow", "dask", "dask-gateway"} if session.mode == "vcluster" else {"mlflow", "dask"}
        assert set(table) == expected and all(" PASS " in row for row in table.values()), smoke.stdout

        in_cluster = session.run("dask.smoke", "--in-cluster", timeout=600)
        assert in_cluster.returncode == 0, in_cluster.stdout + in_cluster.stderr

        with forward(session.kubeconfig, session.namespace, "mlflow", 5000) as port:
            run_id = user_python(session.env, LOG_A_RUN, f"http://127.0.0.1:{port}")
        with forward(session.kubeconfig, session.namespace, "dask-scheduler", 8786) as port:
            sums = json.loads(user_python(session.env, DASK_GROUPBY, f"tcp://127.0.0.1:{port}"))
        assert sums == GROUPBY_SUMS
        artifact = (
            session.s3.client().list_objects_v2(Bucket=session.s3.bucket, Prefix="mlflow/") if session.s3 else None
        )
        assert artifact is None or any(
            o["Key"].endswith(f"{run_id}/artifacts/notes/hello.txt") for o in artifact["Contents"]
        )

        assert_headroom(session)

        down = session.run("down", timeout=600)
        assert down.returncode == 0, down.stdout + down.stderr
        assert session.labelled() == ["persistentvolumeclaim/mlflow-db"]

        again = session.run("up", "--only", "mlflow", timeout=900)
        assert again.returncode == 0, again.stdout + again.stderr
        with forward(session.kubeconfig, session.namespace, "mlflow", 5000) as port:
            kept = json.loads(user_python(session.env, READ_A_RUN, f"http://127.0.0.1:{port}", run_id))
        assert kept == {"params": {"alpha": "0.5"}, "metrics": {"rmse": 0.25}, "text": "kept across down and up"}
    finally:
        purge = session.run("down", "--purge", timeout=600)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert session.labelled() == []
    if session.mode == "vcluster":
        assert "dask-gateway" not in session.cluster.kubectl("get", "crd", "-o", "name").stdout


def write_config(session, config: dict) -> None:
    (session.tmp / "invoke.yaml").write_text(yaml.safe_dump(config))


def failed_fast(result, started: float, limit: float, *fragments: str) -> str:
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error[0], error[0]
    assert elapsed < limit, f"took {elapsed:.0f}s: {error[0]}"
    print(f"{elapsed:.0f}s: {error[0]}")
    return error[0]


@pytest.mark.parametrize("real_session", ["namespace"], indirect=True)
def test_an_oom_killed_server_fails_fast_naming_the_limit(real_session):
    session = real_session
    need_images(session, CORE_IMAGES)
    write_config(
        session,
        {
            "mlflow": {
                "resources": {
                    "requests": {"cpu": "100m", "memory": "96Mi"},
                    "limits": {"cpu": "500m", "memory": "96Mi"},
                }
            }
        },
    )
    started = time.monotonic()
    result = session.run("mlflow.up", timeout=400)
    failed_fast(result, started, 150, "OOMKilled", "96Mi", "mlflow.resources")


@pytest.mark.parametrize("real_session", ["vcluster"], indirect=True)
def test_an_image_the_node_cannot_pull_fails_fast(real_session):
    session = real_session
    session.env["INVOKE_DASK_IMAGE"] = "registry.invalid/no-such/dask:0.0.1"
    started = time.monotonic()
    result = session.run("dask.up", timeout=400)
    failed_fast(result, started, 90, "registry.invalid/no-such/dask:0.0.1")


@pytest.mark.parametrize("real_session", ["namespace"], indirect=True)
def test_a_replicaset_stuck_on_quota_is_reported_not_waited_for(real_session):
    session = real_session
    need_images(session, CORE_IMAGES)
    first = session.run("dask.up", "--workers", "1", timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    # Someone scales past the quota by hand: the ReplicaSet cannot create the pods.
    session.cluster.kubectl("scale", "deployment/dask-worker", "--replicas=5", "-n", session.namespace)
    started = time.monotonic()
    result = session.run("dask.up", timeout=400)
    failed_fast(result, started, 90, "quota")
    refused = session.run("dask.scale", "6")
    assert refused.returncode == 1 and "quota" in refused.stderr, refused.stdout + refused.stderr


@pytest.mark.parametrize("real_session", ["vcluster"], indirect=True)
def test_pods_the_namespace_policy_refuses_fail_fast(real_session):
    session = real_session
    session.cluster.kubectl("label", "namespace", session.namespace, "pod-security.kubernetes.io/enforce=restricted")
    write_config(session, {"security": {"container": {"allowPrivilegeEscalation": True}}})
    started = time.monotonic()
    failed_fast(session.run("dask.up", timeout=400), started, 90, "PodSecurity")


@pytest.mark.parametrize("real_session", ["vcluster"], indirect=True)
def test_a_claim_no_provisioner_serves_fails_fast(real_session):
    session = real_session
    session.env["INVOKE_MLFLOW_STORAGE_CLASS"] = "no-such-class"
    started = time.monotonic()
    failed_fast(session.run("mlflow.up", timeout=400), started, 90, "mlflow-db", "no-such-class")


@pytest.mark.parametrize("real_session", ["vcluster"], indirect=True)
def test_pods_no_node_can_take_fail_fast(real_session):
    session = real_session
    write_config(
        session,
        {
            "dask": {
                "scheduler_resources": {
                    "requests": {"cpu": "64", "memory": "128Mi"},
                    "limits": {"cpu": "64", "memory": "256Mi"},
                }
            }
        },
    )
    started = time.monotonic()
    failed_fast(session.run("dask.up", "--workers", "0", timeout=400), started, 90, "Insufficient cpu")
