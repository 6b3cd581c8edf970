"""postgres.* in the cluster modes: on envtest (the real API server and controllers, a fake kubelet)
what the API decides; on real pods (the lab) the whole path, a row kept across down and up."""

from __future__ import annotations

import base64
import contextlib
import json
import time

import pytest

from playbooks.defaults import DEFAULTS
from tests.e2e.test_real_pods_e2e import HEADROOM, memory_sampler, need_images
from tests.e2e.user_clients import forward

PG_IMAGE = "docker.io/library/postgres"
MEDIUM = """
apiVersion: v1
kind: ResourceQuota
metadata: {name: medium}
spec:
  hard: {limits.cpu: "2", limits.memory: 2Gi, services: "10", secrets: "25", persistentvolumeclaims: "6"}
"""
CONTRACT = {"username", "password", "dbname", "host", "port"}


def app_secret(session) -> dict[str, str]:
    out = session.cluster.kubectl("get", "secret", "postgres-app", "-n", session.namespace, "-o", "json")
    return {k: base64.b64decode(v).decode() for k, v in json.loads(out.stdout)["data"].items()}


def uid(session, kind: str, name: str) -> str:
    out = session.cluster.kubectl("get", kind, name, "-n", session.namespace, "-o", "jsonpath={.metadata.uid}")
    return out.stdout.strip()


def statefulsets(session) -> list[str]:
    out = session.cluster.kubectl("get", "statefulsets", "-n", session.namespace, "-o", "name")
    return sorted(out.stdout.split())


