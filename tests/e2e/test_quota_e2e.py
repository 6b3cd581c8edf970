"""Quota preflight against a real ResourceQuota like a Datalab's `medium` budget."""

import time

MEDIUM = """
apiVersion: v1
kind: ResourceQuota
metadata: {name: medium}
spec:
  hard: {limits.cpu: "2", limits.memory: 2Gi, services: "10", secrets: "25", persistentvolumeclaims: "6"}
"""


def test_a_plan_over_the_quota_is_refused_before_any_write(session):
    session.cluster.kubectl("apply", "-n", session.namespace, "-f", "-", stdin=MEDIUM)
    refused = session.run("up", "--only", "mlflow,dask", "--workers", "4")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    line = refused.stderr.strip()
    assert "\n" not in line and "does not fit the quota of namespace" in line
    assert "limits.cpu needs 2700m more" in line and "limits.memory needs 2816Mi more" in line
    assert session.labelled() == []

    fits = session.run("up", "--only", "mlflow,dask")
    assert fits.returncode == 0, fits.stdout + fits.stderr
    again = session.run("up", "--only", "mlflow,dask")
    assert again.returncode == 0 and "quota" not in again.stdout, "an unchanged plan needs no quota check"


def test_every_shortfall_is_listed_at_once_before_any_write(session):
    """Quota, bucket and tools fail together: one line names them all; nothing is applied."""
    session.cluster.kubectl("apply", "-n", session.namespace, "-f", "-", stdin=MEDIUM)
    old = session.tmp / "old-kubectl"
    old.write_text(
        "#!/bin/sh\n"
        """[ "$1 $2" = "version --client" ] && { echo '{"clientVersion": {"major": "1", "minor": "20", "gitVersion": "v1.20.0"}}'; exit 0; }\n"""
        'exec kubectl "$@"\n'
    )
    old.chmod(0o755)
    refused = session.run(
        "up", "--only", "mlflow,dask", "--workers", "4", "--bucket", "ws-missing",
        env={"INVOKE_TOOLS_KUBECTL": str(old)},
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    line = refused.stderr.strip()
    assert "\n" not in line and line.startswith("error: 3 problems, nothing was changed: (1) "), line
    assert "kubectl 1.20.0" in line and "too old" in line
    assert "bucket ws-missing does not exist" in line
    assert "does not fit the quota of namespace" in line
    assert session.labelled() == []


# 1.8 CPU: MLflow and Dask with their defaults (1.7 CPU) fit; a third worker (500m) or the
# in-cluster smoke Job (250m) does not.
BUDGET = """
apiVersion: v1
kind: ResourceQuota
metadata: {name: budget}
spec:
  hard: {limits.cpu: 1800m, limits.memory: 3Gi}
"""


def used_cpu(session) -> str:
    out = session.cluster.kubectl(
        "get", "resourcequota/budget", "-n", session.namespace, "-o", "jsonpath={.status.used.limits\\.cpu}"
    )
    return out.stdout.strip()


def worker_replicas(session) -> int:
    out = session.cluster.kubectl(
        "get", "deployment/dask-worker", "-n", session.namespace, "-o", "jsonpath={.spec.replicas}"
    )
    return int(out.stdout)


def test_every_task_that_adds_pods_checks_the_quota_before_writing(session):
    """dask.scale, dask.up --workers and dask.smoke --in-cluster: refused in one line with the figures,
    net of what runs; nothing changed. (dask.scale used to run `kubectl scale` and leave the
    ReplicaSet failing with FailedCreate, exceeded quota.)"""
    session.cluster.kubectl("apply", "-n", session.namespace, "-f", "-", stdin=BUDGET)
    up = session.run("up", "--only", "mlflow,dask")
    assert up.returncode == 0, up.stdout + up.stderr
    before = session.labelled()
    ns = session.namespace

    scale = session.run("dask.scale", "3")
    assert scale.returncode == 1, scale.stdout + scale.stderr
    assert scale.stderr.strip() == (
        f"error: dask.scale 3 does not fit the quota of namespace {ns}: limits.cpu needs 500m more, 100m of 1800m left "
        "(quota budget); lower the resources or the worker count, or take something down first"
    ), scale.stderr
    assert worker_replicas(session) == 2

    more = session.run("dask.up", "--workers", "3")
    assert more.returncode == 1, more.stdout + more.stderr
    line = more.stderr.strip()
    assert "\n" not in line and line.startswith(
        f"error: the plan does not fit the quota of namespace {ns}: limits.cpu needs 500m more, 100m of 1800m left (quota budget)"
    ), line
    assert worker_replicas(session) == 2

    smoke = session.run("dask.smoke", "--in-cluster")
    assert smoke.returncode == 1, smoke.stdout + smoke.stderr
    line = smoke.stderr.strip()
    assert "\n" not in line and line.startswith(
        f"error: dask.smoke --in-cluster does not fit the quota of namespace {ns}: limits.cpu needs 250m more, 100m of 1800m left (quota budget)"
    ), line
    assert session.labelled() == before, "a refused task wrote something"

    # Fewer workers always fit; once the quota counts the room freed (as kube's own admission
    # does, from the quota's status), going back to 2 fits again.
    fewer = session.run("dask.scale", "1")
    assert fewer.returncode == 0, fewer.stdout + fewer.stderr
    deadline = time.monotonic() + 60
    while used_cpu(session) != "1200m" and time.monotonic() < deadline:
        time.sleep(0.5)
    back = session.run("dask.scale", "2")
    assert back.returncode == 0, back.stdout + back.stderr
    assert worker_replicas(session) == 2
