"""The MLflow round trip: log a param, a metric and an artifact, read them back, find the object in S3.

The check writes only to its own experiment, datalab-playbooks-smoke. After a pass it deletes
what it wrote -- the artifact, the run, and the experiment once no run is left in it -- so the
user's experiment list and runs are as before; `keep=True` (smoke --keep) keeps them. After a
failure they are kept, to look at. Deleting is MLflow's soft delete, as the UI's Delete button:
`mlflow gc` on the server removes deleted runs and experiments for good.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from urllib.parse import urlparse

from playbooks.report import CheckFailed, Report
from playbooks.s3 import S3Settings

EXPERIMENT = "datalab-playbooks-smoke"
ARTIFACT = "smoke/hello.txt"

# Client settings for the check: no telemetry, few quick retries, and artifacts through
# the tracking server even when it would send the client straight to S3.
CLIENT_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false",
}


@contextmanager
def client_environment():
    saved = {key: os.environ.get(key) for key in CLIENT_ENV}
    os.environ.update(CLIENT_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def explain(error: Exception, tracking_uri: str) -> str:
    """One line for the usual ways a tracking server says no."""
    text = str(error)
    host = urlparse(tracking_uri).netloc
    if "Invalid Host header" in text or ("403" in text and "host" in text.lower()):
        return (
            f"the server refused the Host header {host!r} (403 Invalid Host header): "
            "add it to the server's --allowed-hosts (mlflow.extra_allowed_hosts)"
        )
    if "Max retries exceeded" in text or "Connection refused" in text:
        return f"no MLflow server answers at {tracking_uri}"
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def artifact_key(artifact_uri: str, bucket: str, prefix: str, path: str) -> tuple[str, str]:
    """Where a run's artifact lives in S3: (bucket, key)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "s3":
        return parsed.netloc, f"{parsed.path.strip('/')}/{path}"
    # mlflow-artifacts:/<experiment>/<run>/artifacts, relative to --artifacts-destination
    relative = parsed.path.strip("/")
    return bucket, "/".join(p for p in (prefix.strip("/"), relative, path) if p)


def round_trip(
    tracking_uri: str,
    s3: S3Settings | None = None,
    bucket: str | None = None,
    prefix: str = "",
    service: str = "mlflow",
    local_root: str | Path | None = None,
    keep: bool = False,
) -> Report:
    """Run the check; the report says which step failed and why. Never raises for a failed check."""
    report = Report(service)
    token = os.urandom(6).hex()
    text = f"datalab-playbooks smoke {token}\n"
    made: dict = {}
    with client_environment():
        try:
            _steps(report, tracking_uri, s3, bucket, prefix, token, text, local_root, made)
            if keep:
                report.skip("clean up", f"--keep: run {made['run_id']} kept in experiment {EXPERIMENT}")
            else:
                clean_up(report, tracking_uri, made)
        except CheckFailed:
            pass
    return report


