"""mlflow.up --backend postgres against a real API server, in both modes: what is applied, what is not,
where the password goes (a Secret, never argv or output), and what the next `up` keeps."""

from __future__ import annotations

import base64
import json

from tests.conftest import one_error_line

PASSWORD = "pw-E2e-s3cret-4f3a2b1c"
PLATFORM = {
    "POSTGRES_MAIN_HOST": "pg.platform.invalid",
    "POSTGRES_MAIN_PORT": "5432",
    "POSTGRES_MAIN_USER": "frank",
    "POSTGRES_MAIN_PASSWORD": PASSWORD,
    "POSTGRES_MAIN_DATABASES": "mlflow",
}


def no_password(session):
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    for output in session.outputs:
        assert PASSWORD not in output and encoded not in output


def container(session) -> dict:
    return session.objects()["Deployment/mlflow"]["spec"]["template"]["spec"]["containers"][0]


def test_the_platform_database_goes_to_a_secret_and_up_keeps_the_backend(session):
    dry = session.run("mlflow.up", "--backend", "postgres", "--dry-run", env=PLATFORM)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert session.labelled() == [], "a dry-run applies nothing"

    up = session.run("mlflow.up", "--backend", "postgres", env=PLATFORM)
    assert up.returncode == 0, up.stdout + up.stderr
    assert (
        "backend PostgreSQL: database mlflow on pg.platform.invalid:5432 (the platform's database main/mlflow"
        in up.stdout
    )
    assert "not checked from here" in up.stdout
    objects = session.objects()
    assert "PersistentVolumeClaim/mlflow-db" not in objects
    secret = objects["Secret/mlflow-db"]
    assert base64.b64decode(secret["data"]["password"]).decode() == PASSWORD
    env = {e["name"]: e for e in container(session)["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "postgresql+psycopg2://frank@pg.platform.invalid:5432/mlflow"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
    assert all(PASSWORD not in arg for arg in container(session)["args"])
    pod = objects["Deployment/mlflow"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["db-check"]
    assert objects["Deployment/mlflow"]["spec"]["strategy"]["type"] == "RollingUpdate"

    again = session.run("mlflow.up", env=PLATFORM)  # no --backend: the deployed one is kept
    assert again.returncode == 0 and "mlflow: no change" in again.stdout, again.stdout + again.stderr
    status = session.run("mlflow.status")
    assert "backend          PostgreSQL, database mlflow on pg.platform.invalid:5432" in status.stdout
    no_password(session)

    down = session.run("mlflow.down")
    assert down.returncode == 0 and session.labelled() == []


def test_no_database_anywhere_applies_nothing(session):
    result = session.run("mlflow.up", "--backend", "postgres")
    one_error_line(result, ("no PostgreSQL database: run `invoke postgres.up` first",))
    assert session.labelled() == []
    several = {**PLATFORM, "POSTGRES_MAIN_DATABASES": "mlflow,other"}
    one_error_line(session.run("mlflow.up", "--backend", "postgres", env=several), ("--database H/DB",))
    assert session.labelled() == []


def test_the_postgres_service_secret_is_used_as_it_is_and_sqlite_data_is_kept(session):
    first = session.run("mlflow.up")
    assert first.returncode == 0, first.stdout + first.stderr
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "postgres-app", "namespace": session.namespace},
        "stringData": {
            "username": "mlflow",
            "password": PASSWORD,
            "dbname": "mlflow",
            "host": "postgres",
            "port": "5432",
        },
    }
    session.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(secret))
    up = session.run("mlflow.up", "--backend", "postgres")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "the postgres service 'postgres'" in up.stdout
    objects = session.objects()
    assert "Secret/mlflow-db" not in objects and "PersistentVolumeClaim/mlflow-db" in objects, "SQLite's volume is kept"
    env = {e["name"]: e for e in container(session)["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "postgres-app", "key": "password"}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "postgresql+psycopg2://mlflow@postgres:5432/mlflow"
    no_password(session)
    # Data safety: the runs live in the postgres service's database, which mlflow.down --purge never touches.
    purge = session.run("mlflow.down", "--purge")
    assert purge.returncode == 0 and "deleted persistentvolumeclaim/mlflow-db" in purge.stdout
    assert session.labelled() == []
    kept = session.cluster.kubectl("get", "secret/postgres-app", "-n", session.namespace, "-o", "name", check=False)
    assert kept.stdout.strip() == "secret/postgres-app"


def test_backup_and_restore_refuse_in_one_line_before_touching_anything(session):
    one_error_line(session.run("mlflow.backup"), (f"mlflow 'mlflow' is not deployed in namespace {session.namespace}",))
    one_error_line(session.run("mlflow.restore", "--from", "x.sqlite"), ("is not deployed",))
    up = session.run("mlflow.up")
    assert up.returncode == 0, up.stdout + up.stderr
    versions = {k: v["metadata"]["resourceVersion"] for k, v in session.objects().items()}
    one_error_line(session.run("mlflow.restore", "--from", str(session.tmp / "nope.sqlite")), ("no such file",))
    wrong = session.tmp / "mlflow-mlflow-20261130T000000Z.pgdump"
    wrong.write_bytes(b"PGDMP")
    one_error_line(
        session.run("mlflow.restore", "--from", str(wrong)), ("is a postgres backup but MLflow runs on sqlite",)
    )
    bad = session.tmp / "mlflow-mlflow-20261130T000000Z.sqlite"
    bad.write_text("not a database")
    one_error_line(session.run("mlflow.restore", "--from", str(bad)), ("is not a SQLite database",))
    assert {k: v["metadata"]["resourceVersion"] for k, v in session.objects().items()} == versions, "nothing changed"
    assert session.objects()["Deployment/mlflow"]["spec"]["replicas"] == 1
    session.run("mlflow.down", "--purge")


def test_switching_backends_both_ways_applies(session):
    """RollingUpdate (PostgreSQL) back to Recreate (SQLite): the API refuses a Recreate that keeps rollingUpdate."""
    for args in (["--backend", "postgres"], ["--backend", "sqlite"], ["--backend", "postgres"]):
        result = session.run("mlflow.up", *args, env=PLATFORM)
        assert result.returncode == 0, result.stdout + result.stderr
    session.run("mlflow.up", "--backend", "sqlite", env=PLATFORM)
    deployment = session.objects()["Deployment/mlflow"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "initContainers" not in deployment["spec"]["template"]["spec"]
    session.run("mlflow.down", "--purge")
