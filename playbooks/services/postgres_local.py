"""PostgreSQL in local mode: a real server as a supervised process, its data in the state folder.

`<state>/postgres/data` is the database cluster (it survives `down`; `--purge` deletes it), made
by `initdb` with the generated password from `<state>/postgres/password` (0600, read through
`--pwfile`: in no argv, environment or log). The server listens on 127.0.0.1 only, with its unix
socket in the state folder, and every login needs the password (SCRAM). `<state>/postgres/pgpass`
is a libpq password file for PGPASSFILE. Ready means `pg_isready` answers and the socket on the
port is held by our process (procs.listens_under), not by another server that took the port.

The server binaries: `postgres.bin_dir`, else `pg_config --bindir`, else the newest
/usr/lib/postgresql/<version>/bin (Debian's packages), else the pgserver wheel when installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from playbooks import local, procs, statefile
from playbooks.errors import PlaybookError
from playbooks.report import Report
from playbooks.services import postgres_settings as settings
from playbooks.services.postgres_settings import SERVICE

REQUIRED = ("postgres", "initdb", "pg_isready")
INSTALL = "install PostgreSQL (apt-get install postgresql), or pip install pgserver, or set postgres.bin_dir"
# A unix socket's path must fit in sun_path (108 bytes with its NUL).
SOCKET_PATH_MAX = 100


@dataclass(frozen=True)
class Connection:
    """Where the running local server answers; the password is in password_file (0600), never here."""

    host: str
    port: int
    user: str
    dbname: str
    password_file: Path


def folder(c) -> Path:
    return local.service_dir(c, SERVICE)


def data_dir(c) -> Path:
    return folder(c) / "data"


def password_file(c) -> Path:
    return folder(c) / "password"


def pgpass_file(c) -> Path:
    return folder(c) / "pgpass"


def owner_file(c) -> Path:
    """Which user and database the data was made for (plain text: the folder's *.json are process states)."""
    return folder(c) / "database.txt"


# ---------------------------------------------------------------- the server's binaries


def _complete(folder_: Path) -> bool:
    return all(os.access(folder_ / name, os.X_OK) for name in REQUIRED)


def _version(path: Path) -> tuple[int, ...]:
    parts = path.parent.name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (0,)


def candidates(c) -> list[tuple[Path, str]]:
    """Where the binaries may be, in the order they are tried (after postgres.bin_dir)."""
    found = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            answer = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False)
            if answer.returncode == 0 and answer.stdout.strip():
                found.append((Path(answer.stdout.strip()), "pg_config --bindir"))
        except (OSError, subprocess.TimeoutExpired):
            pass
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    found += [(path, "Debian's packages") for path in debian]
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        found.append((Path(spec.origin).parent / "pginstall" / "bin", "the pgserver wheel"))
    return found


def bin_dir(c) -> tuple[Path, str]:
    """The folder of postgres, initdb and pg_isready, and where it was found; one line when there is none."""
    configured = c.config.postgres.bin_dir
    if configured:
        path = Path(str(configured)).expanduser()
        if not _complete(path):
            missing = [name for name in REQUIRED if not os.access(path / name, os.X_OK)]
            raise PlaybookError(
                f"setting postgres.bin_dir is {configured!r}, which lacks {', '.join(missing)}: {INSTALL}"
            )
        return path, "postgres.bin_dir"
    for path, origin in candidates(c):
        if _complete(path):
            return path, origin
    raise PlaybookError(f"no PostgreSQL server found (postgres, initdb, pg_isready): {INSTALL}")


def refuse_root() -> None:
    if os.geteuid() == 0:
        raise PlaybookError(
            "PostgreSQL refuses to run as root (uid 0): run local mode as a regular user, or deploy to a cluster"
        )


