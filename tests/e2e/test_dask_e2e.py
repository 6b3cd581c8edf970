"""dask.up / scale / status / smoke --in-cluster / down against a real API server, in both modes."""

import json
import time

MEDIUM_QUOTA = """
apiVersion: v1
kind: ResourceQuota
metadata: {{name: medium, namespace: {ns}}}
spec:
  hard: {{limits.cpu: "{cpu}", limits.memory: "{memory}"}}
"""


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def worker_replicas(session) -> int:
    return session.objects()["Deployment/dask-worker"]["spec"]["replicas"]


def set_quota(session, cpu: str, memory: str) -> None:
    session.cluster.kubectl("apply", "-f", "-", stdin=MEDIUM_QUOTA.format(ns=session.namespace, cpu=cpu, memory=memory))
    # Admission refuses every pod until the quota controller has filled in the status.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        quota = json.loads(
            session.cluster.kubectl("get", "resourcequota", "medium", "-n", session.namespace, "-o", "json").stdout
        )
        if quota.get("status", {}).get("hard"):
            return
        time.sleep(0.5)
    raise TimeoutError("the quota controller did not fill in the quota's status within 30s")


def test_up_scale_up_keeps_the_count_and_down_removes_all(session):
    first = ok(session.run("dask.up"))
    assert "dask: 2 worker(s) (dask.workers)" in first.stdout
    assert "dask/dask-scheduler: ready after" in first.stdout and "dask/dask-worker: ready after" in first.stdout
    assert f"tcp://dask-scheduler.{session.namespace}.svc:8786" in first.stdout
    assert set(session.objects()) == {"Service/dask-scheduler", "Deployment/dask-scheduler", "Deployment/dask-worker"}
    assert worker_replicas(session) == 2
    assert "dask: no change" in ok(session.run("dask.up")).stdout

    scaled = ok(session.run("dask.scale", "3"))
    assert "dask/workers: ready after" in scaled.stdout
    assert worker_replicas(session) == 3

    again = ok(session.run("dask.up"))
    assert "3 worker(s) (kept from the running cluster; pass --workers to change)" in again.stdout
    assert "dask: no change" in again.stdout
    assert worker_replicas(session) == 3

    ok(session.run("dask.up", "--workers", "1"))
    assert worker_replicas(session) == 1
    assert "dask: scheduler ready (1/1), workers ready (1/1)" in ok(session.run("dask.status")).stdout

    ok(session.run("dask.down"))
    assert session.labelled() == []
    assert "nothing deployed" in ok(session.run("dask.down")).stdout


def test_dry_run_changes_nothing(session):
    dry = ok(session.run("dask.up", "--dry-run", "--workers", "4"))
    assert "apply --server-side --field-manager=datalab-playbooks" in dry.stdout and "kind: Deployment" in dry.stdout
    assert session.labelled() == []
    ok(session.run("dask.up"))
    dry_scale = ok(session.run("dask.scale", "5", "--dry-run"))
    assert "scale deployment/dask-worker --replicas=5" in dry_scale.stdout
    assert worker_replicas(session) == 2


def test_scale_of_nothing_names_the_fix(session):
    result = session.run("dask.scale", "3")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: dask 'dask' is not deployed in namespace {session.namespace}: run `invoke dask.up`"
    )


def test_mlflow_dask_and_the_smoke_job_fit_the_medium_quota(session):
    set_quota(session, "2", "2Gi")
    ok(session.run("mlflow.up"))
    ok(session.run("dask.up"))
    used = json.loads(
        session.cluster.kubectl("get", "resourcequota", "medium", "-n", session.namespace, "-o", "json").stdout
    )
    assert used["spec"]["hard"] == {"limits.cpu": "2", "limits.memory": "2Gi"}
    # No real kubelet: the Job's pod is admitted but prints nothing, so no report can pass.
    # (The short deadline ends it should the fake kubelet leave it running.)
    smoke = session.run(
        "dask.smoke", "--in-cluster", "--timeout", "2",
        env={"INVOKE_DASK_SMOKE_JOB_TIMEOUT": "6"},
    )  # fmt: skip
    assert smoke.returncode == 1
    assert "dask: checking tcp://dask-scheduler:8786 from a Job in the cluster" in smoke.stdout
    assert "dask-smoke-" in smoke.stdout  # a pod got past the quota
    assert "exceeded quota" not in smoke.stdout
    assert "FAIL in-cluster job" in smoke.stdout and "the Job printed no report" in smoke.stdout
    assert session.labelled("app.kubernetes.io/name=dask-smoke") == []


def test_a_rollout_needs_no_room_beyond_the_quota_and_a_job_over_it_is_refused_before_writing(session):
    # Room for the defaults (1.2 CPU, 1152Mi) and larger workers, but not for a surge pod or the smoke Job.
    set_quota(session, "1.3", "1280Mi")
    ok(session.run("dask.up"))
    bigger = ok(session.run("dask.up", "--worker-memory", "500Mi"))
    assert "dask/dask-worker: ready after" in bigger.stdout
    worker = session.objects()["Deployment/dask-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["args"][worker["args"].index("--memory-limit") + 1] == str(500 * 2**20)

    # The Job's pod would be refused (FailedCreate, exceeded quota): the quota preflight says so
    # before the Job is written, with the figures.
    started = time.monotonic()
    smoke = session.run("dask.smoke", "--in-cluster", "--timeout", "30")
    assert smoke.returncode == 1
    line = smoke.stderr.strip()
    assert "\n" not in line and line.startswith(
        f"error: dask.smoke --in-cluster does not fit the quota of namespace {session.namespace}: "
    ), line
    assert "limits.cpu needs 250m more, 100m of 1300m left (quota medium)" in line
    assert "limits.memory needs 128Mi more, 24Mi of 1280Mi left (quota medium)" in line
    assert time.monotonic() - started < 60
    assert session.labelled("app.kubernetes.io/name=dask-smoke") == []
