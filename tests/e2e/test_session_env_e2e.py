"""`env` and `--json` against a real API server, in both modes: the addresses a shell gets from where it is."""

import base64
import json

import jsonschema

from tests.test_session_hook import schema


def test_env_gives_in_cluster_names_in_a_pod_and_forwarded_addresses_elsewhere(all_services):
    session = all_services
    ns = session.namespace
    assert session.run("up").returncode == 0

    outside = session.run("env")
    assert outside.returncode == 0 and outside.stderr == "", outside.stderr
    lines = outside.stdout.splitlines()
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in lines
    assert "export DASK_SCHEDULER_ADDRESS=tcp://127.0.0.1:8786" in lines
    assert "export DASK_DASHBOARD_URL=http://127.0.0.1:8787/status" in lines
    assert "port-forward service/mlflow 5000:5000" in outside.stdout
    assert "port-forward service/dask-scheduler 8786:8786" in outside.stdout

    # A pod: KUBERNETES_SERVICE_HOST is set. Namespace mode uses cluster DNS; a vCluster's services are forwarded.
    pod = session.run("env", "--json", env={"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    doc = json.loads(pod.stdout)
    jsonschema.validate(doc, schema("env"))
    values = {v["name"]: v["value"] for v in doc["variables"]}
    if session.mode == "namespace":
        assert doc["reach"] == "in-cluster"
        assert values["MLFLOW_TRACKING_URI"] == f"http://mlflow.{ns}.svc:5000"
        assert values["DASK_SCHEDULER_ADDRESS"] == f"tcp://dask-scheduler.{ns}.svc:8786"
        assert not any(v["service"] == "gateway" for v in doc["variables"])
    else:
        assert doc["reach"] == "port-forward"
        assert values["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
        assert values["DASK_GATEWAY__ADDRESS"] == "http://127.0.0.1:8000"
        assert values["DASK_GATEWAY__AUTH__TYPE"] == "basic"
        secret = next(v for v in doc["variables"] if v["name"] == "DASK_GATEWAY__AUTH__KWARGS__PASSWORD")
        assert secret["value"] is None and "get secret/dask-gateway-password" in secret["command"]
        encoded = session.cluster.kubectl(
            "get", "secret/dask-gateway-password", "-n", ns, "-o", "jsonpath={.data.password}"
        ).stdout
        password = base64.b64decode(encoded).decode()
        assert password and password not in pod.stdout + outside.stdout

    for task in ("status", "target"):
        result = session.run(task, "--json")
        assert result.returncode == 0, result.stderr
        jsonschema.validate(json.loads(result.stdout), schema(task))
    status = json.loads(session.run("status", "--json").stdout)
    assert {(s["service"], s["ok"]) for s in status["services"]} >= {("mlflow", True), ("dask", True)}
    print(outside.stdout)  # -rP shows the sample output of each mode
    assert session.run("down", "--purge").returncode == 0
