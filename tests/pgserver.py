"""A real PostgreSQL server for the tests: Debian's binaries, a cluster in a tmp folder, a free port on
127.0.0.1 and its unix socket in the same folder; stopped by its process group.

    with pg_server(tmp_path) as pg:   # or the `pg` fixture (tests/conftest.py)
        pg.url()                      # postgresql://mlflow:PASSWORD@127.0.0.1:PORT/mlflow
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playbooks.procs import free_port, stop_group, tcp_ok, wait_until


def bin_dir() -> Path | None:
    """Debian's PostgreSQL binaries (the newest major installed), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


@dataclass
class PgServer:
    folder: Path
    port: int
    user: str
    password: str = field(repr=False)
    dbname: str
    bin: Path
    pid: int
    host: str = "127.0.0.1"

    @property
    def socket_dir(self) -> Path:
        return self.folder / "run"

    def url(self, password: bool = True, dbname: str | None = None) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{self.user}{secret}@{self.host}:{self.port}/{dbname or self.dbname}"

    def env(self) -> dict[str, str]:
        """libpq's variables for the superuser, over the unix socket (for psql/createdb in a test)."""
        return {
            "PGHOST": str(self.socket_dir),
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            "PGDATABASE": "postgres",
        }

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run SQL as the superuser (over the socket: trust), on stdin (never argv: it may hold a password)."""
        result = subprocess.run(
            [str(self.bin / "psql"), "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbname],
            input=statement,
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str, owner: str | None = None) -> None:
        self.sql(f'CREATE DATABASE "{name}" OWNER "{owner or self.user}"')


def _owner() -> dict:
    """PostgreSQL refuses to run as root: as root (CI, this machine) it runs as Debian's `postgres` user."""
    if os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid}


@contextmanager
def pg_server(tmp: Path, user: str = "mlflow", dbname: str = "mlflow", listen: str = "127.0.0.1") -> Iterator[PgServer]:
    """initdb, start, create a password user and its database; stop the whole group at the end.

    listen: the address it serves on (the lab's bridge address for pods); other hosts log in by password.
    """
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError("no PostgreSQL server here: apt-get install postgresql (Debian's, /usr/lib/postgresql)")
    owner = _owner()
    # As root, pytest's tmp folders (0700, root's) are closed to the postgres user: a folder of its own.
    folder = Path(tempfile.mkdtemp(prefix="pgtest-")) if owner else tmp / "pg"
    data, run = folder / "data", folder / "run"
    run.mkdir(parents=True)
    if owner:
        for path in (folder, run):
            os.chown(path, owner["user"], owner["group"])
    password = "pg-" + secrets.token_hex(12)
    log = folder / "postgres.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    init = subprocess.run(
        [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
         "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
        capture_output=True, text=True, timeout=120, env=env, cwd=folder, **owner,
    )  # fmt: skip
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr.strip()}")
    if listen != "127.0.0.1":
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
    port = free_port(listen)
    argv = [
        str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-c", f"listen_addresses={listen}",
        "-c", f"unix_socket_directories={run}", "-c", "fsync=off", "-c", "shared_buffers=16MB",
        "-c", "max_connections=40",
    ]  # fmt: skip
    with open(log, "ab") as out:
        child = subprocess.Popen(
            argv, env=env, cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, **owner,
        )  # fmt: skip
    try:
        wait_until(lambda: tcp_ok(listen, port, 0.3), 60, "postgres", child, log)
        server = PgServer(folder, port, user, password, dbname, binaries, child.pid, listen)
        server.sql(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
        server.create_database(dbname, user)
        yield server
    finally:
        stop_group(child.pid, 10)
        shutil.rmtree(folder if owner else data, ignore_errors=True)
