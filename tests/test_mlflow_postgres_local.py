"""MLflow on a real PostgreSQL in local mode: the CLI as a user runs it, the database found in the
environment, the password only in the server's environment, bad input refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from playbooks.procs import environ, free_port, identity
from tests.conftest import one_error_line, processes_under, state
from tests.test_data_safety import assert_run_kept, local_env, log_run, tracking_uri
from tests.test_postgres import home  # noqa: F401 (a fixture)
from tests.test_secret_scan import Runner

pytestmark = pytest.mark.slow


def server_processes(workdir: Path) -> list[int]:
    return [pid for pid in processes_under(workdir) if (found := identity(pid)) and "server" in " ".join(found.cmdline)]


def test_up_on_postgres_keeps_the_password_off_argv_and_output(workdir, pg, s3_server):
    s3 = {**s3_server.env(), "WORKSHOP_NAMESPACE": s3_server.bucket}
    run = Runner(workdir, local_env(workdir, {"DATABASE_URL": pg.url(), "INVOKE_MLFLOW_POSTGRES_WORKERS": "2", **s3}))
    up = run("mlflow.up", "--backend", "postgres")
    assert (
        f"mlflow: backend PostgreSQL, database mlflow on 127.0.0.1:{pg.port} (DATABASE_URL), 2 worker(s)" in up.stdout
    )
    url = tracking_uri(up)
    recorded = state(workdir, "mlflow")
    assert recorded["inputs"]["backend"] == f"postgresql+psycopg2://mlflow@127.0.0.1:{pg.port}/mlflow"
    argv = recorded["cmdline"]
    assert argv[argv.index("--workers") + 1] == "2" and not any("backend-store" in a for a in argv)
    servers = server_processes(workdir)
    assert servers, "the scan found the server"
    for pid in servers:
        assert pg.password not in " ".join(identity(pid).cmdline)
    leader = environ(recorded["pid"])
    assert leader["PGPASSWORD"] == pg.password, "libpq reads it from the environment"
    assert leader["MLFLOW_BACKEND_STORE_URI"] == recorded["inputs"]["backend"]

    run_id, token = log_run(url)
    assert pg.sql(f"SELECT count(*) FROM runs WHERE run_uuid = '{run_id}'", "mlflow") == "1", "the run is in PostgreSQL"
    status = run("mlflow.status")
    assert f"mlflow: backend PostgreSQL, database mlflow on 127.0.0.1:{pg.port}" in status.stdout
    smoke = run("mlflow.smoke")
    assert "mlflow: PASS" in smoke.stdout

    again = run("mlflow.up")  # no --backend: the running server's is kept
    assert "already running and healthy" in again.stdout and "backend PostgreSQL" in again.stdout

    down = run("mlflow.down", "--purge")  # the local folder only: the runs in PostgreSQL, the artifacts in S3
    assert f"the runs stay in PostgreSQL, database mlflow on 127.0.0.1:{pg.port}" in down.stdout
    assert not processes_under(workdir)
    back = tracking_uri(run("mlflow.up", "--backend", "postgres"))
    assert_run_kept(back, run_id, token)
    run("mlflow.down", "--purge")
    for _, result in run.results:
        assert pg.password not in result.stdout + result.stderr


def test_the_platform_database_and_the_sqlite_default(workdir, pg):
    platform = {
        "POSTGRES_LAB_HOST": "127.0.0.1",
        "POSTGRES_LAB_PORT": str(pg.port),
        "POSTGRES_LAB_USER": pg.user,
        "POSTGRES_LAB_PASSWORD": pg.password,
        "POSTGRES_LAB_DATABASES": "mlflow",
        "DATABASE_URL": "postgresql://nobody:wrong@127.0.0.1:1/none",  # the platform's comes first
    }
    run = Runner(workdir, local_env(workdir, platform))
    up = run("mlflow.up", "--backend", "postgres")
    assert "(the platform's database lab/mlflow (POSTGRES_LAB_*))" in up.stdout
    run("mlflow.down")
    kept = run("mlflow.up")  # a plain up (a session's start) never switches the runs away
    assert "backend PostgreSQL, database mlflow" in kept.stdout
    assert state(workdir, "mlflow")["inputs"]["backend"].startswith("postgresql+psycopg2://")
    run("mlflow.down", "--purge")
    sqlite = run("mlflow.up")  # purged: the default backend again
    assert "backend PostgreSQL" not in sqlite.stdout
    assert state(workdir, "mlflow")["inputs"]["backend"].startswith("sqlite:///")
    switched = run("mlflow.up", "--backend", "postgres")
    assert "backend PostgreSQL" in switched.stdout
    run("mlflow.down", "--purge")


def bad(workdir: Path, env: dict, *args: str):
    run = Runner(workdir, local_env(workdir, env))
    result = run(*args, ok=False)
    assert not (workdir / ".playbooks").exists(), "nothing started, no state folder"
    return result


def test_bad_database_input_is_one_line_and_starts_nothing(workdir, pg):
    closed = free_port()
    cases = [
        ({"DATABASE_URL": pg.url().replace(pg.password, "wrong-password")}, ("refused user mlflow", "check the password")),
        ({"DATABASE_URL": f"postgresql://mlflow:{pg.password}@127.0.0.1:{closed}/mlflow"}, (f"cannot reach PostgreSQL at 127.0.0.1:{closed}",)),
        ({"DATABASE_URL": pg.url(dbname="absent")}, ("database absent on 127.0.0.1", "does not exist")),
        ({"DATABASE_URL": f"postgresql://mlflow:{pg.password}@127.0.0.1:port/mlflow"}, ("DATABASE_URL is not a usable PostgreSQL URL",)),
        ({}, ("no PostgreSQL database: run `invoke postgres.up` first",)),
    ]  # fmt: skip
    for env, fragments in cases:
        result = bad(workdir, env, "mlflow.up", "--backend", "postgres")
        one_error_line(result, fragments)
        assert pg.password not in result.stdout + result.stderr
    one_error_line(bad(workdir, {}, "mlflow.up", "--backend", "mysql"), ("unknown --backend 'mysql'",))
    one_error_line(
        bad(workdir, {"INVOKE_MLFLOW_WORKERS": "2"}, "mlflow.up"), ("mlflow.workers is 2, but SQLite takes one worker",)
    )
    one_error_line(bad(workdir, {"DATABASE_URL": pg.url()}, "mlflow.up", "--backend", "postgres", "--database", "a b"))


def test_mlflow_on_the_local_postgres_service_backs_up_and_restores(home):  # noqa: F811 (the fixture imported above)
    """The project's postgres service, found by its contract (postgres_local.connection), as a user runs it
    (as `nobody` where the tests run as root: PostgreSQL refuses root)."""
    from tests.test_postgres import cli

    def ok(*args: str):
        result = cli(home, *args, env={"INVOKE_LOCAL_PORTS_MLFLOW": "0"}, timeout=300)
        assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        return result

    ok("postgres.up")
    up = ok("mlflow.up", "--backend", "postgres")
    assert "(the local postgres service (postgres.up))" in up.stdout
    url = tracking_uri(up)
    run_id, token = log_run(url)
    backup = ok("mlflow.backup", "--to", str(home))
    dump = next(home.glob("mlflow-mlflow-*.pgdump"))
    assert f"to {dump}" in backup.stdout
    refused = cli(home, "mlflow.restore", "--from", str(dump), env={"INVOKE_LOCAL_PORTS_MLFLOW": "0"})
    one_error_line(refused, ("is not empty", "--force"))
    restored = ok("mlflow.restore", "--force", "--from", str(dump))
    assert "stopped mlflow" in restored.stdout
    assert_run_kept(tracking_uri(restored), run_id, token)
    ok("mlflow.down", "--purge")
    ok("postgres.down", "--purge")
