"""MLflow upgrades that keep every run, in local mode and for real: the previous MLflow release (in a venv of
its own) writes a SQLite database, then `mlflow.up` with the current MLflow migrates it and reads the run back;
a failing migration keeps the old server; a database of a newer schema is refused with nothing changed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from playbooks.defaults import MLFLOW_PREVIOUS_VERSION, MLFLOW_VERSION
from playbooks.errors import PlaybookError
from playbooks.procs import free_port, http_ok, start, stop_group, wait_until
from playbooks.services.mlflow_upgrade import python_of, schema_state
from tests.conftest import QUIET_ENV, one_error_line, state
from tests.test_data_safety import CLIENT_ENV, assert_run_kept, local_env, log_run, tracking_uri
from tests.test_secret_scan import Runner

pytestmark = pytest.mark.slow
CACHE = Path(os.environ.get("DATALAB_PLAYBOOKS_CACHE", Path.home() / ".cache" / "datalab-playbooks"))
PREVIOUS = CACHE / "mlflow-prev"


@pytest.fixture(autouse=True)
def _quick_client(monkeypatch):
    for key, value in CLIENT_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def previous_mlflow() -> str:
    """The previous MLflow release's `mlflow`, installed once into a venv outside the checkout."""
    specs = [f"mlflow=={MLFLOW_PREVIOUS_VERSION}", "boto3", "psycopg2-binary"]
    done = PREVIOUS / ".complete"
    if not done.exists() or done.read_text().split() != specs:
        PREVIOUS.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not (PREVIOUS / "bin" / "pip").exists():
                subprocess.run(
                    [sys.executable, "-m", "venv", str(PREVIOUS)], check=True, capture_output=True, timeout=120
                )
            subprocess.run(
                [str(PREVIOUS / "bin" / "pip"), "install", "-q", *specs], check=True, capture_output=True, timeout=1200
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
            pytest.skip(f"cannot install {' '.join(specs)} into {PREVIOUS}: {str(error)[:200]}")
        done.write_text(" ".join(specs))
    return str(PREVIOUS / "bin" / "mlflow")


def db_uri(path: Path) -> str:
    return f"sqlite:///{path}"


def revision(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("select version_num from alembic_version").fetchone()[0]


@pytest.fixture(scope="session")
def previous_db(previous_mlflow, tmp_path_factory) -> Path:
    """An empty database at the previous release's schema, made by its `mlflow db upgrade`."""
    path = tmp_path_factory.mktemp("prev-db") / "mlflow.db"
    env = {**os.environ, **QUIET_ENV}
    subprocess.run(
        [previous_mlflow, "db", "upgrade", db_uri(path)], env=env, check=True, capture_output=True, timeout=180
    )
    return path


# ---------------------------------------------------------------- schema_state, on real databases


def test_schema_state_of_a_previous_release_database(previous_mlflow, previous_db, tmp_path):
    theirs = schema_state(db_uri(previous_db), python=python_of(previous_mlflow))
    assert (theirs.state, theirs.version) == ("current", MLFLOW_PREVIOUS_VERSION)
    ours = schema_state(db_uri(previous_db))
    assert ours.state == "older" and ours.version == MLFLOW_VERSION
    assert ours.revision == theirs.head == revision(previous_db) and ours.head != ours.revision
    assert ours.refusal("x") is None


def test_schema_state_newer_empty_unversioned_and_unreadable(previous_db, tmp_path):
    newer = tmp_path / "newer.db"
    newer.write_bytes(previous_db.read_bytes())
    with sqlite3.connect(newer) as db:
        db.execute("update alembic_version set version_num = 'ffffffff0001'")
    found = schema_state(db_uri(newer))
    assert (found.state, found.revision) == ("newer", "ffffffff0001")
    assert "ffffffff0001, newer than MLflow" in found.refusal("mlflow.up") and "nothing was changed" in found.refusal(
        "x"
    )

    assert schema_state(db_uri(tmp_path / "missing.db")).state == "empty"
    with sqlite3.connect(tmp_path / "other.db") as db:
        db.execute("create table things (x int)")
    assert schema_state(db_uri(tmp_path / "other.db")).state == "unversioned"
    (tmp_path / "garbage.db").write_bytes(b"not a database at all, " * 100)
    with pytest.raises(PlaybookError, match="cannot read the tracking database's schema revision"):
        schema_state(db_uri(tmp_path / "garbage.db"))


# ---------------------------------------------------------------- mlflow.up across a release


def start_previous(previous_mlflow: str, folder: Path, s3_server) -> tuple:
    """The previous release's `mlflow server` on the database local mode uses, as a user ran it before."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        previous_mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", db_uri(folder / "mlflow.db"),
        "--serve-artifacts", "--artifacts-destination", f"s3://{s3_server.bucket}/mlflow",
    ]  # fmt: skip
    env = {**os.environ, **QUIET_ENV, **s3_server.env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = folder.parent / "previous.log"
    process = start(argv, env, log, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/health"), 120, "previous mlflow server", process, log)
    except BaseException:
        stop_group(process.pid)
        raise
    return process, url


def runner(workdir: Path, s3_server, extra: dict | None = None) -> Runner:
    return Runner(
        workdir, local_env(workdir, {**s3_server.env(), "WORKSHOP_NAMESPACE": s3_server.bucket, **(extra or {})})
    )


def test_up_with_the_current_release_migrates_and_reads_the_run_back(workdir, s3_server, previous_mlflow):
    folder = workdir / ".playbooks/local/mlflow"
    process, url = start_previous(previous_mlflow, folder, s3_server)
    try:
        run_id, token = log_run(url)
        assert_run_kept(url, run_id, token)
    finally:
        stop_group(process.pid)
    old = revision(folder / "mlflow.db")

    up = runner(workdir, s3_server)("mlflow.up")
    head = schema_state(db_uri(folder / "mlflow.db"))
    assert head.state == "current" and head.revision != old
    assert f"mlflow: migrating the database schema from revision {old} to {head.revision}" in up.stdout, up.stdout
    assert "mlflow: database migrated in" in up.stdout
    assert state(workdir, "mlflow")["inputs"]["mlflow_version"] == MLFLOW_VERSION
    assert_run_kept(tracking_uri(up), run_id, token)
    log = (folder / "mlflow.log").read_text()
    migration = log.split("datalab-playbooks: mlflow db upgrade (mlflow.up)\n", 1)[1]
    assert "Updating database tables" in migration.split("Registry store URI")[0], "its output, in the service's log"

    again = runner(workdir, s3_server)("mlflow.up")
    assert "already running and healthy" in again.stdout and "migrating" not in again.stdout
    runner(workdir, s3_server)("mlflow.down", "--purge")


def orphan_span(database: Path) -> None:
    """A span whose trace is gone (as a crashed writer may leave): MLflow's trace-analytics migration refuses it."""
    with sqlite3.connect(database) as db:
        columns = db.execute("pragma table_info(spans)").fetchall()
        values = {
            name: ("orphan-trace" if name == "trace_id" else 0 if kind.upper() in ("INTEGER", "BIGINT") else "x")
            for _, name, kind, notnull, default, _pk in columns
            if notnull and default is None
        }
        names = ", ".join(values)
        db.execute(f"insert into spans ({names}) values ({', '.join('?' * len(values))})", list(values.values()))


def test_a_failing_migration_keeps_the_old_server_and_says_why(workdir, s3_server, previous_mlflow):
    folder = workdir / ".playbooks/local/mlflow"
    old_up = runner(workdir, s3_server, {"INVOKE_MLFLOW_LOCAL_COMMAND": previous_mlflow})("mlflow.up")
    url = tracking_uri(old_up)
    before = state(workdir, "mlflow")
    assert before["argv"][0] == previous_mlflow and before["inputs"]["mlflow_version"] == MLFLOW_PREVIOUS_VERSION
    run_id, token = log_run(url)
    orphan_span(folder / "mlflow.db")
    old = revision(folder / "mlflow.db")

    failed = runner(workdir, s3_server)("mlflow.up", ok=False)
    line = one_error_line(failed, ("the database migration from revision", "failed", "Cannot backfill trace analytics"))
    assert f"the old server runs again at {url}" in line
    assert "stopping the server" in failed.stdout
    after = state(workdir, "mlflow")
    assert after["argv"][0] == previous_mlflow and after["pid"] != before["pid"], "the old release, started again"
    assert revision(folder / "mlflow.db") == old, "the schema is where it was"
    assert_run_kept(url, run_id, token)
    runner(workdir, s3_server)("mlflow.down", "--purge")


def test_a_newer_schema_is_refused_with_nothing_stopped(workdir, s3_server):
    folder = workdir / ".playbooks/local/mlflow"
    run = runner(workdir, s3_server)
    url = tracking_uri(run("mlflow.up"))
    run_id, token = log_run(url)
    pid = state(workdir, "mlflow")["pid"]
    # As a later MLflow leaves it: a revision this MLflow's migration scripts do not know.
    with sqlite3.connect(folder / "mlflow.db") as db:
        db.execute("update alembic_version set version_num = 'ffffffff0002'")
    before = (folder / "mlflow.db").read_bytes()

    # A changed input (the port) would restart the server: the refusal comes first.
    refused = run("mlflow.up", "--port", str(free_port()), ok=False)
    one_error_line(refused, ("revision ffffffff0002, newer than MLflow", "nothing was changed"))
    assert state(workdir, "mlflow")["pid"] == pid and http_ok(f"{url}/health"), "the server was not stopped"
    assert (folder / "mlflow.db").read_bytes() == before
    assert_run_kept(url, run_id, token)
    run("mlflow.down", "--purge")


def test_postgres_is_migrated_while_the_old_server_serves_and_a_newer_schema_is_refused(
    workdir, s3_server, previous_mlflow, pg
):
    """--backend postgres: the previous release on a real PostgreSQL, then the current one: the old server
    is not stopped for the migration (only after it), the run is read back; then a newer schema is refused."""
    env = {"DATABASE_URL": pg.url()}
    old_up = runner(workdir, s3_server, {**env, "INVOKE_MLFLOW_LOCAL_COMMAND": previous_mlflow})(
        "mlflow.up", "--backend", "postgres"
    )
    url = tracking_uri(old_up)
    assert state(workdir, "mlflow")["inputs"]["mlflow_version"] == MLFLOW_PREVIOUS_VERSION
    run_id, token = log_run(url)
    old = pg.sql("SELECT version_num FROM alembic_version", "mlflow")

    run = runner(workdir, s3_server, env)
    up = run("mlflow.up")  # the running server's backend is kept
    head = pg.sql("SELECT version_num FROM alembic_version", "mlflow")
    assert head != old and f"mlflow: migrating the database schema from revision {old} to {head}" in up.stdout
    assert "stopping the server" not in up.stdout, "PostgreSQL: the old server serves during the migration"
    assert state(workdir, "mlflow")["inputs"]["mlflow_version"] == MLFLOW_VERSION
    new_url = tracking_uri(up)
    assert_run_kept(new_url, run_id, token)

    pid = state(workdir, "mlflow")["pid"]
    pg.sql("UPDATE alembic_version SET version_num = 'ffffffff0004'", "mlflow")
    refused = run("mlflow.up", "--port", str(free_port()), ok=False)
    one_error_line(refused, ("revision ffffffff0004, newer than MLflow", "nothing was changed"))
    assert state(workdir, "mlflow")["pid"] == pid and http_ok(f"{new_url}/health")
    for _, result in run.results:
        assert pg.password not in result.stdout + result.stderr
    pg.sql(f"UPDATE alembic_version SET version_num = '{head}'", "mlflow")
    run("mlflow.down", "--purge")
