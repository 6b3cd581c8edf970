"""What a user runs against the deployed services with their own clients, through their own port-forwards."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import QUIET_ENV

# With --serve-artifacts a client needs no S3 credentials, and the transfers go through the server.
CLIENT_ENV = {
    **QUIET_ENV,
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false",
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
}

LOG_A_RUN = """
import sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("user-e2e")
with mlflow.start_run() as run:
    mlflow.log_param("alpha", "0.5")
    mlflow.log_metric("rmse", 0.25)
    mlflow.log_text("kept across down and up", "notes/hello.txt")
print(run.info.run_id)
"""

READ_A_RUN = """
import json, sys, mlflow
from mlflow import MlflowClient
mlflow.set_tracking_uri(sys.argv[1])
run = MlflowClient().get_run(sys.argv[2])
text = mlflow.artifacts.load_text(f"runs:/{sys.argv[2]}/notes/hello.txt")
print(json.dumps({"params": run.data.params, "metrics": run.data.metrics, "text": text}))
"""

DASK_GROUPBY = """
import sys, json
import pandas as pd
import dask.dataframe as dd
from dask.distributed import Client
with Client(sys.argv[1], timeout=60) as client:
    frame = pd.DataFrame({"key": [i % 3 for i in range(300)], "value": range(300)})
    sums = dd.from_pandas(frame, npartitions=6).groupby("key").value.sum().compute()
    print(json.dumps({str(k): int(v) for k, v in sums.items()}))
"""
GROUPBY_SUMS = {str(k): sum(range(k, 300, 3)) for k in range(3)}


@contextmanager
def forward(kubeconfig: Path, namespace: str, service: str, port: int) -> Iterator[int]:
    """A user's own `kubectl port-forward service/NAME :PORT`; yields the local port."""
    process = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(kubeconfig), "-n", namespace, "port-forward",
         "--address", "127.0.0.1", f"service/{service}", f":{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
        if not match:
            raise AssertionError(f"port-forward to {service} failed: {line}")
        yield int(match.group(1))
    finally:
        process.terminate()
        process.wait(timeout=10)


def user_python(env: dict[str, str], code: str, *args: str, timeout: float = 180) -> str:
    """Run a user's snippet with this environment's Python, without S3 credentials; its last line."""
    clean = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**clean, **CLIENT_ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(result.stdout + result.stderr)
    return result.stdout.strip().splitlines()[-1]
