"""mlflow.backup / mlflow.restore: the tracking database to and from the bucket, or a local file.

A backup is `mlflow-<instance>-<UTC timestamp>.sqlite` (SQLite: a consistent copy through sqlite3's
backup API, never a file copy of a live database) or `.pgdump` (PostgreSQL: `pg_dump --format=custom`).
In the bucket it goes to `<prefix>/backups/` beside MLflow's artifacts (the S3 settings MLflow uses);
`--to PATH` / `--from PATH` use a local file (a folder takes the timestamped name).

`restore` refuses a database that holds runs, experiments or models unless --force, stops the server
(local mode: the process; cluster modes: scales the Deployment to 0) while it restores, and starts it
again. A .sqlite backup restores into SQLite only, a .pgdump into PostgreSQL only. The artifacts stay
where they are: runs restored point at them again (artifact links), the bucket keeps the objects.

The password of PostgreSQL reaches pg_dump / pg_restore as PGPASSWORD in their environment only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from playbooks.errors import PlaybookError
from playbooks.s3 import S3Settings

BACKUP_FOLDER = "backups"
EXTENSIONS = {"sqlite": ".sqlite", "postgres": ".pgdump"}
NAME = re.compile(r"^mlflow-(?P<instance>[a-z0-9-]+)-(?P<stamp>\d{8}T\d{6}Z)\.(?P<ext>sqlite|pgdump)$")
# Rows that make a tracking database non-empty (the Default experiment, id 0, is made by every server).
CONTENT_SQL = (
    "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM experiments WHERE experiment_id <> 0)"
    " + (SELECT count(*) FROM registered_models)"
)


def timestamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def file_name(instance: str, backend: str, now: datetime | None = None) -> str:
    return f"mlflow-{instance}-{timestamp(now)}{EXTENSIONS[backend]}"


def backend_of_name(name: str) -> str | None:
    for backend, ext in EXTENSIONS.items():
        if name.endswith(ext):
            return backend
    return None


def check_kind(name: str, backend: str) -> None:
    found = backend_of_name(name)
    if found is None:
        raise PlaybookError(f"{name} is not an MLflow backup: pass a .sqlite or .pgdump file made by mlflow.backup")
    if found != backend:
        raise PlaybookError(
            f"{name} is a {found} backup but MLflow runs on {backend}: restore it into a server with "
            f"--backend {found} (invoke mlflow.up --backend {found}), or pick a {EXTENSIONS[backend]} backup"
        )


# ---------------------------------------------------------------- where backups are kept


@dataclass(frozen=True)
class Bucket:
    """The bucket MLflow's artifacts go to, and the folder of backups beside them."""

    s3: S3Settings
    bucket: str
    prefix: str

    def folder(self) -> str:
        return f"{self.prefix}/{BACKUP_FOLDER}/" if self.prefix else f"{BACKUP_FOLDER}/"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, path: Path, name: str) -> str:
        key = self.folder() + name
        self._call(lambda client: client.upload_file(str(path), self.bucket, key), "upload to")
        return self.url(key)

    def latest(self, instance: str, backend: str) -> str:
        """The newest backup of this instance and backend in the bucket."""

        def listing(client):
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.folder())
            return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

        keys = self._call(listing, "list")
        found = sorted(
            key
            for key in keys
            if (m := NAME.match(key.rsplit("/", 1)[-1]))
            and m["instance"] == instance
            and m["ext"] == EXTENSIONS[backend][1:]
        )
        if not found:
            raise PlaybookError(
                f"no {EXTENSIONS[backend]} backup of mlflow {instance!r} in {self.url(self.folder())}: "
                "run `invoke mlflow.backup` first, or pass --from PATH"
            )
        return found[-1]

    def get(self, key: str, path: Path) -> None:
        self._call(lambda client: client.download_file(self.bucket, key, str(path)), "download from")

    def _call(self, action, what: str):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return action(self.s3.client())
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "?")
            raise PlaybookError(
                f"cannot {what} bucket {self.bucket} at {self.s3.where()} ({code}): check the bucket and AWS_* credentials"
            ) from None
        except BotoCoreError as error:
            raise PlaybookError(
                f"cannot {what} bucket {self.bucket} at {self.s3.where()} ({str(error)[:160]}): check AWS_ENDPOINT_URL"
            ) from None


def local_target(to: str, name: str) -> Path:
    """--to PATH: a folder takes the timestamped name; a file's folder must exist."""
    path = Path(to).expanduser()
    if path.is_dir():
        return path / name
    if not path.parent.is_dir():
        raise PlaybookError(f"--to {to}: folder {path.parent} does not exist: create it or pass another path")
    if path.exists():
        raise PlaybookError(f"--to {to}: the file exists; pass a folder (a new timestamped name) or another path")
    return path


def local_source(source: str) -> Path:
    path = Path(source).expanduser()
    if not path.is_file():
        raise PlaybookError(f"--from {source}: no such file; pass a backup made by mlflow.backup")
    return path


# ---------------------------------------------------------------- SQLite


def sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a (possibly live) SQLite database, through sqlite3's backup API."""
    import sqlite3

    if not source.is_file():
        raise PlaybookError(f"no SQLite database at {source}: run `invoke mlflow.up` first")
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    writer = sqlite3.connect(target)
    try:
        reader.backup(writer)
    finally:
        writer.close()
        reader.close()


