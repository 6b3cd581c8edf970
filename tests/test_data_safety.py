"""Data safety in local mode, for real: a run logged to MLflow survives `down` and `up` (service and
root tasks), a --dry-run never acts, and only --purge deletes the database."""

import os
import re
import tempfile
from pathlib import Path

import pytest

from tests.conftest import QUIET_ENV, processes_under, state
from tests.test_secret_scan import Runner

pytestmark = pytest.mark.slow
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@pytest.fixture(autouse=True)
def _quick_client(monkeypatch):
    for key, value in CLIENT_ENV.items():
        monkeypatch.setenv(key, value)


def tracking_uri(result) -> str:
    found = re.findall(r"export MLFLOW_TRACKING_URI=(http://127\.0\.0\.1:\d+)", result.stdout)
    assert found, result.stdout
    return found[-1]


def log_run(url: str) -> tuple[str, str]:
    """A run with a param, a metric and a text artifact, through the real client and the server's artifact proxy."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    token = os.urandom(6).hex()
    experiment_id = client.create_experiment(f"data-safety-{token}")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_param(run_id, "token", token)
    client.log_metric(run_id, "loss", 0.125, step=3)
    client.log_text(run_id, f"kept {token}\n", "notes/kept.txt")
    client.set_terminated(run_id)
    return run_id, token


def read_run(url: str, run_id: str) -> tuple[dict, dict, str]:
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    run = MlflowClient(tracking_uri=url).get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(run_id=run_id, artifact_path="notes/kept.txt", dst_path=tmp, tracking_uri=url)
        text = Path(path).read_text()
    return run.data.params, run.data.metrics, text


def assert_run_kept(url: str, run_id: str, token: str) -> None:
    params, metrics, text = read_run(url, run_id)
    assert params == {"token": token} and metrics == {"loss": 0.125} and text == f"kept {token}\n"


def run_is_gone(url: str, run_id: str) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(tracking_uri=url).get_run(run_id)
    except MlflowException as error:
        return "RESOURCE_DOES_NOT_EXIST" in str(error.error_code)
    return False


def local_env(workdir: Path, extra: dict | None = None) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(workdir), **QUIET_ENV, **CLIENT_ENV, **(extra or {})}


def test_mlflow_down_and_up_keep_the_run_and_only_purge_deletes_it(workdir):
    run = Runner(workdir, local_env(workdir))
    folder = workdir / ".playbooks/local/mlflow"
    url = tracking_uri(run("mlflow.up"))
    run_id, token = log_run(url)
    pid = state(workdir, "mlflow")["pid"]

    refused = run("mlflow.down", "--purge", "--dry-run", ok=False)
    assert refused.returncode == 1 and "--dry-run is for the cluster modes" in refused.stderr
    assert state(workdir, "mlflow")["pid"] == pid, "a dry-run stops nothing"
    assert_run_kept(url, run_id, token)

    down = run("mlflow.down")
    assert f"mlflow: kept {folder} (database; pass --purge to delete it)" in down.stdout
    assert (folder / "mlflow.db").is_file() and not processes_under(workdir)
    again = tracking_uri(run("mlflow.up"))
    assert state(workdir, "mlflow")["pid"] != pid, "a new server"
    assert_run_kept(again, run_id, token)

    purge = run("mlflow.down", "--purge")
    assert f"mlflow: deleted {folder}" in purge.stdout
    assert not folder.exists() and not processes_under(workdir)
    fresh = tracking_uri(run("mlflow.up"))
    assert run_is_gone(fresh, run_id), "after --purge the database starts empty"
    run("mlflow.down", "--purge")


def test_root_down_and_up_keep_the_run_with_artifacts_in_s3(workdir, s3_server):
    run = Runner(workdir, local_env(workdir, {**s3_server.env(), "WORKSHOP_NAMESPACE": s3_server.bucket}))
    folder = workdir / ".playbooks/local/mlflow"
    up = run("up")
    assert f"artifacts go to s3://{s3_server.bucket}/mlflow" in up.stdout
    url = tracking_uri(up)
    run_id, token = log_run(url)

    refused = run("down", "--purge", "--dry-run", ok=False)
    assert refused.returncode == 1 and "--dry-run is for the cluster modes" in refused.stderr
    assert_run_kept(url, run_id, token)

    down = run("down")
    assert "mlflow: kept" in down.stdout and (folder / "mlflow.db").is_file()
    assert not processes_under(workdir), "down stops every service"
    again = tracking_uri(run("up"))
    assert_run_kept(again, run_id, token)
    keys = [
        o["Key"]
        for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="mlflow/").get("Contents", [])
    ]
    assert any(key.endswith(f"{run_id}/artifacts/notes/kept.txt") for key in keys), keys

    purge = run("down", "--purge")
    assert f"mlflow: deleted {folder}" in purge.stdout
    assert not folder.exists() and not processes_under(workdir)


def test_mlflow_on_postgres_down_and_up_keep_the_run_and_purge_never_drops_the_database(workdir, pg, s3_server):
    """The data-safety path on the other backend: the runs live in PostgreSQL, which `down --purge` leaves alone."""
    env = {**s3_server.env(), "WORKSHOP_NAMESPACE": s3_server.bucket, "DATABASE_URL": pg.url()}
    run = Runner(workdir, local_env(workdir, env))
    url = tracking_uri(run("mlflow.up", "--backend", "postgres"))
    run_id, token = log_run(url)
    pid = state(workdir, "mlflow")["pid"]

    refused = run("mlflow.down", "--purge", "--dry-run", ok=False)
    assert refused.returncode == 1 and "--dry-run is for the cluster modes" in refused.stderr
    assert state(workdir, "mlflow")["pid"] == pid, "a dry-run stops nothing"

    down = run("down")
    assert "the runs stay in PostgreSQL, database mlflow" in down.stdout and not processes_under(workdir)
    again = run("up")  # a session's start: no --backend, and the runs are there
    assert "backend PostgreSQL" in again.stdout
    assert_run_kept(tracking_uri(again), run_id, token)

    purge = run("down", "--purge")
    assert "mlflow.down never deletes a PostgreSQL database" in purge.stdout
    assert pg.sql(f"SELECT count(*) FROM runs WHERE run_uuid = '{run_id}'", "mlflow") == "1"
    back = tracking_uri(run("mlflow.up", "--backend", "postgres"))
    assert_run_kept(back, run_id, token)
    run("down", "--purge")
