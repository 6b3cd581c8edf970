"""Every service on real pods, in both modes: up, smoke, a user's own client, down keeps data, up reads
it back, down --purge leaves nothing; memory within limits; waits that stop early and say why.

These need a cluster whose pods run (the real-node lab, found automatically; or --provider
existing/kind) and the images the defaults name, loaded on its node. Without them they skip
with one line.
"""

from __future__ import annotations

import contextlib
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


def memory_sampler(session) -> lab.MemorySampler | None:
    """The peak working set of every container of the session's pods, sampled from the node's cgroups while the
    test runs; only on the lab, whose node is this machine."""
    if session.cluster.provider != "lab":
        return None

    def pods() -> list[dict]:
        listed = session.cluster.kubectl("get", "pods", "-n", session.namespace, "-o", "json")
        return json.loads(listed.stdout)["items"]

    return lab.MemorySampler(pods)


def assert_headroom(sampler: lab.MemorySampler | None) -> None:
    """Each pod peaks at or below HEADROOM of its memory limit, counted as the kubelet and the OOM killer
    count it: the working set (usage - inactive file cache). The page-cache-inclusive peak is printed beside it."""
    if sampler is None:
        return
    rows = sampler.rows()
    print("\n".join(row.row() for row in rows))
    # The pods of our Deployments (name-<ReplicaSet hash>-<suffix>; a Gateway cluster's pods have a 32-hex name).
    ours = [
        row for row in rows if re.match(r"^(mlflow|dask-scheduler|dask-worker)-[a-z0-9]{6,10}-[a-z0-9]{5}$", row.pod)
    ]
    assert {row.pod.rsplit("-", 2)[0] for row in ours} >= {"mlflow", "dask-scheduler", "dask-worker"}, rows
    # Sampled all the while they ran (every 0.5 s), not read once at the end.
    assert all(row.samples >= 10 for row in ours), [row.row() for row in ours]
    # Every pod of the session's namespace is the playbooks' (the smoke Jobs, the Gateway and its clusters too).
    over = [row.row() for row in rows if row.limit and row.ratio > HEADROOM]
    assert not over, f"working set above {HEADROOM:.0%} of the memory limit: {over}"


def test_every_service_end_to_end_on_real_pods(real_session):
    """The whole path for every service the mode allows, and the memory each pod took on the way."""
    session = real_session
    need_images(session, CORE_IMAGES + (GATEWAY_IMAGES if session.mode == "vcluster" else []))
    if session.mode == "vcluster":
        session.env["INVOKE_GATEWAY_CHART"] = str(gateway_chart())
    sampler = memory_sampler(session)
    try:
        with sampler or contextlib.nullcontext():
            up = session.run("up", timeout=900)
            assert up.returncode == 0, up.stdout + up.stderr
            smoke = session.run("smoke", timeout=900)
            assert smoke.returncode == 0, smoke.stdout + smoke.stderr
            table = {
                line.split()[0]: line
                for line in smoke.stdout.splitlines()
                if re.match(r"^[\w-]+\s+(PASS|FAIL)\b", line)
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
        assert_headroom(sampler)

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


def fake_container(folder: Path, version: int, usage: int, inactive: int, peak: int, limit: int) -> None:
    """A container's memory cgroup as the kernel shows it, in bytes (v1: a hybrid host like the lab's node)."""
    folder.mkdir(parents=True, exist_ok=True)
    if version == 1:
        stat = f"cache {inactive}\ntotal_cache {inactive + 5}\ninactive_file 1\ntotal_inactive_file {inactive}\n"
        files = {"memory.usage_in_bytes": usage, "memory.max_usage_in_bytes": peak, "memory.limit_in_bytes": limit}
    else:
        stat = f"file {inactive + 5}\ninactive_file {inactive}\nactive_file 5\n"
        files = {"memory.current": usage, "memory.peak": peak, "memory.max": limit or "max"}
    # Each file replaced whole, as the kernel shows it: a sampler thread must never read one half-written.
    for name, text in {"memory.stat": stat, **{name: f"{value}\n" for name, value in files.items()}}.items():
        (folder / f".{name}.new").write_text(text)
        (folder / f".{name}.new").replace(folder / name)


@pytest.mark.parametrize("version", [1, 2])
def test_the_sampler_keeps_the_largest_working_set_not_the_page_cache(tmp_path, version):
    """No cluster needed: a fake cgroup tree. The working set is usage - inactive file cache, its largest sample is
    kept, a restarted container's cgroups count under its name, and the cache-inclusive peak is reported beside."""
    mib = 2**20
    if version == 1:
        (tmp_path / "memory").mkdir()
        (tmp_path / "memory" / "memory.usage_in_bytes").write_text("0\n")
        pods = tmp_path / "memory" / "kubepods"
    else:
        (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        pods = tmp_path / "kubepods"
    pod = pods / "burstable" / "poduid-1"
    spec = {"containers": [{"name": "mlflow", "resources": {"limits": {"memory": "768Mi"}}}]}
    status = {"containerStatuses": [{"name": "mlflow", "containerID": "containerd://c1"}]}
    listed = [{"metadata": {"name": "mlflow-abc-xyz", "uid": "uid-1"}, "spec": spec, "status": status}]
    sampler = lab.MemorySampler(lambda: listed, root=tmp_path)
    assert sampler.version == version

    fake_container(pod / "c1", version, usage=500 * mib, inactive=100 * mib, peak=520 * mib, limit=768 * mib)
    fake_container(pod / "sandbox", version, usage=mib, inactive=0, peak=mib, limit=0)
    sampler._list()
    sampler.sample()  # working set 400Mi
    fake_container(pod / "c1", version, usage=760 * mib, inactive=560 * mib, peak=766 * mib, limit=768 * mib)
    sampler.sample()  # page cache filled up: working set 200Mi, usage near the limit
    [row] = sampler.rows()  # the sandbox is no container of the pod's: not reported
    assert (row.pod, row.container, row.limit) == ("mlflow-abc-xyz", "mlflow", 768 * mib)
    assert (row.working_set, row.peak, row.samples) == (400 * mib, 766 * mib, 3)
    assert row.ratio == pytest.approx(400 / 768) and row.peak_ratio == pytest.approx(766 / 768)

    # OOM-killed and restarted: the old container's peak still counts under its name.
    status["containerStatuses"] = [
        {
            "name": "mlflow",
            "containerID": "containerd://c2",
            "lastState": {"terminated": {"containerID": "containerd://c1"}},
        }
    ]
    fake_container(pod / "c2", version, usage=300 * mib, inactive=0, peak=300 * mib, limit=768 * mib)
    [row] = sampler.rows()
    assert (row.working_set, row.peak, row.samples) == (400 * mib, 766 * mib, 5)

    # In a thread: the samples keep coming until it stops.
    with lab.MemorySampler(lambda: listed, interval=0.01, root=tmp_path) as running:
        fake_container(pod / "c2", version, usage=700 * mib, inactive=10 * mib, peak=700 * mib, limit=768 * mib)
        deadline = time.monotonic() + 10
        while running.peaks.get(("uid-1", "c2"), [0])[0] < 690 * mib and time.monotonic() < deadline:
            time.sleep(0.01)
        fake_container(pod / "c2", version, usage=100 * mib, inactive=10 * mib, peak=700 * mib, limit=768 * mib)
    assert next(row for row in running.rows()).working_set == 690 * mib


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
