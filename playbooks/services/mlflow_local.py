"""MLflow in local mode: `mlflow server` as a supervised process, SQLite in the state folder or PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

from playbooks import local, preflight
from playbooks.deploy import config_hash
from playbooks.errors import PlaybookError
from playbooks.mlflow_check import round_trip
from playbooks.report import Report
from playbooks.s3 import S3Settings, bucket_shortfalls, choose_bucket, s3_from_env, validate_bucket
from playbooks.services import mlflow_db, mlflow_upgrade
from playbooks.services.mlflow_db import BACKEND_URI_ENV, PASSWORD_ENV, Database

SERVICE = "mlflow"


def artifact_store(c, bucket, prefix: str, storage: str | None) -> tuple[str, S3Settings | None, str]:
    """Where artifacts go: (destination, S3 settings or None, why)."""
    from playbooks.services import storage_local

    if storage not in (None, "", "local-s3", "env", "none"):
        raise PlaybookError(f"unknown --storage {storage!r}: use local-s3, env or none")
    if bucket:
        validate_bucket(bucket)
    running = storage_local.settings(c)
    if storage == "local-s3" or (storage is None and running and not os.environ.get("AWS_ENDPOINT_URL")):
        if running is None:
            raise PlaybookError("--storage local-s3 needs the local S3 server: run `invoke storage.up` first")
        s3, chosen = running
        return f"s3://{chosen}/{prefix}", s3, f"the local S3 server (storage.up), bucket {chosen}"
    if storage != "none":
        s3 = s3_from_env(os.environ, required=False)
        configured = bucket or c.config.mlflow.bucket or os.environ.get("WORKSHOP_NAMESPACE")
        if s3 is not None and configured:
            chosen, origin = choose_bucket(bucket, c.config.mlflow.bucket, os.environ)
            return f"s3://{chosen}/{prefix}", s3, f"S3 from AWS_* (bucket from {origin})"
        if storage == "env":
            raise PlaybookError("--storage env needs AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and a --bucket")
    folder = local.service_dir(c, SERVICE) / "artifacts"
    return str(folder), None, "a local folder (no object storage configured)"


JOB_EXECUTION_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def job_execution(c) -> bool:
    """mlflow.job_execution: MLflow's job-execution consumers (huey, ~245 MB each) or none."""
    value = c.config.mlflow.get("job_execution", False)
    if not isinstance(value, bool):
        raise PlaybookError(
            f"setting mlflow.job_execution is {value!r}, which is not true or false: "
            "fix it in invoke.yaml or INVOKE_MLFLOW_JOB_EXECUTION"
        )
    return value


def job_execution_env(enabled: bool) -> dict[str, str]:
    return {JOB_EXECUTION_ENV: "true" if enabled else "false"}


def sqlite_uri(c) -> str:
    return f"sqlite:///{local.service_dir(c, SERVICE) / 'mlflow.db'}"


def service_database(c) -> Database | None:
    """The local postgres service (postgres.up), when it is installed and runs."""
    try:
        from playbooks.services import postgres_local  # type: ignore[attr-defined]
    except ImportError:
        return None
    found = postgres_local.connection(c)
    if found is None:
        return None
    return Database(
        host=found.host,
        port=int(found.port),
        user=found.user,
        dbname=found.dbname,
        origin="the local postgres service (postgres.up)",
        password_file=Path(found.password_file) if found.password_file else None,
    )


BACKEND_FILE = "backend"  # the backend of last time (not .json: those are process states)


def running_backend(c) -> str | None:
    """The backend of the server local mode runs (or ran and crashed), from its recorded inputs; else the one
    of last time (kept across `down`, forgotten by --purge), so a plain `up` never switches a user's runs away."""
    from playbooks.services.mlflow_db import backend_of_uri

    state = local.processes(c, SERVICE).get(SERVICE)
    if state and not state.get("corrupt"):
        return backend_of_uri(state.get("inputs", {}).get("backend"))
    try:
        last = (local.service_dir(c, SERVICE) / BACKEND_FILE).read_text().strip()
    except OSError:
        return None
    return last if last in mlflow_db.BACKENDS else None


def remember_backend(c, backend: str) -> None:
    from playbooks.runner import write_private

    path = local.service_dir(c, SERVICE) / BACKEND_FILE
    if not path.exists() or path.read_text().strip() != backend:
        write_private(path, backend + "\n")


