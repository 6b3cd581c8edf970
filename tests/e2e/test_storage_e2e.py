"""storage.* in the cluster modes (MinIO, a bucket Job), and MLflow using the store."""

import base64

NO_AWS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_ENDPOINT_URL": "", "WORKSHOP_NAMESPACE": ""}


def test_storage_up_down_and_mlflow_on_it(session):
    up = session.run("storage.up", "--bucket", "ws-store", env=NO_AWS)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "generated credentials in Secret storage-credentials" in up.stdout
    assert "storage/bucket: job succeeded" in up.stdout and "bucket ws-store is there" in up.stdout
    objects = session.objects()
    assert {
        "Deployment/storage",
        "Service/storage",
        "Secret/storage-credentials",
        "PersistentVolumeClaim/storage-data",
    } <= set(objects)
    secret = objects["Secret/storage-credentials"]["data"]
    for value in secret.values():
        assert base64.b64decode(value).decode() not in up.stdout + up.stderr
    assert not [name for name in session.labelled() if name.startswith("job")], "the bucket Job is deleted after it ran"

    again = session.run("storage.up", "--bucket", "ws-store", env=NO_AWS)
    assert again.returncode == 0 and "storage: no change" in again.stdout and "generated" not in again.stdout

    # --bucket naming another bucket than the store holds was silently ignored: now one line, nothing applied.
    other = session.run("mlflow.up", "--bucket", "ws-other", env=NO_AWS)
    assert other.returncode == 1 and len(other.stderr.strip().splitlines()) == 1, other.stdout + other.stderr
    assert "--bucket ws-other: the object store 'storage' holds bucket ws-store" in other.stderr
    assert "storage.up --bucket ws-other" in other.stderr
    assert not [name for name in session.labelled() if "mlflow" in name]

    mlflow = session.run("mlflow.up", "--bucket", "ws-store", env=NO_AWS)
    assert mlflow.returncode == 0, mlflow.stdout + mlflow.stderr
    assert "artifacts go to s3://ws-store/mlflow (bucket from the storage service" in mlflow.stdout
    env_map = next(v for k, v in session.objects().items() if k == "ConfigMap/mlflow-env")["data"]
    assert env_map["MLFLOW_S3_ENDPOINT_URL"].startswith(f"http://storage.{session.namespace}.svc")

    assert session.run("mlflow.down", "--purge").returncode == 0
    down = session.run("storage.down")
    assert down.returncode == 0, down.stderr
    assert session.labelled() == ["persistentvolumeclaim/storage-data", "secret/storage-credentials"]
    assert session.run("storage.down", "--purge").returncode == 0
    assert session.labelled() == []


def test_mlflow_without_credentials_or_store_names_the_fix(session):
    result = session.run("mlflow.up", env=NO_AWS)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: no S3 credentials") and "storage.up" in result.stderr
    assert session.labelled() == []