def clean_up(report: Report, tracking_uri: str, made: dict) -> None:
    """Delete the artifact and the run the check made, then its experiment when no run is left in it."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = MlflowClient(tracking_uri=tracking_uri)
    with report.step("clean up") as info:
        try:
            get_artifact_repository(made["artifact_uri"], tracking_uri=tracking_uri).delete_artifacts()
            client.delete_run(made["run_id"])
            left = client.search_runs([made["experiment_id"]], run_view_type=ViewType.ACTIVE_ONLY, max_results=1)
            if not left:
                client.delete_experiment(made["experiment_id"])
        except Exception as error:
            raise CheckFailed(explain(error, tracking_uri)) from error
        gone = "artifact, run and experiment" if not left else f"artifact and run ({EXPERIMENT} holds other runs)"
        info["detail"] = f"deleted the {gone}"


def restore(client, experiment_id: str) -> None:
    """Bring back the check's experiment, deleted after an earlier pass. MLflow restores every run in it
    with it: those were deleted, and are deleted again."""
    from mlflow.entities import ViewType

    client.restore_experiment(experiment_id)
    for run in client.search_runs([experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000):
        client.delete_run(run.info.run_id)


def _steps(report, tracking_uri, s3, bucket, prefix, token, text, local_root, made) -> None:
    with report.step("import client"):
        from mlflow import MlflowClient
        from mlflow.artifacts import download_artifacts

    client = MlflowClient(tracking_uri=tracking_uri)
    with report.step("experiment", tracking_uri) as info:
        try:
            experiment = client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                experiment_id = client.create_experiment(EXPERIMENT)
            else:
                experiment_id = experiment.experiment_id
                if experiment.lifecycle_stage == "deleted":
                    restore(client, experiment_id)
        except Exception as error:
            raise CheckFailed(explain(error, tracking_uri)) from error
        info["detail"] = f"{EXPERIMENT} (id {experiment_id})"
        made["experiment_id"] = experiment_id

    with report.step("log run") as info:
        try:
            run = client.create_run(experiment_id, run_name=f"smoke-{token}")
            run_id = run.info.run_id
            client.log_param(run_id, "token", token)
            client.log_metric(run_id, "answer", 42.0)
            client.log_text(run_id, text, ARTIFACT)
            with redirect_stdout(io.StringIO()):  # its "View run at" links are not for this output
                client.set_terminated(run_id)
        except Exception as error:
            raise CheckFailed(explain(error, tracking_uri)) from error
        info["detail"] = f"run {run_id}"
        made["run_id"] = run_id

    with report.step("read back") as info:
        fresh = MlflowClient(tracking_uri=tracking_uri)
        try:
            data = fresh.get_run(run_id)
            with tempfile.TemporaryDirectory() as tmp:
                local = download_artifacts(
                    run_id=run_id, artifact_path=ARTIFACT, dst_path=tmp, tracking_uri=tracking_uri
                )
                content = Path(local).read_text()
        except Exception as error:
            raise CheckFailed(explain(error, tracking_uri)) from error
        if data.data.params.get("token") != token:
            raise CheckFailed(f"param token reads {data.data.params.get('token')!r}, logged {token!r}")
        if data.data.metrics.get("answer") != 42.0:
            raise CheckFailed(f"metric answer reads {data.data.metrics.get('answer')!r}, logged 42.0")
        if content != text:
            raise CheckFailed("the artifact read back differs from the one logged")
        info["detail"] = "param, metric and artifact match"
        made["artifact_uri"] = data.info.artifact_uri

    if local_root is not None:
        with report.step("artifact on disk") as info:
            _, key = artifact_key(data.info.artifact_uri, "", "", ARTIFACT)
            path = Path(local_root) / key
            if not path.is_file() or path.read_text() != text:
                raise CheckFailed(f"{path} does not hold the artifact logged")
            info["detail"] = str(path)
        return
    if s3 is None or bucket is None:
        report.skip("artifact in bucket", "no S3 credentials at hand")
        return
    with report.step("artifact in bucket") as info:
        where_bucket, key = artifact_key(data.info.artifact_uri, bucket, prefix, ARTIFACT)
        body = _get_object(s3, where_bucket, key)
        if body != text.encode():
            raise CheckFailed(f"s3://{where_bucket}/{key} holds other content than the artifact logged")
        info["detail"] = f"s3://{where_bucket}/{key}"


def _get_object(s3: S3Settings, bucket: str, key: str, attempts: int = 3) -> bytes:
    client = s3.client()
    for attempt in range(attempts):
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            if attempt == attempts - 1:
                raise CheckFailed(f"s3://{bucket}/{key} is not in the bucket") from None
            time.sleep(1)
        except Exception as error:
            raise CheckFailed(f"cannot read s3://{bucket}/{key}: {error}") from None
    raise AssertionError("unreachable")