def process(
    c,
    port: int,
    destination: str,
    s3: S3Settings | None,
    db: Database | None = None,
    password: str | None = None,
    workers: int = 1,
) -> local.Process:
    jobs = job_execution(c)
    argv = [
        mlflow_upgrade.mlflow_command(c), "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
        "--serve-artifacts", "--artifacts-destination", destination,
    ]  # fmt: skip
    uri = db.uri() if db else sqlite_uri(c)
    # MLflow's CLI reads --backend-store-uri from the environment: the URI is not on the command line,
    # and PostgreSQL's password reaches libpq as PGPASSWORD, in the environment only.
    extra = {**job_execution_env(jobs), BACKEND_URI_ENV: uri}
    env = local.quiet_env(extra)
    env.pop(PASSWORD_ENV, None)
    inputs = {"destination": destination, "job_execution": jobs, "backend": uri}
    if password is not None:
        env[PASSWORD_ENV] = password
        inputs["database_password"] = config_hash(password)  # a changed password restarts the server
    if s3 is not None:
        env.update(s3.credentials())
        env.update(s3.public_env())
        inputs["s3"] = config_hash(s3.public_env(), s3.credentials())
    return local.Process(SERVICE, argv, env, health_url=f"http://127.0.0.1:{port}/health", inputs=inputs)


def choose_database(c, backend_store: str | None, database: str | None) -> tuple[Database | None, int, str]:
    """(the PostgreSQL database or None for SQLite, the workers, why this backend), checked offline."""
    from playbooks.services.mlflow_db import choose_backend, workers_for

    kind, why = choose_backend(mlflow_db.check_backend(backend_store), running_backend(c), c.config.mlflow.backend)
    if why.startswith("kept") and not local.alive(local.processes(c, SERVICE).get(SERVICE)):
        why = "kept from last time; pass --backend to change it"
    workers = workers_for(c, kind)
    if kind == "sqlite":
        return None, workers, why
    choice = mlflow_db.check_choice(database or c.config.mlflow.get("database"))
    return mlflow_db.choose(os.environ, choice, lambda: service_database(c), ""), workers, why


def up(c, bucket=None, prefix=None, port=None, storage=None, backend_store=None, database=None) -> None:
    from playbooks.s3 import validate_prefix

    # Every input checked before the lock: a refused `up` leaves the state folder as it was.
    chosen_prefix = validate_prefix(prefix if prefix is not None else c.config.mlflow.prefix)
    destination, s3, why = artifact_store(c, bucket, chosen_prefix, storage)
    db, workers, backend_why = choose_database(c, backend_store, database)
    password = db.read_password() if db else None
    shortfalls = bucket_shortfalls(s3, destination.removeprefix("s3://").partition("/")[0]) if s3 else []
    if db is not None:
        shortfalls += mlflow_db.reach_shortfalls(db, password)
    preflight.refuse(shortfalls)
    local.check_ports(port)
    with local.writing(c, "mlflow.up"):
        _up(c, port, destination, s3, why, db, password, workers, backend_why)


def _up(c, port, destination: str, s3, why: str, db=None, password=None, workers=1, backend_why="") -> None:
    state = local.processes(c, SERVICE).get(SERVICE)
    chosen_port = local.choose_port(
        port, local.preferred_port(c, "mlflow"), previous=state, last=local.last_ports(c, SERVICE, SERVICE)
    )
    print(f"mlflow: artifacts go to {destination} ({why})", flush=True)
    if db is not None:
        print(f"mlflow: backend PostgreSQL, {db.where()} ({db.origin}), {workers} worker(s)", flush=True)
    elif backend_why.startswith("kept"):
        print(f"mlflow: backend SQLite ({backend_why})", flush=True)
    remember_backend(c, "sqlite" if db is None else "postgres")
    server = process(c, chosen_port, destination, s3, db, password, workers)
    mlflow_upgrade.before_start(c, server)  # an older database: migrated first (the old server stopped)
    result = local.ensure(c, SERVICE, server, {"http": chosen_port}, float(c.config.local.start_timeout))
    if result == "running":
        print(f"mlflow: already running and healthy (pid {state['pid']}): no change")
    print(f"mlflow: export MLFLOW_TRACKING_URI=http://127.0.0.1:{chosen_port}")


def down(c, purge: bool = False) -> None:
    with local.writing(c, "mlflow.down", create=False):
        _down(c, purge)


