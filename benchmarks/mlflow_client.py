"""The baseline of the smoke benchmark: the MLflow calls of the smoke check, written by hand.

    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true .venv/bin/python benchmarks/mlflow_client.py URL

Create (or get) an experiment, create a run, log a param, a metric and a text artifact,
end the run, read the run back and download the artifact. No reporting, no error handling.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

EXPERIMENT = "datalab-playbooks-bench"


def round_trip(tracking_uri: str) -> None:
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    token = uuid.uuid4().hex[:12]
    run_id = client.create_run(experiment_id, run_name=f"bench-{token}").info.run_id
    client.log_param(run_id, "token", token)
    client.log_metric(run_id, "answer", 42.0)
    client.log_text(run_id, token, "bench/hello.txt")
    client.set_terminated(run_id)
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(
            run_id=run_id, artifact_path="bench/hello.txt", dst_path=tmp, tracking_uri=tracking_uri
        )
        content = Path(path).read_text()
    assert run.data.params["token"] == token and run.data.metrics["answer"] == 42.0 and content == token


if __name__ == "__main__":
    round_trip(sys.argv[1])