def sqlite_check(path: Path) -> None:
    """A file that is an MLflow SQLite database (a damaged or foreign file is refused before anything stops)."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as error:
        raise PlaybookError(
            f"{path.name} is not a SQLite database ({error}): pass a backup made by mlflow.backup"
        ) from None
    if "alembic_version" not in tables or "runs" not in tables:
        raise PlaybookError(
            f"{path.name} is a SQLite file but not an MLflow database: pass a backup made by mlflow.backup"
        )


def sqlite_content(path: Path) -> int:
    """How many runs, experiments (besides Default) and models the database holds; 0 when there is none."""
    import sqlite3

    if not path.is_file():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return int(db.execute(CONTENT_SQL).fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # no MLflow tables yet
    finally:
        db.close()


def sqlite_restore(backup: Path, target: Path) -> None:
    """Replace the database with the backup: written beside it, then renamed over it (never half a file)."""
    temporary = target.with_name(f".{target.name}.restore")
    temporary.unlink(missing_ok=True)
    sqlite_copy(backup, temporary)
    for suffix in ("-wal", "-shm", "-journal"):
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    os.replace(temporary, target)


# ---------------------------------------------------------------- PostgreSQL, with this machine's binaries


def pg_binaries(preferred: Path | None = None) -> Path:
    """The folder of pg_dump and pg_restore: the server's own (preferred), else Debian's newest, else PATH's."""
    if preferred is not None and (preferred / "pg_dump").exists():
        return preferred
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_dump"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_dump")
    if on_path:
        return Path(on_path).parent
    raise PlaybookError("pg_dump not found: install PostgreSQL's client tools (apt-get install postgresql-client)")


def _pg_env(db, password: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password is not None:
        env["PGPASSWORD"] = password
    return env


def _pg_argv(db) -> list[str]:
    # Host, port, user and name are not secret; the password stays in the environment.
    return ["--host", db.host, "--port", str(db.port), "--username", db.user, "--no-password"]


def _pg_run(argv: list[str], env: dict, what: str, timeout: float) -> None:
    try:
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise PlaybookError(f"{what} did not finish within {timeout:.0f}s: is the database reachable?") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise PlaybookError(f"{what} failed: {lines[-1] if lines else f'exit code {result.returncode}'}")


def pg_dump(db, password: str | None, target: Path, binaries: Path, timeout: float) -> None:
    argv = [str(binaries / "pg_dump"), *_pg_argv(db), "--format=custom", "--no-owner", "--no-privileges"]
    _pg_run([*argv, "--file", str(target), db.dbname], _pg_env(db, password), "pg_dump", timeout)


def pg_restore(db, password: str | None, source: Path, binaries: Path, timeout: float) -> None:
    """Into the database, replacing what the dump holds, in one transaction: a failure changes nothing."""
    argv = [
        str(binaries / "pg_restore"), *_pg_argv(db), "--dbname", db.dbname, "--clean", "--if-exists",
        "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error", str(source),
    ]  # fmt: skip
    _pg_run(argv, _pg_env(db, password), "pg_restore", timeout)


def pg_check(path: Path, binaries: Path) -> None:
    """A file pg_restore can read (its table of contents): checked before anything stops."""
    result = subprocess.run(
        [str(binaries / "pg_restore"), "--list", str(path)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0 or ("TABLE public runs" not in result.stdout and " runs " not in result.stdout):
        raise PlaybookError(f"{path.name} is not a pg_dump of an MLflow database: pass a backup made by mlflow.backup")


def pg_content(db, password: str | None) -> int:
    import pg8000.dbapi
    import pg8000.exceptions

    connection = pg8000.dbapi.connect(
        user=db.user, host=db.host, port=db.port, database=db.dbname, password=password, timeout=10
    )
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(CONTENT_SQL)
            return int(cursor.fetchone()[0])
        except pg8000.exceptions.DatabaseError:
            return 0  # no MLflow tables yet
    finally:
        connection.close()


def temporary_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="mlflow-backup-")


def fetch(source: str | None, bucket, instance: str, backend: str, folder: Path) -> tuple[Path, str]:
    """The backup to restore, as a local file: --from PATH, --from s3://BUCKET/KEY, else the newest in
    the bucket (bucket: a callable giving the Bucket, asked only when needed). Its kind checked."""
    if source and not source.startswith("s3://"):
        found = local_source(source)
        check_kind(found.name, backend)
        return found, str(found)
    store = bucket()
    if source:
        key_bucket, _, key = source[5:].partition("/")
        if key_bucket != store.bucket:
            raise PlaybookError(f"--from {source}: MLflow's bucket is {store.bucket}; pass a key there or a local file")
    else:
        key = store.latest(instance, backend)
    check_kind(key.rsplit("/", 1)[-1], backend)
    found = folder / key.rsplit("/", 1)[-1]
    store.get(key, found)
    return found, store.url(key)


def refusal(where: str, held: int) -> PlaybookError:
    return PlaybookError(
        f"{where} is not empty ({held} runs, experiments or models): restoring would replace them; "
        "pass --force to replace it, or `invoke mlflow.backup` it first"
    )