def _down(c, purge: bool) -> None:
    state = local.processes(c, SERVICE).get(SERVICE) or {}
    uri = None if state.get("corrupt") else state.get("inputs", {}).get("backend")
    stopped = local.stop(c, SERVICE, grace=float(c.config.local.stop_grace))
    print(f"mlflow: stopped {', '.join(stopped)}" if stopped else "mlflow: nothing running")
    from playbooks.services.mlflow_db import backend_of_uri, describe_uri

    on_postgres = backend_of_uri(uri) == "postgres"
    if purge:
        local.purge(c, SERVICE)
        what = "local artifacts" if on_postgres else "database and local artifacts"
        print(f"mlflow: deleted {local.service_dir(c, SERVICE)} ({what})")
    elif local.service_dir(c, SERVICE).exists():
        what = "local artifacts" if on_postgres else "database"
        print(f"mlflow: kept {local.service_dir(c, SERVICE)} ({what}; pass --purge to delete it)")
    if on_postgres:
        # Not ours to delete: the platform's database, or the postgres service's (postgres.down --purge).
        print(f"mlflow: the runs stay in {describe_uri(uri)} (mlflow.down never deletes a PostgreSQL database)")


def status(c) -> bool:
    state = local.processes(c, SERVICE).get(SERVICE)
    if not state:
        print("mlflow: not running")
        return False
    health = local.health(state)
    print(f"mlflow: {health} (pid {state.get('pid')}), http://127.0.0.1:{state.get('ports', {}).get('http')}")
    uri = None if state.get("corrupt") else state.get("inputs", {}).get("backend")
    if uri:
        from playbooks.services.mlflow_db import backend_of_uri, describe_uri

        print(f"mlflow: backend {describe_uri(uri) if backend_of_uri(uri) == 'postgres' else 'SQLite, ' + uri[10:]}")
    for line in local.crash_report(c, SERVICE):
        print(line)
    local.refuse_crashed(c, SERVICE)
    return health == "healthy"


def tracking_uri(c) -> str | None:
    """The running server's URL, or None when it is not running."""
    state = local.processes(c, SERVICE).get(SERVICE)
    if not local.alive(state):
        return None
    return f"http://127.0.0.1:{state['ports']['http']}"


def server_s3(c, state: dict) -> tuple[S3Settings | None, str | None, str]:
    """The S3 settings, bucket and prefix the server was started with (None, None, "" for a local folder)."""
    destination = state["inputs"]["destination"]
    if not destination.startswith("s3://"):
        return None, None, ""
    bucket, _, prefix = destination[5:].partition("/")
    from playbooks.services import storage_local

    running = storage_local.settings(c)
    candidates = [running[0] if running and running[1] == bucket else None, s3_from_env(os.environ, required=False)]
    candidates = [found for found in candidates if found is not None]
    # The store the server was started with: a local store and AWS_* may share a bucket name.
    used = [
        found
        for found in candidates
        if config_hash(found.public_env(), found.credentials()) == state["inputs"].get("s3")
    ]
    return (used or candidates or [None])[0], bucket, prefix


def recorded_state(c) -> dict | None:
    state = local.processes(c, SERVICE).get(SERVICE)
    if state and (state.get("corrupt") or "destination" not in state.get("inputs", {})):
        raise PlaybookError("the local MLflow server's state is unreadable: run `invoke mlflow.up` to repair it")
    return state


def smoke_reports(c, keep: bool = False) -> list[Report]:
    state = recorded_state(c)
    if not state:
        return []
    destination = state["inputs"]["destination"]
    s3, bucket, prefix = server_s3(c, state)
    url = f"http://127.0.0.1:{state['ports']['http']}"
    print(f"mlflow: checking {url} (local process)", flush=True)
    local_root = None if destination.startswith("s3://") else destination
    report = round_trip(url, s3=s3, bucket=bucket, prefix=prefix, local_root=local_root, keep=keep)
    print(report.render(), flush=True)
    return [report]


# ---------------------------------------------------------------- backup and restore


def _database(c, state: dict | None):
    """(backend, Database or None, the SQLite file): the database the server uses, else the SQLite file left."""
    from playbooks.services.mlflow_db import backend_of_uri

    uri = state["inputs"].get("backend") if state else None
    if uri is None:
        uri = sqlite_uri(c)
    if backend_of_uri(uri) == "postgres":
        return "postgres", mlflow_db.find_by_uri(os.environ, uri, lambda: service_database(c)), None
    path = Path(uri[len("sqlite:///") :])
    if not path.is_file():
        raise PlaybookError("no MLflow database on this machine: run `invoke mlflow.up` first")
    return "sqlite", None, path


def _pg_binaries(c, db) -> Path:
    from playbooks.services import mlflow_backup

    preferred = None
    if db.origin.startswith("the local postgres service"):
        from playbooks.services import postgres_local  # type: ignore[attr-defined]

        preferred = postgres_local.bin_dir(c)[0]
    return mlflow_backup.pg_binaries(preferred)


