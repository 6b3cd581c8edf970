"""The MLflow smoke check against a real tracking server and a real S3-protocol server."""

import os

import pytest
from mlflow import MlflowClient

from playbooks.mlflow_check import ARTIFACT, EXPERIMENT, artifact_key, round_trip
from playbooks.s3 import s3_from_env

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres"])
def tracking_server(request):
    """The smoke check on both backends: a real server on SQLite, and one on a real PostgreSQL."""
    return request.getfixturevalue("mlflow_server" if request.param == "sqlite" else "mlflow_pg_server")


def test_round_trip_passes_and_artifact_lands_in_bucket(tracking_server, s3_server):
    s3 = s3_from_env(s3_server.env())
    report = round_trip(
        tracking_server.url, s3=s3, bucket=tracking_server.bucket, prefix=tracking_server.prefix, keep=True
    )
    assert report.ok, report.render()
    assert [s.name for s in report.steps] == [
        "import client",
        "experiment",
        "log run",
        "read back",
        "artifact in bucket",
        "clean up",
    ]
    assert report.steps[-1].detail.startswith("skipped: --keep: run ")
    where = report.steps[-2].detail
    assert where.startswith(f"s3://{s3_server.bucket}/{tracking_server.prefix}/") and where.endswith(ARTIFACT)
    key = where.removeprefix(f"s3://{s3_server.bucket}/")
    body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
    assert body.startswith(b"datalab-playbooks smoke ")


def test_round_trip_fails_when_the_object_is_not_where_the_server_says(mlflow_server, s3_server):
    """Verification is real: pointing it at the wrong prefix must fail that step (and keep the run, to look at)."""
    s3 = s3_from_env(s3_server.env())
    report = round_trip(mlflow_server.url, s3=s3, bucket=mlflow_server.bucket, prefix="elsewhere")
    assert not report.ok
    assert report.steps[-1].name == "artifact in bucket"
    assert "is not in the bucket" in report.failure
    run_id = report.steps[2].detail.removeprefix("run ")
    assert MlflowClient(mlflow_server.url).get_run(run_id).info.lifecycle_stage == "active"


def workspace(url: str) -> tuple[list, list]:
    """What a user sees: the active experiments and every active run in them, as (id, name) and (id, status)."""
    client = MlflowClient(url)
    experiments = sorted((e.experiment_id, e.name) for e in client.search_experiments())
    runs = sorted(
        (r.info.run_id, r.info.status) for r in client.search_runs([e for e, _ in experiments], max_results=1000)
    )
    return experiments, runs


def bucket_keys(s3_server, prefix: str) -> set[str]:
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=f"{prefix}/")
    return {item["Key"] for item in listed.get("Contents", [])}


def test_a_passing_check_leaves_the_workspace_as_it_was(tracking_server, s3_server):
    """The user's experiments and runs, and the bucket, are the same before and after a passing check;
    a run of the user's own, made first, is untouched."""
    client = MlflowClient(tracking_server.url)
    mine = client.create_run(client.create_experiment(f"user-{os.urandom(3).hex()}")).info.run_id
    client.log_metric(mine, "loss", 0.5)
    before, objects = workspace(tracking_server.url), bucket_keys(s3_server, tracking_server.prefix)
    assert mine in {run_id for run_id, _ in before[1]}
    s3 = s3_from_env(s3_server.env())

    # Checks that failed earlier in this session's server kept their runs (on purpose): then the
    # experiment stays, and only this check's run goes.
    smoke = client.get_experiment_by_name(EXPERIMENT)
    others = bool(smoke and smoke.lifecycle_stage == "active" and client.search_runs([smoke.experiment_id]))
    report = round_trip(tracking_server.url, s3=s3, bucket=tracking_server.bucket, prefix=tracking_server.prefix)
    assert report.ok, report.render()
    expected = (
        f"deleted the artifact and run ({EXPERIMENT} holds other runs)"
        if others
        else "deleted the artifact, run and experiment"
    )
    assert report.steps[-1].name == "clean up" and report.steps[-1].detail == expected
    assert workspace(tracking_server.url) == before
    assert bucket_keys(s3_server, tracking_server.prefix) == objects
    assert client.get_experiment_by_name(EXPERIMENT).lifecycle_stage == ("active" if others else "deleted")
    assert client.get_run(mine).data.metrics == {"loss": 0.5}

    # The next check restores its experiment, and cleans up again.
    again = round_trip(tracking_server.url, s3=s3, bucket=tracking_server.bucket, prefix=tracking_server.prefix)
    assert again.ok, again.render()
    assert workspace(tracking_server.url) == before


def test_keep_leaves_the_run_its_artifact_and_experiment(tracking_server, s3_server):
    s3 = s3_from_env(s3_server.env())
    before = bucket_keys(s3_server, tracking_server.prefix)
    report = round_trip(
        tracking_server.url, s3=s3, bucket=tracking_server.bucket, prefix=tracking_server.prefix, keep=True
    )
    assert report.ok, report.render()
    run_id = report.steps[2].detail.removeprefix("run ")
    client = MlflowClient(tracking_server.url)
    assert client.get_run(run_id).info.lifecycle_stage == "active"
    assert client.get_experiment_by_name(EXPERIMENT).lifecycle_stage == "active"
    added = bucket_keys(s3_server, tracking_server.prefix) - before
    assert [key for key in added if run_id in key and key.endswith(ARTIFACT)], added
    # A later check without --keep deletes only its own run: the kept one stays, and so does the experiment.
    later = round_trip(tracking_server.url, s3=s3, bucket=tracking_server.bucket, prefix=tracking_server.prefix)
    assert later.ok and later.steps[-1].detail.startswith("deleted the artifact and run"), later.render()
    assert client.get_run(run_id).info.lifecycle_stage == "active"
    client.delete_run(run_id)


def test_round_trip_without_credentials_skips_only_the_bucket_step(mlflow_server):
    report = round_trip(mlflow_server.url)
    assert report.ok
    skipped = [step.name for step in report.steps if step.detail.startswith("skipped")]
    assert skipped == ["artifact in bucket"], report.render()


def test_host_header_refusal_is_a_clear_failure(strict_mlflow_server):
    report = round_trip(strict_mlflow_server.url)
    assert not report.ok
    assert "Invalid Host header" in report.failure
    assert "--allowed-hosts" in report.failure


def test_no_server_is_a_clear_failure():
    from playbooks.procs import free_port

    report = round_trip(f"http://127.0.0.1:{free_port()}")
    assert not report.ok
    assert "no MLflow server answers" in report.failure


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("mlflow-artifacts:/1/abc/artifacts", ("b", "p/1/abc/artifacts/x.txt")),
        ("mlflow-artifacts://host:5000/1/abc/artifacts", ("b", "p/1/abc/artifacts/x.txt")),
        ("s3://other/root/7/abc/artifacts", ("other", "root/7/abc/artifacts/x.txt")),
    ],
)
def test_artifact_key(uri, expected):
    assert artifact_key(uri, "b", "p", "x.txt") == expected
