"""Secret scan over every cluster task, in both modes: the planted S3 keys, the store's generated
credentials, the gateway password and the session's token never reach a command line (sampled
from /proc while the tasks run), a task's output, or a --dry-run's manifests (Secrets redacted).

On envtest pods are only reported Ready and nothing runs: the smoke checks and `*.logs` run
(and are scanned) up to the port-forward or log read, which fails in one line; where pods run
(kind, existing) they pass. Left out: `dask.smoke --in-cluster` (a Job that never reports on
envtest, tests/e2e/test_dask_e2e.py) and `dask.dashboard` (a port-forward held until Ctrl-C).
"""

import base64
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.secret_scan import ArgvScan, output_texts, planted, text_leaks

REDACTED = "<redacted>"


@pytest.fixture
def scanned(all_services):
    """Every service installable, with planted S3 keys of its own."""
    session = all_services
    if "AWS_SECRET_ACCESS_KEY" in session.env:  # envtest: MLflow gets the test's S3 server
        session.env.update(planted(session.mode))
    return session


def secret_values(session, name: str) -> dict[str, str]:
    out = session.cluster.kubectl("get", "secret", name, "-n", session.namespace, "-o", "json")
    return {f"{name} {k}": base64.b64decode(v).decode() for k, v in (json.loads(out.stdout).get("data") or {}).items()}


def session_token(session) -> dict[str, str]:
    """The namespace session's ServiceAccount token (vCluster mode's is the admin token, which the
    envtest harness itself passes to kubectl on the command line)."""
    if session.mode != "namespace":
        return {}
    user = yaml.safe_load(Path(session.kubeconfig).read_text())["users"][0]["user"]
    return {"session token": user["token"]} if user.get("token") else {}


def rendered_secrets(output: str) -> list[dict]:
    """The Secrets among the manifests a --dry-run prints (`$ kubectl ... <<'EOF'` ... `EOF`)."""
    docs = []
    for chunk in re.findall(r"<<'EOF'\n(.*?)^EOF$", output, re.S | re.M):
        docs += [doc for doc in yaml.safe_load_all(chunk) if doc and doc.get("kind") == "Secret"]
    return docs


def assert_redacted(result, *names: str) -> None:
    secrets = {doc["metadata"]["name"]: doc for doc in rendered_secrets(result.stdout)}
    assert set(names) <= set(secrets), f"the dry-run printed no Secret {set(names) - set(secrets)}:\n{result.stdout}"
    for name, doc in secrets.items():
        values = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
        assert values and set(values.values()) == {REDACTED}, f"Secret {name} printed unredacted: {values}"


def test_no_secret_in_argv_output_or_dry_run_of_any_cluster_task(scanned):
    session, vcluster = scanned, scanned.mode == "vcluster"
    results: list[tuple[str, object]] = []

    def run(*args: str, ok: bool = True):
        result = session.run(*args, timeout=400)
        results.append((" ".join(args), result))
        if ok:
            assert result.returncode == 0, f"playbooks {' '.join(args)}\n{result.stdout}{result.stderr}"
        return result

    pods_run = session.cluster.pods_run
    with ArgvScan() as argv:
        # Dry-runs before anything exists: the Secrets they render hold freshly generated or planted values.
        assert_redacted(run("up", "--dry-run"), "mlflow-s3")
        run("dask.up", "--dry-run")
        if vcluster:
            run("gateway.up", "--dry-run")

        run("storage.up", "--bucket", "ws-store", "storage.status")
        secrets = {k: v for k, v in session.env.items() if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        secrets |= secret_values(session, "storage-credentials") | session_token(session)
        assert_redacted(run("storage.up", "--bucket", "ws-store", "--dry-run"), "storage-credentials")

        run("target", "up", "status")  # MLflow on the planted keys (or the store's, where pods run), Dask, Gateway
        secrets |= secret_values(session, "mlflow-s3")
        if vcluster:
            secrets |= secret_values(session, "dask-gateway-password")
        run("mlflow.up", "--storage", "local-s3", "mlflow.status")  # now MLflow on the store's credentials
        assert_redacted(run("mlflow.up", "--dry-run"), "mlflow-s3")
        assert_redacted(run("up", "--dry-run"), "mlflow-s3")
        run("dask.status", "dask.scale", "3", "dask.scale", "1", "--dry-run", "dask.up", "--workers", "1")
        if vcluster:
            run("gateway.status")
            assert REDACTED in run("gateway.up", "--dry-run").stdout
        checks = ["smoke", "mlflow.smoke", "dask.smoke", "mlflow.logs", "dask.logs", "storage.logs"]
        checks += ["gateway.smoke", "gateway.logs"] if vcluster else []
        if pods_run:
            run(*checks)
        else:  # each still runs (kubectl, the S3 settings), then fails in one line: no container to reach
            for task in checks:
                failed = run(task, ok=False)
                lines = failed.stderr.strip().splitlines()
                assert failed.returncode == 1 and len(lines) == 1 and "no preferred addresses" in lines[0], (
                    failed.stderr
                )

        for args in (["down", "--purge", "--dry-run"], ["mlflow.down", "--purge", "--dry-run"], ["dask.down", "--dry-run"],
                     ["storage.down", "--purge", "--dry-run"]):  # fmt: skip
            run(*args)
        if vcluster:
            run("gateway.down", "--purge", "--dry-run")
        assert len(session.labelled()) >= 10, "the dry-runs deleted nothing"
        run("down", "storage.down", "status")
        run("down", "--purge", "storage.down", "--purge")

    assert session.labelled() == []
    # The scan proves something only if it saw the writes go by.
    assert argv.saw("kubectl", "apply", "--server-side", session.namespace), f"no kubectl apply in {argv.sweeps} sweeps"
    assert argv.saw("kubectl", "delete", session.namespace), "no kubectl delete seen"
    if vcluster:
        assert argv.saw("helm", "upgrade", "--install", "dask-gateway"), "no helm upgrade seen"
        assert argv.saw("helm", "uninstall", "dask-gateway"), "no helm uninstall seen"
    assert len([k for k in secrets if "storage-credentials" in k]) == 2 and all(secrets.values())
    assert argv.leaks(secrets) == []
    assert text_leaks(output_texts(results), secrets) == []
