"""mlflow.backup / mlflow.restore in local mode, for real: both backends (SQLite; a real PostgreSQL with
pg_dump / pg_restore), to and from a real S3 server (moto) and local files; restore into an empty service
reproduces the runs, their params, metrics and artifact links."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from playbooks.services.mlflow_backup import NAME, file_name, sqlite_content, sqlite_copy
from tests.conftest import one_error_line, state
from tests.secret_scan import ArgvScan
from tests.test_data_safety import assert_run_kept, local_env, log_run, run_is_gone, tracking_uri
from tests.test_secret_scan import Runner

pytestmark = pytest.mark.slow


def test_names_are_timestamped_and_recognised():
    from datetime import UTC, datetime

    name = file_name("mlflow", "postgres", datetime(2026, 11, 30, 19, 5, 7, tzinfo=UTC))
    assert name == "mlflow-mlflow-20261130T190507Z.pgdump"
    assert NAME.match(name)["stamp"] == "20261130T190507Z"


def test_a_copy_of_a_live_database_is_consistent(tmp_path):
    live = sqlite3.connect(tmp_path / "live.db")
    live.execute("CREATE TABLE runs (run_uuid TEXT)")
    live.execute("CREATE TABLE experiments (experiment_id INTEGER)")
    live.execute("CREATE TABLE registered_models (name TEXT)")
    live.execute("PRAGMA journal_mode=WAL")
    live.executemany("INSERT INTO runs VALUES (?)", [(str(i),) for i in range(100)])
    live.commit()
    live.execute("INSERT INTO runs VALUES ('uncommitted')")  # open transaction: not in the copy
    sqlite_copy(tmp_path / "live.db", tmp_path / "copy.db")
    assert sqlite_content(tmp_path / "copy.db") == 100
    live.close()


def s3_keys(s3_server, prefix: str) -> list[str]:
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix)
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


def test_sqlite_backup_to_the_bucket_and_restore_into_an_empty_service(workdir, s3_server):
    run = Runner(workdir, local_env(workdir, {**s3_server.env(), "WORKSHOP_NAMESPACE": s3_server.bucket}))
    url = tracking_uri(run("mlflow.up"))
    run_id, token = log_run(url)

    backup = run("mlflow.backup")
    keys = [k for k in s3_keys(s3_server, "mlflow/backups/") if k.endswith(".sqlite")]
    assert len(keys) == 1 and NAME.match(keys[0].rsplit("/", 1)[-1]), keys
    assert f"to s3://{s3_server.bucket}/{keys[0]}" in backup.stdout

    run("mlflow.down", "--purge")
    fresh = tracking_uri(run("mlflow.up"))
    assert run_is_gone(fresh, run_id)
    pid = state(workdir, "mlflow")["pid"]
    restored = run("mlflow.restore")
    assert "stopped mlflow" in restored.stdout and f"from s3://{s3_server.bucket}/{keys[0]}" in restored.stdout
    assert state(workdir, "mlflow")["pid"] != pid, "the server was stopped and started again"
    again = tracking_uri(restored)
    assert_run_kept(again, run_id, token)  # params, metrics, and the artifact through its link

    pid = state(workdir, "mlflow")["pid"]
    refused = run("mlflow.restore", ok=False)
    one_error_line(refused, ("is not empty", "pass --force"))
    assert state(workdir, "mlflow")["pid"] == pid, "a refused restore stops nothing"
    forced = run("mlflow.restore", "--force")
    assert_run_kept(tracking_uri(forced), run_id, token)
    run("mlflow.down", "--purge")


def test_postgres_backup_to_a_file_and_restore_into_an_empty_database(workdir, pg, s3_server, tmp_path):
    env = {**s3_server.env(), "WORKSHOP_NAMESPACE": s3_server.bucket, "DATABASE_URL": pg.url()}
    run = Runner(workdir, local_env(workdir, env))
    url = tracking_uri(run("mlflow.up", "--backend", "postgres"))
    run_id, token = log_run(url)
    folder = tmp_path / "backups"
    folder.mkdir()

    with ArgvScan() as argv:  # pg_dump and pg_restore get the password in their environment only
        backup = run("mlflow.backup", "--to", str(folder))
        files = list(folder.iterdir())
        restored_here = run("mlflow.restore", "--force", "--from", str(files[0]))
    assert argv.saw("pg_dump", "--format=custom") and argv.saw("pg_restore", "--single-transaction")
    assert argv.leaks({"postgres password": pg.password}) == []
    assert_run_kept(tracking_uri(restored_here), run_id, token)
    assert len(files) == 1 and re.fullmatch(r"mlflow-mlflow-\d{8}T\d{6}Z\.pgdump", files[0].name), files
    assert f"backed up PostgreSQL database mlflow on 127.0.0.1:{pg.port} to {files[0]}" in backup.stdout

    run("mlflow.down")
    pg.sql('DROP DATABASE "mlflow"')  # the database is lost
    pg.create_database("mlflow")
    fresh = tracking_uri(run("mlflow.up", "--backend", "postgres"))
    assert run_is_gone(fresh, run_id)
    one_error_line(run("mlflow.restore", "--from", str(tmp_path / "nope.pgdump"), ok=False), ("no such file",))
    restored = run("mlflow.restore", "--from", str(files[0]))
    assert f"restored PostgreSQL database mlflow on 127.0.0.1:{pg.port} from {files[0]}" in restored.stdout
    assert_run_kept(tracking_uri(restored), run_id, token)
    one_error_line(run("mlflow.restore", "--from", str(files[0]), ok=False), ("is not empty",))

    # A backup of one backend does not restore into the other.
    run("mlflow.down")
    sqlite_env = Runner(workdir, local_env(workdir, {**s3_server.env(), "WORKSHOP_NAMESPACE": s3_server.bucket}))
    sqlite_env("mlflow.up", "--backend", "sqlite")
    one_error_line(
        sqlite_env("mlflow.restore", "--from", str(files[0]), ok=False),
        ("is a postgres backup but MLflow runs on sqlite",),
    )
    sqlite_env("mlflow.down", "--purge")
    for _, result in run.results + sqlite_env.results:
        assert pg.password not in result.stdout + result.stderr


def test_backup_with_nowhere_to_go_is_one_line(workdir):
    run = Runner(workdir, local_env(workdir))
    one_error_line(run("mlflow.backup", ok=False), ("no MLflow database on this machine",))
    run("mlflow.up", "--storage", "none")
    one_error_line(run("mlflow.backup", ok=False), ("local folder, not a bucket", "--to PATH"))
    one_error_line(
        run("mlflow.backup", "--to", str(Path(workdir) / "no" / "such" / "x.sqlite"), ok=False), ("does not exist",)
    )
    run("mlflow.down", "--purge")