def one_error(result, *fragments: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_postgres_keeps_its_password_and_down_keeps_the_data(session):
    dry = session.run("postgres.up", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would generate a password in Secret postgres-app" in dry.stdout and "<redacted>" in dry.stdout
    assert session.labelled() == [], "a dry run writes nothing"

    up = session.run("postgres.up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "generated a password in Secret postgres-app" in up.stdout and "postgres: ready after" in up.stdout
    app = app_secret(session)
    assert set(app) == CONTRACT
    assert (app["username"], app["dbname"], app["host"], app["port"]) == ("mlflow", "mlflow", "postgres", "5432")
    assert len(app["password"]) >= 24 and app["password"] not in up.stdout + up.stderr
    objects = session.objects()
    assert objects["Service/postgres"]["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in objects["Service/postgres"]["spec"]["ports"]] == [5432]
    assert statefulsets(session) == ["statefulset.apps/postgres"]
    pvc, secret = uid(session, "pvc", "postgres-data"), uid(session, "secret", "postgres-app")

    again = session.run("postgres.up")
    assert again.returncode == 0 and "postgres: no change" in again.stdout, again.stdout + again.stderr
    assert "generated" not in again.stdout and app_secret(session) == app

    status = session.run("status")
    assert status.returncode == 0 and "postgres  postgres  ready 1/1" in status.stdout, status.stdout
    env = session.run("env")
    assert env.returncode == 0 and "export PGUSER=mlflow" in env.stdout, env.stdout + env.stderr
    assert "get secret postgres-app -o jsonpath='{.data.password}' | base64 -d" in env.stdout
    assert app["password"] not in env.stdout + env.stderr

    down = session.run("postgres.down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert session.labelled() == ["persistentvolumeclaim/postgres-data", "secret/postgres-app"]
    assert statefulsets(session) == []
    back = session.run("postgres.up")
    assert back.returncode == 0 and "generated" not in back.stdout, back.stdout + back.stderr
    assert (uid(session, "pvc", "postgres-data"), uid(session, "secret", "postgres-app")) == (pvc, secret)
    assert app_secret(session) == app

    purge = session.run("postgres.down", "--purge")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert session.labelled() == [] and statefulsets(session) == []


def test_postgres_refuses_what_does_not_match_the_kept_data(session):
    assert session.run("postgres.up").returncode == 0
    before = session.objects()
    other = session.run("postgres.up", env={"INVOKE_POSTGRES_USER": "alice"})
    one_error(other, "postgres.user is 'alice'", "made with 'mlflow'", "postgres.down --purge")
    assert session.objects() == before, "nothing changed"

    session.cluster.kubectl("delete", "secret", "postgres-app", "-n", session.namespace)
    lost = session.run("postgres.up")
    one_error(lost, "postgres-data holds a database made with the password of Secret postgres-app, which is gone")
    assert "secret/postgres-app" not in session.labelled()

    bad = session.run("postgres.up", env={"INVOKE_POSTGRES_DATABASE": "Robert'); DROP"})
    one_error(bad, "setting postgres.database is")
    assert session.run("postgres.down", "--purge").returncode == 0
    assert session.labelled() == []


def test_beside_mlflow_and_dask_the_medium_quota_needs_one_worker_less(session):
    """MLflow + Dask defaults hold 1.7 CPU / 1920Mi of the `medium` 2 CPU / 2Gi; PostgreSQL's 250m / 256Mi
    does not fit beside two workers (README: Resources): refused before any write. With one worker it fits."""
    session.cluster.kubectl("apply", "-n", session.namespace, "-f", "-", stdin=MEDIUM)
    refused = session.run("up", "--only", "postgres,mlflow,dask")
    line = one_error(refused, "does not fit the quota of namespace", "limits.memory")
    assert "limits.cpu" not in line, line
    assert session.labelled() == [] and statefulsets(session) == []
    fits = session.run("up", "--only", "postgres,mlflow,dask", "--workers", "1")
    assert fits.returncode == 0, fits.stdout + fits.stderr
    assert statefulsets(session) == ["statefulset.apps/postgres"]
    assert session.run("down", "--purge").returncode == 0
    assert session.labelled() == []


# ---------------------------------------------------------------- real pods


def write_row(port: int, app: dict[str, str], note: str) -> None:
    import pg8000.native

    connection = pg8000.native.Connection(
        app["username"], host="127.0.0.1", port=port, database=app["dbname"], password=app["password"], timeout=30
    )
    try:
        connection.run("CREATE TABLE IF NOT EXISTS kept (id integer PRIMARY KEY, note text)")
        connection.run("INSERT INTO kept VALUES (1, :note)", note=note)
    finally:
        connection.close()


def read_rows(port: int, app: dict[str, str]) -> list:
    import pg8000.native

    deadline = time.monotonic() + 60
    while True:
        try:
            connection = pg8000.native.Connection(
                app["username"], host="127.0.0.1", port=port, database=app["dbname"], password=app["password"]
            )
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    try:
        return connection.run("SELECT id, note FROM kept ORDER BY id")
    finally:
        connection.close()


@pytest.mark.timeout(1500)
def test_postgres_on_real_pods(real_session):
    """up, status, smoke, a row written by a user's client, down, up, the row read back, purge: nothing left."""
    session = real_session
    session.env["INVOKE_FORWARD_STATE_DIR"] = str(session.tmp / "forwards")
    image = DEFAULTS["postgres"]["image"]
    assert image.startswith(PG_IMAGE)
    need_images(session, [image])
    sampler = memory_sampler(session)
    try:
        with sampler or contextlib.nullcontext():
            up = session.run("postgres.up", timeout=600)
            assert up.returncode == 0, up.stdout + up.stderr
            status = session.run("postgres.status")
            assert status.returncode == 0 and "postgres: ready 1/1" in status.stdout, status.stdout + status.stderr
            smoke = session.run("smoke", timeout=300)
            assert smoke.returncode == 0, smoke.stdout + smoke.stderr
            assert any(line.startswith("postgres") and " PASS " in line for line in smoke.stdout.splitlines())
            app = app_secret(session)
            # A user's shell: `invoke forward`, then `env` names the forwarded address.
            started = session.run("forward", timeout=300)
            assert started.returncode == 0, started.stdout + started.stderr
            env = json.loads(session.run("env", "--json").stdout)
            values = {v["name"]: v for v in env["variables"] if v["service"] == "postgres"}
            assert values["PGHOST"]["value"] == "127.0.0.1" and values["PGUSER"]["value"] == "mlflow"
            assert values["PGPASSWORD"]["secret"] and values["PGPASSWORD"]["value"] is None
            write_row(int(values["PGPORT"]["value"]), app, "kept across down and up")
        if sampler is not None:
            rows = [row for row in sampler.rows() if row.pod == "postgres-0"]
            print("\n".join(row.row() for row in rows))
            assert rows and all(row.samples >= 10 for row in rows), rows
            assert all(row.ratio <= HEADROOM for row in rows), [row.row() for row in rows]

        down = session.run("postgres.down", timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "forward: stopped (nothing left to forward)" in down.stdout, down.stdout
        assert session.labelled() == ["persistentvolumeclaim/postgres-data", "secret/postgres-app"]
        assert statefulsets(session) == []
        again = session.run("postgres.up", timeout=600)
        assert again.returncode == 0 and "generated" not in again.stdout, again.stdout + again.stderr
        assert app_secret(session) == app
        with forward(session.kubeconfig, session.namespace, "postgres", 5432) as port:
            assert read_rows(port, app) == [[1, "kept across down and up"]]
        logs = session.run("postgres.logs")
        assert logs.returncode == 0 and "database system is ready to accept connections" in logs.stdout
        assert app["password"] not in "".join(session.outputs)
    finally:
        session.run("forward.stop")
        purge = session.run("postgres.down", "--purge", timeout=300)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert session.labelled() == [] and statefulsets(session) == []


@pytest.mark.timeout(600)
@pytest.mark.parametrize("real_session", ["vcluster"], indirect=True)
def test_a_postgres_image_the_node_cannot_pull_fails_fast(real_session):
    """The StatefulSet's wait stops early, in one line naming the image and the setting, as a Deployment's does."""
    session = real_session
    session.env["INVOKE_POSTGRES_IMAGE"] = "registry.invalid/no-such/postgres:0.0.1"
    started = time.monotonic()
    result = session.run("postgres.up", timeout=400)
    error = one_error(result, "registry.invalid/no-such/postgres:0.0.1", "postgres.image")
    assert time.monotonic() - started < 90, error
    assert session.run("postgres.down", "--purge").returncode == 0
