"""The upgrade's Jobs, offline: each is the server's own pod (image, environment, Secrets, volumes, pod
security) with its command; schema-valid; "restricted"; no secret in them. And the helpers that read a step's
answer and a migration's cause."""

from __future__ import annotations

import json

import pytest

from playbooks.errors import PlaybookError
from playbooks.s3 import S3Settings
from playbooks.services import mlflow
from playbooks.services.mlflow_db import Database
from playbooks.services.mlflow_upgrade import (
    CHECK,
    CHECK_SCRIPT,
    MIGRATE,
    Upgrade,
    cause_line,
    error_line,
    parse_check,
)
from tests.manifests import FakeContext, config, target, validate_all
from tests.test_pod_security import assert_restricted

NEW = "ghcr.io/mlflow/mlflow:v3.17.2-full"
S3 = S3Settings("AKIAEXAMPLEKEY", "example-secret-value", endpoint_url="http://minio:9000")


class NoServerPod:
    """The one read a step's rendering makes (where the server pod runs): none is scheduled."""

    def __init__(self, namespace: str):
        self.target = target("namespace", namespace)

    def get_json(self, what: str, selector: str | None = None, timeout: float = 20) -> dict:
        assert what == "pods" and "app.kubernetes.io/component=tracking-server" in selector
        return {"items": []}


def upgrade(db: Database | None = None) -> Upgrade:
    c = FakeContext(config())
    plan = mlflow.build_plan(c, target("namespace"), S3, "ws-frank", "--bucket", "mlflow", "mlflow", db)
    live = {"spec": {"replicas": 1}}
    return Upgrade(c, NoServerPod("ws-frank-s1"), plan, live, "ghcr.io/mlflow/mlflow:v3.16.1-full", NEW)


def steps(found: Upgrade) -> dict[str, dict]:
    resources = {"limits": {"cpu": "100m", "memory": "96Mi"}, "requests": {"cpu": "50m", "memory": "64Mi"}}
    return {
        CHECK: found.job(CHECK, resources, ["python", "-c", CHECK_SCRIPT], read_only=True)[0],
        MIGRATE: found.job(MIGRATE, resources, ["sh", "-c", "exec mlflow db upgrade x"], read_only=False)[0],
    }


POSTGRES = Database("db.example", 5432, "mlflow", "mlflow", "test", password="pg-s3cr3t-value")


@pytest.mark.parametrize("db", [None, POSTGRES], ids=["sqlite", "postgres"])
def test_each_step_is_the_server_pod_with_its_command(db):
    found = upgrade(db)
    server = found.server["spec"]["template"]["spec"]
    assert found.sqlite is (db is None)
    for step, job in steps(found).items():
        validate_all([job])
        pod = job["spec"]["template"]["spec"]
        assert_restricted(pod)
        container = pod["containers"][0]
        assert container["image"] == NEW and container["name"] == step
        assert job["metadata"]["name"] == f"mlflow-{step}" and job["spec"]["backoffLimit"] == 0
        assert job["metadata"]["labels"]["app.kubernetes.io/component"] == step
        assert job["metadata"]["labels"]["app.kubernetes.io/name"] != "mlflow", "not a server pod to the waits"
        assert pod["securityContext"] == server["securityContext"] and pod["restartPolicy"] == "Never"
        assert container["securityContext"] == server["containers"][0]["securityContext"]
        assert (
            container["env"] == server["containers"][0]["env"]
            and container["envFrom"] == server["containers"][0]["envFrom"]
        )
        assert pod["volumes"] == server["volumes"]
        assert not {"ports", "args", "startupProbe", "readinessProbe", "livenessProbe"} & set(container)
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        if db is None:
            assert mounts["db"].get("readOnly", False) is (step == CHECK)
        text = json.dumps(job)
        assert "example-secret-value" not in text and "pg-s3cr3t-value" not in text
    env = {v["name"]: v for v in server["containers"][0]["env"]}
    assert ("PGPASSWORD" in env) is (db is not None), "PostgreSQL's password reaches the Jobs as the server's does"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('noise\n{"state": "older", "revision": "a", "head": "b", "version": "3.17.2"}\n', ("older", "a", "b")),
        ('{"state": "newer", "revision": "f", "head": "b", "version": "3.17.2"}', ("newer", "f", "b")),
    ],
)
def test_parse_check(text, expected):
    found = parse_check(text, "mlflow")
    assert (found.state, found.revision, found.head) == expected


def test_parse_check_says_why_it_cannot_judge():
    with pytest.raises(PlaybookError, match=r"gave no answer \(Traceback"):
        parse_check("Traceback (most recent call last): boom", "mlflow")
    failed = '{"state": "error", "error": "OperationalError: could not connect"}'
    with pytest.raises(PlaybookError, match=r"could not connect.*nothing was changed"):
        parse_check(failed, "mlflow")


def test_the_cause_of_a_failed_migration():
    output = (
        "INFO Updating database tables\nTraceback (most recent call last):\n  File x\nRuntimeError: Cannot backfill\n"
    )
    assert error_line(output) == cause_line(output) == "RuntimeError: Cannot backfill"
    assert error_line("INFO Updating database tables\n") is None
    assert cause_line("INFO Updating database tables\n") == "INFO Updating database tables"