def ready(binaries: Path, port: int, user: str, database: str, timeout: float = 3) -> bool:
    """pg_isready: the server accepts connections on 127.0.0.1:port (no password needed to ask)."""
    argv = [str(binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", database]
    try:
        return subprocess.run([*argv, "-t", str(int(timeout))], timeout=timeout + 2, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class ServerProcess(local.Process):
    """The postmaster: healthy when pg_isready answers, serving when the port's socket is also its own."""

    binaries: Path = field(default=Path("."))
    user: str = ""
    database: str = ""

    def healthy(self) -> bool:
        return ready(self.binaries, self.health_port, self.user, self.database)


# ---------------------------------------------------------------- the database cluster


def _run(argv: list[str], log: Path, what: str, stdin: str | None = None) -> None:
    """A set-up step, its output appended to the service's log; one line naming the log when it fails."""
    with open(log, "ab") as out:
        out.write(f"--- datalab-playbooks: {what}\n".encode())
        out.flush()
        try:
            result = subprocess.run(
                argv, input=stdin.encode() if stdin is not None else None, stdout=out, stderr=subprocess.STDOUT,
                env=local.quiet_env(), umask=0o077, timeout=300, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise PlaybookError(f"postgres: {what} did not finish within 300s: see {log}") from None
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise PlaybookError(f"postgres: {what} failed (exit {result.returncode}: {tail[0]}): see {log}")


def initialise(c, binaries: Path, user: str, database: str) -> bool:
    """Make the database cluster when there is none; False when it was there. Moved into place only when whole."""
    data = data_dir(c)
    if (data / "PG_VERSION").is_file():
        return False
    if data.exists() and any(data.iterdir()):
        raise PlaybookError(f"{data} holds files but no database: empty it, or run `invoke postgres.down --purge`")
    staging = folder(c) / "data.init"
    shutil.rmtree(staging, ignore_errors=True)
    log = folder(c) / f"{SERVICE}.log"
    print(f"postgres: initialising a new database cluster in {data}", flush=True)
    _run(
        [
            str(binaries / "initdb"), "-D", str(staging), f"--username={user}", f"--pwfile={password_file(c)}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-instructions",
        ],
        log, "initdb",
    )  # fmt: skip
    _run([str(binaries / "postgres"), "--single", "-D", str(staging), "postgres"], log,
         f"creating database {database}", stdin=f'CREATE DATABASE "{database}";\n')  # fmt: skip
    if data.exists():
        data.rmdir()
    staging.rename(data)
    statefile.write_private(owner_file(c), f"user={user}\ndatabase={database}\n")
    return True


def made_for(c) -> dict[str, str]:
    """The user and database the kept data was made for ({} when not recorded)."""
    try:
        text = owner_file(c).read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def check_kept_data(c, user: str, database: str) -> None:
    """Refuse, before anything changes, settings or a lost password that do not match the kept database."""
    if not (data_dir(c) / "PG_VERSION").is_file():
        return
    if not password_file(c).is_file():
        raise PlaybookError(
            f"the database in {data_dir(c)} was made with the password in {password_file(c)}, which is gone: "
            "restore that file, or run `invoke postgres.down --purge` to start afresh"
        )
    kept = made_for(c)
    for key, setting, wanted in (("user", "postgres.user", user), ("database", "postgres.database", database)):
        if kept.get(key, wanted) != wanted:
            raise PlaybookError(
                f"setting {setting} is {wanted!r} but the local database was made with {kept[key]!r}: "
                f"set {setting} to {kept[key]!r}, or run `invoke postgres.down --purge` to start afresh"
            )


def password(c) -> str:
    """The password, generated once (before initdb) and kept with the data."""
    path = password_file(c)
    if path.is_file():
        return path.read_text().strip()
    value = settings.generate_password()
    statefile.write_private(path, value)
    return value


# ---------------------------------------------------------------- lifecycle


def server_process(c, binaries: Path, port: int, user: str, database: str, secret_digest: str) -> ServerProcess:
    socket_dir = folder(c)
    sockets = str(socket_dir) if len(str(socket_dir / f".s.PGSQL.{port}")) <= SOCKET_PATH_MAX else ""
    hba = folder(c) / "pg_hba.conf"
    argv = [
        str(binaries / "postgres"), "-D", str(data_dir(c)),
        "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}", "-c", f"unix_socket_directories={sockets}",
        "-c", f"hba_file={hba}", "-c", "password_encryption=scram-sha-256",
        *settings.server_flags(settings.server_settings(c)),
    ]  # fmt: skip
    inputs = {"user": user, "database": database, "bin_dir": str(binaries), "password": secret_digest}
    return ServerProcess(
        SERVICE, argv, local.quiet_env(), health_port=port, inputs=inputs, binaries=binaries, user=user,
        database=database,
    )  # fmt: skip


HBA = """\
# Written by datalab-playbooks (postgres.up, local mode): every login needs the password (SCRAM).
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
"""


def up(c, port=None) -> None:
    # Every input checked before the lock: a refused `up` leaves the state folder as it was.
    user, database = settings.user(c), settings.database(c)
    settings.server_settings(c)
    local.check_ports(port)
    refuse_root()
    binaries, origin = bin_dir(c)
    check_kept_data(c, user, database)
    with local.writing(c, "postgres.up"):
        _up(c, port, binaries, origin, user, database)


def _up(c, port, binaries: Path, origin: str, user: str, database: str) -> None:
    statefile.private_dir(folder(c))
    secret = password(c)
    pgpass = f"*:*:*:{user}:{secret}\n"
    if not pgpass_file(c).is_file() or pgpass_file(c).read_text() != pgpass:
        statefile.write_private(pgpass_file(c), pgpass)
    hba = folder(c) / "pg_hba.conf"
    if not hba.is_file() or hba.read_text() != HBA:
        statefile.write_private(hba, HBA)
    initialise(c, binaries, user, database)
    state = local.processes(c, SERVICE).get(SERVICE)
    chosen = local.choose_port(
        port, local.preferred_port(c, SERVICE), previous=state, key=SERVICE, last=local.last_ports(c, SERVICE, SERVICE)
    )
    digest = local.Process("", [secret], {}).fingerprint()
    process = server_process(c, binaries, chosen, user, database, digest)
    if local.alive(state) and state["fingerprint"] != process.fingerprint():
        print(f"postgres: inputs changed; stopping pid {state['pid']} (fast shutdown)", flush=True)
        fast_stop(state, float(c.config.local.stop_grace))
    print(f"postgres: server binaries from {origin} ({binaries})", flush=True)
    result = local.ensure(c, SERVICE, process, {SERVICE: chosen}, float(c.config.local.start_timeout))
    if result == "running":
        print(f"postgres: already running and healthy (pid {state['pid']}): no change")
    print_access(c, connection(c))


def fast_stop(state: dict | None, grace: float) -> list[str]:
    """SIGINT to the postmaster: PostgreSQL's fast shutdown (sessions ended, a checkpoint written).
    A plain TERM is a smart shutdown, which waits for every client to leave. What it stopped."""
    if not local.alive(state):
        return []
    procs.signal_pid(state["pid"], signal.SIGINT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and procs.group_running(state["pgid"]):
        procs.reap(state["pid"])
        local.pause(0.1)
    return [f"{SERVICE} (pid {state['pid']})"]


def down(c, purge: bool = False) -> None:
    with local.writing(c, "postgres.down", create=False):
        grace = float(c.config.local.stop_grace)
        stopped = fast_stop(local.processes(c, SERVICE).get(SERVICE), grace)
        stopped += [what for what in local.stop(c, SERVICE, grace=grace) if what not in stopped]
        print(f"postgres: stopped {', '.join(stopped)}" if stopped else "postgres: nothing running")
        if purge:
            local.purge(c, SERVICE)
            print(f"postgres: deleted {folder(c)} (database and password)")
        elif data_dir(c).exists():
            print(f"postgres: kept the database in {data_dir(c)} and its password (pass --purge to delete them)")


# ---------------------------------------------------------------- status, access, smoke, logs


def connection(c) -> Connection | None:
    """The running local server's coordinates (the contract MLflow's --backend postgres reads), or None."""
    state = local.processes(c, SERVICE).get(SERVICE)
    if not local.alive(state):
        return None
    inputs = state["inputs"]
    return Connection("127.0.0.1", state["ports"][SERVICE], inputs["user"], inputs["database"], password_file(c))


def print_access(c, found: Connection | None) -> None:
    if found is None:
        return
    print(f"postgres: address          postgresql://{found.user}@{found.host}:{found.port}/{found.dbname}")
    print(f"postgres: password         in {found.password_file} (and {pgpass_file(c)} for PGPASSFILE)")
    print(
        f"postgres: then             export PGHOST={found.host} PGPORT={found.port} PGUSER={found.user} "
        f"PGDATABASE={found.dbname} PGPASSFILE={pgpass_file(c)}"
    )


def health(c, state: dict) -> str:
    """local.health, with pg_isready as the test of a running server."""
    if not local.alive(state):
        return local.health(state)
    inputs = state["inputs"]
    answers = ready(Path(inputs["bin_dir"]), state["ports"][SERVICE], inputs["user"], inputs["database"])
    owned = procs.listens_under(state["pid"], state["ports"][SERVICE])
    if answers and owned:
        return "healthy"
    return "running but not answering" if not answers else "answering, but another process holds its port"


def status(c) -> bool:
    state = local.processes(c, SERVICE).get(SERVICE)
    if not state:
        print("postgres: not running" + (f" (database kept in {data_dir(c)})" if data_dir(c).exists() else ""))
        return False
    found = health(c, state)
    print(f"postgres: {found} (pid {state.get('pid')})")
    print_access(c, connection(c))
    for line in local.crash_report(c, SERVICE):
        print(line)
    local.refuse_crashed(c, SERVICE)
    return found == "healthy"


def smoke_reports(c) -> list[Report]:
    from playbooks.postgres_check import round_trip

    state = local.processes(c, SERVICE).get(SERVICE)
    if not state:
        return []
    found = connection(c)
    if found is None:
        raise PlaybookError(f"the local PostgreSQL is not running ({local.health(state)}): run `invoke postgres.up`")
    print(f"postgres: checking {found.host}:{found.port} (local process)", flush=True)
    secret = found.password_file.read_text().strip()
    report = round_trip(
        found.host, found.port, found.user, found.dbname, secret, timeout=float(c.config.postgres.smoke_timeout)
    )
    print(report.render(), flush=True)
    return [report]


def logs(c, lines: int) -> str:
    return local.tail_log(c, SERVICE, SERVICE, lines)
