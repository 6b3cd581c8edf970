"""Data safety against a real API server, in both modes: `down` keeps every data-holding object
(MLflow's database volume, the store's volume and credentials, the gateway's CRDs) unless --purge,
a --dry-run deletes nothing, and the next `up` reuses the very same objects (same uid).

That the MLflow run itself survives is proven where the server really runs: tests/test_data_safety.py.
"""

import json

from tests.e2e.test_gateway_e2e import CRD


def ok(session, *args: str):
    result = session.run(*args, timeout=400)
    assert result.returncode == 0, f"playbooks {' '.join(args)}\n{result.stdout}{result.stderr}"
    return result


def get(session, what: str) -> dict | None:
    """The object (kind/name) in the session's namespace, or None."""
    out = session.cluster.kubectl("get", what, "-n", session.namespace, "-o", "json", "--ignore-not-found")
    return json.loads(out.stdout) if out.stdout.strip() else None


def uid(session, what: str) -> str | None:
    found = get(session, what)
    return found["metadata"]["uid"] if found else None


def claim_of(session, deployment: str) -> str:
    spec = get(session, f"deployment/{deployment}")["spec"]["template"]["spec"]
    return next(v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v)


def test_mlflow_down_keeps_the_database_volume_and_up_reuses_it(session):
    ok(session, "mlflow.up")
    volume = uid(session, "pvc/mlflow-db")
    assert volume and claim_of(session, "mlflow") == "mlflow-db"

    ok(session, "mlflow.down", "--purge", "--dry-run")
    assert uid(session, "pvc/mlflow-db") == volume and get(session, "deployment/mlflow"), "a dry-run deletes nothing"

    down = ok(session, "mlflow.down")
    assert "kept persistentvolumeclaim/mlflow-db" in down.stdout
    assert get(session, "deployment/mlflow") is None and uid(session, "pvc/mlflow-db") == volume

    ok(session, "mlflow.up")
    assert uid(session, "pvc/mlflow-db") == volume, "up reuses the very same volume"
    assert claim_of(session, "mlflow") == "mlflow-db"

    purge = ok(session, "mlflow.down", "--purge")
    assert "deleted persistentvolumeclaim/mlflow-db" in purge.stdout
    assert get(session, "pvc/mlflow-db") is None and session.labelled() == []


def test_storage_down_keeps_volume_and_credentials_and_up_reuses_them(session):
    ok(session, "storage.up", "--bucket", "ws-store")
    volume, secret = uid(session, "pvc/storage-data"), get(session, "secret/storage-credentials")
    assert volume and secret and claim_of(session, "storage") == "storage-data"

    ok(session, "storage.down", "--purge", "--dry-run")
    assert (
        uid(session, "pvc/storage-data") == volume
        and uid(session, "secret/storage-credentials") == secret["metadata"]["uid"]
    )

    down = ok(session, "storage.down")
    assert "kept persistentvolumeclaim/storage-data" in down.stdout and "kept secret/storage-credentials" in down.stdout
    assert get(session, "deployment/storage") is None

    again = ok(session, "storage.up", "--bucket", "ws-store")
    assert "generated" not in again.stdout, "the credentials of the data are reused, not replaced"
    assert uid(session, "pvc/storage-data") == volume
    kept = get(session, "secret/storage-credentials")
    assert kept["metadata"]["uid"] == secret["metadata"]["uid"] and kept["data"] == secret["data"]

    ok(session, "storage.down", "--purge")
    assert get(session, "pvc/storage-data") is None and get(session, "secret/storage-credentials") is None


def test_root_down_keeps_every_data_holding_object_and_only_purge_deletes_them(all_services):
    session = all_services
    ok(session, "storage.up", "--bucket", "ws-store")
    ok(session, "up")
    data = ["pvc/mlflow-db", "pvc/storage-data", "secret/storage-credentials"]
    before = {what: uid(session, what) for what in data}
    assert all(before.values()), before
    gateway = session.mode == "vcluster"
    crd = session.cluster.kubectl("get", CRD, "-o", "jsonpath={.metadata.uid}").stdout if gateway else None

    ok(session, "down", "--purge", "--dry-run")
    assert {what: uid(session, what) for what in data} == before, "a dry-run deletes nothing"
    assert get(session, "deployment/mlflow") and get(session, "deployment/dask-scheduler")

    ok(session, "down")
    assert {what: uid(session, what) for what in data} == before, "down without --purge keeps the data"
    assert get(session, "deployment/mlflow") is None and get(session, "deployment/dask-scheduler") is None
    if gateway:
        assert session.cluster.kubectl("get", CRD, "-o", "jsonpath={.metadata.uid}").stdout == crd, (
            "the gateway's CRDs stay"
        )

    ok(session, "up")
    assert uid(session, "pvc/mlflow-db") == before["pvc/mlflow-db"], "up reuses the database volume"

    ok(session, "down", "--purge")
    assert get(session, "pvc/mlflow-db") is None
    if gateway:
        assert session.cluster.kubectl("get", CRD, check=False).returncode != 0, "--purge deletes the gateway's CRDs"
    # The store is no part of `up`/`down`: only its own down deletes it.
    assert {what: uid(session, what) for what in data[1:]} == {what: before[what] for what in data[1:]}
    ok(session, "storage.down", "--purge")
    assert session.labelled() == []
