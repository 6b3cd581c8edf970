"""mlflow.up / status / down against a real API server, in both modes, as a session would run them."""

import pytest

SECRET_NEEDLES = ("s3cr3t-Pl4ybooks", "AKIAPLAYBOOKSTEST01")


def no_secrets(result):
    for needle in SECRET_NEEDLES:
        assert needle not in result.stdout and needle not in result.stderr


def test_up_is_idempotent_and_down_removes_what_up_made(session):
    first = session.run("mlflow.up")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"target: {session.mode} mode, namespace {session.namespace}" in first.stdout
    assert (
        "bucket from WORKSHOP_NAMESPACE" if not session.cluster.pods_run else "bucket from the storage service"
    ) in first.stdout
    assert "mlflow: applied changes" in first.stdout and "mlflow: ready after" in first.stdout
    no_secrets(first)
    objects = session.objects()
    assert set(objects) == {
        "Deployment/mlflow", "Service/mlflow", "Secret/mlflow-s3", "ConfigMap/mlflow-aws-config",
        "ConfigMap/mlflow-env", "PersistentVolumeClaim/mlflow-db",
    }  # fmt: skip
    versions = {k: v["metadata"]["resourceVersion"] for k, v in objects.items()}
    managers = {m["manager"] for m in objects["Deployment/mlflow"]["metadata"]["managedFields"]}
    assert "datalab-playbooks" in managers

    again = session.run("mlflow.up")
    assert again.returncode == 0, again.stderr
    assert "mlflow: no change" in again.stdout
    assert {k: v["metadata"]["resourceVersion"] for k, v in session.objects().items()} == versions

    status = session.run("mlflow.status")
    assert "mlflow: ready (1/1 replicas)" in status.stdout
    assert f"http://mlflow.{session.namespace}.svc:5000" in status.stdout

    down = session.run("mlflow.down")
    assert down.returncode == 0, down.stderr
    assert "kept persistentvolumeclaim/mlflow-db" in down.stdout
    assert session.labelled() == ["persistentvolumeclaim/mlflow-db"]

    purge = session.run("mlflow.down", "--purge")
    assert purge.returncode == 0 and "deleted persistentvolumeclaim/mlflow-db" in purge.stdout
    assert session.labelled() == []

    nothing = session.run("mlflow.down")
    assert nothing.returncode == 0 and "nothing deployed" in nothing.stdout


def test_changed_input_rolls_the_deployment(session):
    assert session.run("mlflow.up").returncode == 0
    generation = session.objects()["Deployment/mlflow"]["metadata"]["generation"]
    changed = session.run("mlflow.up", "--prefix", "elsewhere")
    assert changed.returncode == 0 and "applied changes" in changed.stdout
    deployment = session.objects()["Deployment/mlflow"]
    assert deployment["metadata"]["generation"] > generation
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"s3://{session.env['WORKSHOP_NAMESPACE']}/elsewhere" in args


def test_dry_run_touches_nothing_and_hides_secrets(session):
    result = session.run("mlflow.up", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "kind: Secret" in result.stdout and "<redacted>" in result.stdout
    assert "apply --server-side --field-manager=datalab-playbooks" in result.stdout
    no_secrets(result)
    assert session.labelled() == []
    assert session.run("mlflow.up").returncode == 0
    down = session.run("mlflow.down", "--purge", "--dry-run")
    assert down.returncode == 0 and "$ kubectl" in down.stdout
    assert len(session.labelled()) == 6


def test_stuck_rollout_fails_with_evidence_before_the_deadline(session):
    session.cluster.kubelet.ignored_namespaces.add(session.namespace)
    result = session.run("mlflow.up", env={"INVOKE_MLFLOW_ROLLOUT_TIMEOUT": "4"})
    assert result.returncode == 1
    assert "mlflow: not ready within 4s; evidence follows" in result.stdout
    assert "--- pods: kubectl get pods" in result.stdout and "--- events" in result.stdout
    assert result.stderr.strip().splitlines() == [
        "error: mlflow: not ready within 4s (see the evidence above); fix the cause or raise the timeout"
    ]
    no_secrets(result)


def test_target_reports_mode_and_rights(session):
    result = session.run("target")
    assert result.returncode == 0, result.stderr
    assert f"mode:       {session.mode}" in result.stdout
    assert f"namespace:  {session.namespace}" in result.stdout
    if session.mode == "namespace":
        assert "listing nodes is forbidden" in result.stdout
        assert "no  create customresourcedefinitions" in result.stdout
    else:
        assert "virtual nodes" in result.stdout
    assert f"yes create deployments.apps in {session.namespace}" in result.stdout


def test_namespace_mode_cannot_write_elsewhere(session):
    if session.mode != "namespace":
        pytest.skip("RBAC refusal is a namespace-mode property")
    session.cluster.kubectl("create", "namespace", f"{session.namespace}-other")
    result = session.run("mlflow.up", "--namespace", f"{session.namespace}-other")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "\n" not in line and "may not create" in line and "Traceback" not in result.stderr
    assert (
        session.cluster.kubectl(
            "get",
            "all,secrets,pvc,cm",
            "-n",
            f"{session.namespace}-other",
            "-l",
            "app.kubernetes.io/managed-by=datalab-playbooks",
            "-o",
            "name",
        ).stdout.strip()
        == ""
    )


def test_smoke_needs_running_pods(session):
    if not session.cluster.pods_run:
        pytest.skip("envtest has no kubelet: pods are only reported Ready, so a smoke check has nothing to talk to")
    assert session.run("mlflow.up").returncode == 0
    smoke = session.run("smoke")
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "PASS" in smoke.stdout
