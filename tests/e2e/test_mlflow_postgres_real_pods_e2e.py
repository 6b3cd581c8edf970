"""MLflow on both backends on real pods: up, smoke, a user's run, backup to the bucket, purge, up again
empty, restore, the run read back; the pods' peak memory. PostgreSQL is "the platform's database":
a real server on the lab's bridge address, declared to the session as POSTGRES_LAB_* variables.

Needs the real-node lab (or --provider existing/kind) and the images the defaults name; skips otherwise.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from playbooks import defaults
from tests.conftest import one_error_line
from tests.e2e import lab
from tests.e2e.test_real_pods_e2e import memory_sampler, need_images
from tests.e2e.user_clients import LOG_A_RUN, READ_A_RUN, forward, user_python
from tests.pgserver import pg_server

pytestmark = pytest.mark.timeout(1800)
MLFLOW_IMAGE = defaults.DEFAULTS["mlflow"]["image"]
TOOLS_IMAGE = "docker.io/library/postgres:16.11-bookworm"
PREVIOUS_IMAGE = f"ghcr.io/mlflow/mlflow:v{defaults.MLFLOW_PREVIOUS_VERSION}-full"


@contextlib.contextmanager
def platform_database(session, tmp_path):
    """A real PostgreSQL the pods reach (the lab's bridge), declared as the platform declares its databases."""
    if session.cluster.provider != "lab":
        pytest.skip("real pods: the platform's database stands on the lab's bridge address; run on the lab")
    with pg_server(tmp_path, listen=lab.BRIDGE_ADDRESS) as pg:
        session.env.update(
            {
                "POSTGRES_LAB_HOST": pg.host,
                "POSTGRES_LAB_PORT": str(pg.port),
                "POSTGRES_LAB_USER": pg.user,
                "POSTGRES_LAB_PASSWORD": pg.password,
                "POSTGRES_LAB_DATABASES": pg.dbname,
            }
        )
        yield pg


def backups(session) -> set[str]:
    listed = session.s3.client().list_objects_v2(Bucket=session.s3.bucket, Prefix="mlflow/backups/")
    return {o["Key"] for o in listed.get("Contents", [])}


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize("source", ["sqlite", "postgres", "service"])
def test_backup_purge_restore_reads_the_run_back_on_real_pods(real_session, source, tmp_path):
    """The whole path on each backend: the previous MLflow release up, smoke, a user's run, `up` with the
    current release (the schema migrated), the run read back, backup, purge, restore, the run read back.
    sqlite; postgres: the platform's database; service: the project's postgres service (postgres.up)."""
    session = real_session
    backend = "sqlite" if source == "sqlite" else "postgres"
    need_images(session, [MLFLOW_IMAGE, PREVIOUS_IMAGE] + ([TOOLS_IMAGE] if backend == "postgres" else []))
    if session.s3 is None:
        pytest.skip("real pods: backups go to the platform's bucket, which stands outside the cluster on the lab")
    if source == "service":
        ok(session.run("postgres.up", timeout=900))
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(platform_database(session, tmp_path)) if source == "postgres" else None
        sampler = memory_sampler(session)
        try:
            with sampler or contextlib.nullcontext():
                previous = {"INVOKE_MLFLOW_IMAGE": PREVIOUS_IMAGE}
                up = ok(session.run("mlflow.up", "--backend", backend, env=previous, timeout=900))
                if pg:
                    assert f"backend PostgreSQL: database mlflow on {pg.host}:{pg.port}" in up.stdout
                if source == "service":
                    assert "(the postgres service 'postgres')" in up.stdout
                ok(session.run("mlflow.smoke", timeout=600))
                with forward(session.kubeconfig, session.namespace, "mlflow", 5000) as port:
                    run_id = user_python(session.env, LOG_A_RUN, f"http://127.0.0.1:{port}")

                # The current release on the previous one's database: migrated before it serves.
                upgrade = ok(session.run("mlflow.up", timeout=1500))
                print(f"{session.mode}/{source}: upgrade\n{upgrade.stdout}")
                assert f"image changes from {PREVIOUS_IMAGE} to {MLFLOW_IMAGE}" in upgrade.stdout, upgrade.stdout
                assert "mlflow: database migrated to " in upgrade.stdout, upgrade.stdout
                with forward(session.kubeconfig, session.namespace, "mlflow", 5000) as port:
                    upgraded = json.loads(user_python(session.env, READ_A_RUN, f"http://127.0.0.1:{port}", run_id))
                assert upgraded["params"] == {"alpha": "0.5"} and upgraded["metrics"] == {"rmse": 0.25}

                before = backups(session)
                backup = ok(session.run("mlflow.backup", timeout=600))
                ext = ".pgdump" if backend == "postgres" else ".sqlite"
                keys = [key for key in backups(session) - before if key.endswith(ext)]  # the bucket outlives a test
                assert len(keys) == 1 and f"s3://{session.s3.bucket}/{keys[0]}" in backup.stdout, backup.stdout

                ok(session.run("mlflow.down", "--purge", timeout=600))
                if pg:
                    pg.sql('DROP DATABASE "mlflow"')
                    pg.create_database("mlflow")
                if source == "service":  # the database lost: a new server, a new password
                    ok(session.run("postgres.down", "--purge", timeout=600))
                    ok(session.run("postgres.up", timeout=900))
                ok(session.run("mlflow.up", "--backend", backend, timeout=900))
                restore = ok(session.run("mlflow.restore", timeout=900))
                assert "scaled to 0" in restore.stdout and f"from s3://{session.s3.bucket}/{keys[0]}" in restore.stdout
                with forward(session.kubeconfig, session.namespace, "mlflow", 5000) as port:
                    kept = json.loads(user_python(session.env, READ_A_RUN, f"http://127.0.0.1:{port}", run_id))
                assert kept == {
                    "params": {"alpha": "0.5"},
                    "metrics": {"rmse": 0.25},
                    "text": "kept across down and up",
                }
                refused = session.run("mlflow.restore", timeout=300)
                one_error_line(refused, ("is not empty", "--force"))
            if sampler is not None:
                rows = sampler.rows()
                print("\n".join(row.row() for row in rows))
                servers = [row for row in rows if row.pod.startswith("mlflow-") and "dbtool" not in row.pod]
                assert servers and all(row.ratio <= 0.8 for row in servers), [row.row() for row in servers]
            for output in session.outputs:
                assert not pg or pg.password not in output
        finally:
            ok(session.run("mlflow.down", "--purge", timeout=600))
            if source == "service":
                ok(session.run("postgres.down", "--purge", timeout=600))
    assert session.labelled() == []


def test_a_database_the_pods_cannot_use_is_one_line_from_the_wait(real_session, tmp_path):
    """A host only pods resolve (a Service without selector in front of the real server) and a wrong password:
    nothing can check it from here, so the server's init container fails and the wait says so early."""
    session = real_session
    need_images(session, [MLFLOW_IMAGE])
    if session.mode != "namespace":
        pytest.skip("one mode is enough: the wait is the same")
    with platform_database(session, tmp_path) as pg:
        for key in [k for k in session.env if k.startswith("POSTGRES_LAB_")]:
            session.env.pop(key)
        alias = f"""
apiVersion: v1
kind: Service
metadata: {{name: pgalias, namespace: {session.namespace}}}
spec: {{ports: [{{port: 5432, targetPort: {pg.port}}}]}}
---
apiVersion: v1
kind: Endpoints
metadata: {{name: pgalias, namespace: {session.namespace}}}
subsets: [{{addresses: [{{ip: {pg.host}}}], ports: [{{port: {pg.port}}}]}}]
"""
        session.cluster.kubectl("apply", "-f", "-", stdin=alias)
        env = {"DATABASE_URL": "postgresql://mlflow:not-the-password@pgalias:5432/mlflow"}
        started = time.monotonic()
        result = session.run("mlflow.up", "--backend", "postgres", env=env, timeout=600)
        took = time.monotonic() - started
        one_error_line(result, ("db-check",))
        assert "not checked from here" in result.stdout
        assert "db-check: cannot use PostgreSQL database mlflow at pgalias:5432" in result.stdout
        assert took < 240, f"the wait took {took:.0f}s"
        print(f"refused after {took:.0f}s")
        ok(session.run("mlflow.down", "--purge", timeout=600))