def _bucket(c, state: dict | None):
    from playbooks.services.mlflow_backup import Bucket

    s3, bucket, prefix = server_s3(c, state) if state else (None, None, "")
    if s3 is None or bucket is None:
        why = (
            "no MLflow server runs here" if not state else "MLflow keeps its artifacts in a local folder, not a bucket"
        )
        raise PlaybookError(f"{why}: pass --to PATH / --from PATH (a local file)")
    return Bucket(s3, bucket, prefix)


def backup(c, to: str | None = None) -> str:
    from playbooks.services import mlflow_backup as mb

    state = recorded_state(c)
    backend, db, path = _database(c, state)
    name = mb.file_name(SERVICE, backend)
    target = mb.local_target(to, name) if to else None
    where_to = None if target else _bucket(c, state)
    timeout = float(c.config.mlflow.get("backup_timeout", 600))
    with mb.temporary_folder() as folder:
        copy = target or Path(folder) / name
        if db is None:
            mb.sqlite_copy(path, copy)
            what = f"SQLite {path}"
        else:
            mb.pg_dump(db, db.read_password(), copy, _pg_binaries(c, db), timeout)
            what = f"PostgreSQL {db.where()}"
        size = copy.stat().st_size
        where = str(copy) if target else where_to.put(copy, name)
    print(f"mlflow: backed up {what} to {where} ({size} bytes)", flush=True)
    return where


def restore(c, source: str | None = None, force: bool = False) -> None:
    from playbooks.services import mlflow_backup as mb

    state = recorded_state(c)
    backend, db, path = _database(c, state)
    timeout = float(c.config.mlflow.get("backup_timeout", 600))
    with mb.temporary_folder() as folder:
        if source and not source.startswith("s3://"):
            found = mb.local_source(source)
            mb.check_kind(found.name, backend)
            origin = str(found)
        else:
            bucket = _bucket(c, state)
            if source:
                key_bucket, _, key = source[5:].partition("/")
                if key_bucket != bucket.bucket:
                    raise PlaybookError(
                        f"--from {source}: MLflow's bucket is {bucket.bucket}; pass a key there or a local file"
                    )
            else:
                key = bucket.latest(SERVICE, backend)
            mb.check_kind(key.rsplit("/", 1)[-1], backend)
            found = Path(folder) / key.rsplit("/", 1)[-1]
            bucket.get(key, found)
            origin = bucket.url(key)
        # Every check before the server stops: a refused restore changes nothing.
        password = db.read_password() if db else None
        if db is None:
            mb.sqlite_check(found)
            held = mb.sqlite_content(path)
        else:
            binaries = _pg_binaries(c, db)
            mb.pg_check(found, binaries)
            held = mb.pg_content(db, password)
        if held and not force:
            where = f"SQLite {path}" if db is None else db.where()
            raise PlaybookError(
                f"{where} is not empty ({held} runs, experiments or models): restoring would replace them; "
                "pass --force to replace it, or `invoke mlflow.backup` it first"
            )
        running = local.alive(state)
        with local.writing(c, "mlflow.restore"):
            if running:
                stopped = local.stop(c, SERVICE, grace=float(c.config.local.stop_grace))
                print(f"mlflow: stopped {', '.join(stopped)} to restore", flush=True)
            if db is None:
                mb.sqlite_restore(found, path)
            else:
                mb.pg_restore(db, password, found, binaries, timeout)
    print(f"mlflow: restored {'SQLite ' + str(path) if db is None else 'PostgreSQL ' + db.where()} from {origin}")
    if running:
        restart(c, state)
    else:
        print("mlflow: start the server with `invoke mlflow.up`")


def restart(c, state: dict) -> None:
    """Start the server again as it ran: same artifacts, port and backend."""
    from playbooks.services import storage_local
    from playbooks.services.mlflow_db import backend_of_uri

    destination = state["inputs"]["destination"]
    s3, bucket, prefix = server_s3(c, state)
    if s3 is None:
        storage, bucket, prefix = "none", None, c.config.mlflow.prefix
    else:
        running = storage_local.settings(c)
        same = running and config_hash(running[0].public_env(), running[0].credentials()) == state["inputs"].get("s3")
        storage = "local-s3" if same else "env"
    del destination
    up(c, bucket, prefix, state["ports"]["http"], storage, backend_of_uri(state["inputs"]["backend"]))


def logs(c, lines: int) -> str:
    return local.tail_log(c, SERVICE, SERVICE, lines)
