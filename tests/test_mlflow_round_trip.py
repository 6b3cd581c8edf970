"""The MLflow smoke check against a real tracking server and a real S3-protocol server."""

import pytest

from playbooks.mlflow_check import ARTIFACT, artifact_key, round_trip
from playbooks.s3 import s3_from_env

pytestmark = pytest.mark.slow


def test_round_trip_passes_and_artifact_lands_in_bucket(mlflow_server, s3_server):
    s3 = s3_from_env(s3_server.env())
    report = round_trip(mlflow_server.url, s3=s3, bucket=mlflow_server.bucket, prefix=mlflow_server.prefix)
    assert report.ok, report.render()
    assert [s.name for s in report.steps] == [
        "import client",
        "experiment",
        "log run",
        "read back",
        "artifact in bucket",
    ]
    where = report.steps[-1].detail
    assert where.startswith(f"s3://{s3_server.bucket}/{mlflow_server.prefix}/") and where.endswith(ARTIFACT)
    key = where.removeprefix(f"s3://{s3_server.bucket}/")
    body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
    assert body.startswith(b"datalab-playbooks smoke ")


def test_round_trip_fails_when_the_object_is_not_where_the_server_says(mlflow_server, s3_server):
    """Verification is real: pointing it at the wrong prefix must fail that step."""
    s3 = s3_from_env(s3_server.env())
    report = round_trip(mlflow_server.url, s3=s3, bucket=mlflow_server.bucket, prefix="elsewhere")
    assert not report.ok
    assert report.steps[-1].name == "artifact in bucket"
    assert "is not in the bucket" in report.failure


def test_round_trip_without_credentials_skips_only_the_bucket_step(mlflow_server):
    report = round_trip(mlflow_server.url)
    assert report.ok
    assert report.steps[-1].detail.startswith("skipped")


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
