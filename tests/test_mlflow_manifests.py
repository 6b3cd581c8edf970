"""MLflow manifests rendered for both modes, validated offline against real schemas."""

import base64

import pytest

from playbooks.errors import PlaybookError
from playbooks.render import common_labels, redacted, to_yaml
from playbooks.s3 import S3Settings
from playbooks.services.mlflow import allowed_hosts, build_plan
from tests.manifests import FakeContext, config, target, validate_all

S3 = S3Settings(
    access_key="AKIAEXAMPLEKEY", secret_key="example-secret-value", endpoint_url="http://minio:9000", region="eu-west-1"
)


def plan_for(mode, overrides=None, name="mlflow", prefix="mlflow"):
    return build_plan(FakeContext(config(overrides)), target(mode), S3, "ws-frank", "--bucket", prefix, name)


def by_kind(docs):
    return {doc["kind"]: doc for doc in docs}


@pytest.mark.parametrize("mode", ["namespace", "vcluster"])
@pytest.mark.parametrize("overrides", [None, {"mlflow": {"storage_class": "standard", "storage_size": "5Gi"}}])
def test_manifests_validate_strictly(mode, overrides):
    validate_all(plan_for(mode, overrides).docs)


def test_every_object_has_the_common_labels_and_namespace():
    docs = plan_for("namespace", name="tracking").docs
    assert {d["kind"] for d in docs} == {"Secret", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment"}
    for doc in docs:
        assert doc["metadata"]["namespace"] == "ws-frank-s1"
        assert common_labels("mlflow", "tracking").items() <= doc["metadata"]["labels"].items()
    deployment = by_kind(docs)["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert by_kind(docs)["Service"]["spec"]["selector"].items() <= pod_labels.items()


def test_server_container_contract():
    deployment = by_kind(plan_for("namespace").docs)["Deployment"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith("-full")
    args = container["args"]
    assert args[args.index("--workers") + 1] == "1"
    assert not any(arg.startswith("--backend-store-uri") for arg in args), "the URI comes from the environment"
    assert "--serve-artifacts" in args
    assert args[args.index("--artifacts-destination") + 1] == "s3://ws-frank/mlflow"
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert "*" not in hosts
    for host in ("mlflow", "mlflow.ws-frank-s1.svc", "mlflow.ws-frank-s1.svc.cluster.local", "localhost", "127.0.0.1"):
        assert host in hosts and f"{host}:*" in hosts
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    # A slow start is the startup probe's to judge (5 minutes), not the liveness probe's.
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health" and startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert "initialDelaySeconds" not in container["livenessProbe"] and container["livenessProbe"]["timeoutSeconds"] >= 3
    assert not any(part.startswith("pip") for part in container.get("command", []) + args)
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "sqlite:////mlflow/db/mlflow.db"
    assert env["MLFLOW_DISABLE_TELEMETRY"]["value"] == "true"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-s3"


def test_endpoint_and_path_style_reach_the_server():
    configmaps = [d for d in plan_for("namespace").docs if d["kind"] == "ConfigMap"]
    env = next(d["data"] for d in configmaps if "MLFLOW_S3_ENDPOINT_URL" in d["data"])
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    aws_config = next(d["data"]["config"] for d in configmaps if "config" in d["data"])
    assert "addressing_style = path" in aws_config


def test_secret_holds_credentials_and_redaction_hides_them():
    docs = plan_for("namespace").docs
    secret = by_kind(docs)["Secret"]
    assert base64.b64decode(secret["data"]["AWS_SECRET_ACCESS_KEY"]).decode() == S3.secret_key
    shown = to_yaml(redacted(docs))
    for value in (
        S3.secret_key,
        S3.access_key,
        secret["data"]["AWS_SECRET_ACCESS_KEY"],
        secret["data"]["AWS_ACCESS_KEY_ID"],
    ):
        assert value not in shown


def test_pods_meet_the_restricted_pod_security_standard():
    spec = by_kind(plan_for("vcluster").docs)["Deployment"]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_resources_come_from_configuration():
    limits = {"cpu": "1", "memory": "1Gi"}
    deployment = by_kind(plan_for("namespace", {"mlflow": {"resources": {"limits": limits}}}).docs)["Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == limits


def test_storage_class_is_left_out_unless_set():
    assert "storageClassName" not in by_kind(plan_for("namespace").docs)["PersistentVolumeClaim"]["spec"]
    pvc = by_kind(plan_for("namespace", {"mlflow": {"storage_class": "fast"}}).docs)["PersistentVolumeClaim"]
    assert pvc["spec"]["storageClassName"] == "fast"


def test_a_changed_input_rolls_the_pod_and_the_same_input_does_not():
    def digest(docs):
        return by_kind(docs)["Deployment"]["spec"]["template"]["metadata"]["annotations"][
            "datalab-playbooks/config-hash"
        ]

    assert digest(plan_for("namespace").docs) == digest(plan_for("namespace").docs)
    assert digest(plan_for("namespace").docs) != digest(plan_for("namespace", prefix="other").docs)


def test_wildcard_host_is_refused():
    with pytest.raises(PlaybookError, match=r"'\*' is not an allowed host"):
        allowed_hosts("mlflow", "ns", "cluster.local", ["*"])


def test_job_execution_is_off_unless_set_and_a_change_rolls_the_pod():
    """MLflow's job consumers (huey, ~245 MB each) get a 768Mi pod OOM-killed: off by default."""

    def server(docs):
        deployment = by_kind(docs)["Deployment"]
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        return env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"], deployment["spec"]["template"]["metadata"]["annotations"][
            "datalab-playbooks/config-hash"
        ]

    off, off_hash = server(plan_for("namespace").docs)
    on, on_hash = server(plan_for("namespace", {"mlflow": {"job_execution": True}}).docs)
    assert (off, on) == ("false", "true")
    assert off_hash != on_hash
    # kubectl reads the value as a string, not a YAML boolean.
    assert "value: 'false'" in to_yaml(plan_for("namespace").docs)
    validate_all(plan_for("namespace", {"mlflow": {"job_execution": True}}).docs)


@pytest.mark.parametrize("value", ["false", "yes", 1, None])
def test_job_execution_must_be_true_or_false(value):
    with pytest.raises(
        PlaybookError,
        match=r"^setting mlflow.job_execution is .*, which is not true or false: fix it in invoke.yaml or INVOKE_MLFLOW_JOB_EXECUTION$",
    ):
        plan_for("namespace", {"mlflow": {"job_execution": value}})


def test_local_server_gets_the_setting_and_a_change_restarts_it(tmp_path):
    from playbooks.services.mlflow_local import process

    def server(overrides=None):
        cfg = config({"local": {"state_dir": str(tmp_path)}, **(overrides or {})})
        return process(FakeContext(cfg), 5000, str(tmp_path / "artifacts"), None)

    off, on = server(), server({"mlflow": {"job_execution": True}})
    assert off.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert on.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
    assert off.fingerprint() != on.fingerprint() and off.fingerprint() == server().fingerprint()
