"""MLflow's backend store: SQLite (default) or PostgreSQL, and where the PostgreSQL database comes from.

Where `mlflow.up --backend postgres` takes its database, first match wins:

1. `--database NAME` (or the setting mlflow.database) picks one source by name:
   `H` or `H/DB` or `DB` (a database the platform declares, case-insensitive), `DATABASE_URL`,
   `PGHOST` (libpq's variables) or `service` (the project's `postgres` service).
2. The platform's database: `POSTGRES_<H>_HOST/PORT/USER/PASSWORD/DATABASES` (DATABASES: names
   separated by commas or spaces), or `POSTGRES_<H>_<DB>_URL` where HOST or USER is missing.
   Exactly one (H, DB) pair is taken; several are one error line that lists them for --database.
3. `DATABASE_URL` (postgresql://USER:PASSWORD@HOST:PORT/DB; a URL of another scheme is ignored).
4. libpq's `PGHOST`, `PGPORT` (5432), `PGUSER` (required), `PGPASSWORD`, `PGDATABASE` (default: the user).
5. The project's `postgres` service: cluster, its Secret `<name>-app` (username, password, dbname,
   host, port); local, `playbooks.services.postgres_local.connection(c)`.

MLflow gets a URI with no password (postgresql+psycopg2://USER@HOST:PORT/DB, which MLflow reads from
MLFLOW_BACKEND_STORE_URI); the password reaches the server as PGPASSWORD, which libpq reads.
Output names the database's host and name only, never a URL as given (it may hold the password).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from playbooks.errors import PlaybookError

BACKENDS = ("sqlite", "postgres")
DEFAULT_PORT = 5432
URL_FORM = "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
SERVICE_CHOICE = "service"
# MLflow's CLI reads --backend-store-uri from this variable: the URI stays off the command line.
BACKEND_URI_ENV = "MLFLOW_BACKEND_STORE_URI"
PASSWORD_ENV = "PGPASSWORD"  # libpq reads the password from here: it stays out of the URI and argv
# The driver named: SQLAlchemy 2.1 takes psycopg (3) for a bare postgresql://, and MLflow's -full
# image (and the [local] extra) ships psycopg2.
URI_SCHEME = "postgresql+psycopg2"
# Query parameters of a URL that MLflow's URI keeps (connection options, never a secret).
KEPT_OPTIONS = {"sslmode", "connect_timeout", "application_name", "options", "target_session_attrs"}


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database MLflow can use; the password stays in memory (or its file), never printed."""

    host: str
    port: int
    user: str
    dbname: str
    origin: str  # for output: where it was found
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None  # local postgres service: read into the server's environment
    secret: str | None = None  # cluster: an existing Secret holding `password` (the postgres service's)
    options: tuple[tuple[str, str], ...] = ()

    def uri(self) -> str:
        """MLflow's backend store URI: no password in it."""
        query = f"?{urlencode(self.options)}" if self.options else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user, dbname = quote(self.user, safe=""), quote(self.dbname, safe="")
        return f"{URI_SCHEME}://{user}@{host}:{self.port}/{dbname}{query}"

    def where(self) -> str:
        """What output may say: the database's name and host."""
        return f"database {self.dbname} on {self.host}:{self.port}"

    def read_password(self) -> str | None:
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            try:
                return self.password_file.read_text().strip()
            except OSError as error:
                raise PlaybookError(
                    f"cannot read the database password file {self.password_file} ({error.strerror}): "
                    "run `invoke postgres.up` to repair it"
                ) from None
        return None


def check_backend(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in BACKENDS:
        raise PlaybookError(f"unknown --backend {value!r}: use sqlite (one file, one worker) or postgres")
    return value


def check_workers(value, backend: str) -> int:
    """mlflow.workers: a positive number; more than one only with PostgreSQL."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise PlaybookError(f"setting mlflow.workers is {value!r}: use a whole number from 1 (INVOKE_MLFLOW_WORKERS)")
    workers = int(text)
    if workers > 1 and backend == "sqlite":
        raise PlaybookError(
            f"mlflow.workers is {workers}, but SQLite takes one worker (more lock the database): "
            "set mlflow.workers to 1, or pass --backend postgres"
        )
    return workers


def parse_url(text: str, what: str, origin: str | None = None) -> Database:
    """A postgresql:// URL; a malformed one is one line that never repeats the URL (it may hold a password)."""

    def bad(problem: str) -> PlaybookError:
        return PlaybookError(f"{what} is not a usable PostgreSQL URL ({problem}): set it to {URL_FORM}")

    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as error:
        problem = "its port is not a number" if "port" in str(error).lower() else "it does not parse"
        raise bad(problem) from None
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgres", "postgresql"):
        raise bad(f"scheme {parts.scheme or 'none'!r}, not postgresql")
    if not parts.hostname:
        raise bad("no host")
    if not parts.username:
        raise bad("no user")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname or "/" in dbname:
        raise bad("no database name after the host" if not dbname else "a path, not one database name")
    query = parse_qsl(parts.query, keep_blank_values=True)
    unknown = sorted({key for key, _ in query if key not in KEPT_OPTIONS})
    if unknown:
        raise bad(
            f"option {unknown[0]!r} is not one MLflow's URI may carry; keep only {', '.join(sorted(KEPT_OPTIONS))}"
        )
    return Database(
        host=parts.hostname,
        port=port or DEFAULT_PORT,
        user=unquote(parts.username),
        dbname=dbname,
        origin=origin or what,
        password=unquote(parts.password) if parts.password is not None else None,
        options=tuple(query),
    )


def _port(value: str | None, what: str) -> int:
    if value in (None, ""):
        return DEFAULT_PORT
    if not str(value).isdigit() or not 0 < int(value) < 65536:
        raise PlaybookError(f"{what} is {value!r}, which is not a port: set it to a number such as 5432")
    return int(value)


def _key(name: str) -> str:
    """How the platform spells a name inside a variable: upper case, other characters as '_'."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def platform_databases(env: Mapping[str, str]) -> dict[str, Callable[[], Database]]:
    """The platform's databases, "h/db" -> how to build it (a missing part raises only for the one chosen)."""
    hosts = sorted({m[1] for k in env if (m := re.fullmatch(r"POSTGRES_([A-Z0-9_]+?)_(HOST|DATABASES)", k))})
    found: dict[str, Callable[[], Database]] = {}
    for h in hosts:
        names = [n for n in re.split(r"[,\s]+", env.get(f"POSTGRES_{h}_DATABASES", "")) if n]
        if not names:
            suffix = "_URL"
            names = [
                k[len(f"POSTGRES_{h}_") : -len(suffix)].lower()
                for k in env
                if k.startswith(f"POSTGRES_{h}_") and k.endswith(suffix) and len(k) > len(f"POSTGRES_{h}_{suffix}")
            ]
        for db in names or [""]:
            found[f"{h.lower()}/{db}" if db else h.lower()] = _platform_builder(env, h, db)
    return found


def _platform_builder(env: Mapping[str, str], h: str, db: str) -> Callable[[], Database]:
    def build() -> Database:
        prefix = f"POSTGRES_{h}_"
        origin = f"the platform's database {h.lower()}/{db} ({prefix}*)"
        if not db:
            raise PlaybookError(
                f"{prefix}HOST is set but {prefix}DATABASES names no database: set it, or pick another with --database"
            )
        if env.get(f"{prefix}HOST") and env.get(f"{prefix}USER"):
            return Database(
                host=env[f"{prefix}HOST"],
                port=_port(env.get(f"{prefix}PORT"), f"{prefix}PORT"),
                user=env[f"{prefix}USER"],
                dbname=db,
                origin=origin,
                password=env.get(f"{prefix}PASSWORD"),
            )
        url_var = f"{prefix}{_key(db)}_URL"
        if env.get(url_var):
            found = parse_url(env[url_var], url_var, origin)
            return found
        missing = f"{prefix}HOST" if not env.get(f"{prefix}HOST") else f"{prefix}USER"
        raise PlaybookError(f"{missing} is not set (nor {url_var}): set it, or pick another database with --database")

    return build


def _from_libpq(env: Mapping[str, str]) -> Database:
    host = env["PGHOST"]
    if host.startswith("/"):
        raise PlaybookError(f"PGHOST is the socket folder {host}: MLflow needs a TCP host; set PGHOST to a host name")
    if not env.get("PGUSER"):
        raise PlaybookError("PGHOST is set but PGUSER is not: export PGUSER (and PGPASSWORD, PGDATABASE)")
    return Database(
        host=host,
        port=_port(env.get("PGPORT"), "PGPORT"),
        user=env["PGUSER"],
        dbname=env.get("PGDATABASE") or env["PGUSER"],
        origin="libpq's variables (PGHOST, PGUSER, ...)",
        password=env.get("PGPASSWORD"),
    )


def _is_postgres_url(text: str) -> bool:
    return text.strip().lower().startswith(("postgres://", "postgresql://", "postgres+", "postgresql+"))


def check_choice(choice: str | None) -> str | None:
    """--database's form, offline."""
    if choice is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?", str(choice)):
        raise PlaybookError(
            f"--database {choice!r}: name a database the platform declares (H, H/DB or DB), "
            f"DATABASE_URL, PGHOST or {SERVICE_CHOICE}"
        )
    return str(choice)


def choose(
    env: Mapping[str, str], choice: str | None, service: Callable[[], Database | None], up_hint: str
) -> Database:
    """The database, by the order in this module's docstring; each failure one line that names the fix."""
    platform = platform_databases(env)
    if choice:
        if choice == SERVICE_CHOICE:
            return _service_or_refuse(service, up_hint)
        if choice.upper() == "DATABASE_URL":
            if not env.get("DATABASE_URL"):
                raise PlaybookError("--database DATABASE_URL, but DATABASE_URL is not set: export it or pick another")
            return parse_url(env["DATABASE_URL"], "DATABASE_URL")
        if choice.upper() == "PGHOST":
            if not env.get("PGHOST"):
                raise PlaybookError("--database PGHOST, but PGHOST is not set: export PGHOST, PGUSER, PGPASSWORD")
            return _from_libpq(env)
        wanted = choice.lower()
        matches = [
            key for key in platform if wanted in (key, key.partition("/")[0], key.partition("/")[2]) and wanted != ""
        ]
        hosts_only = [key for key in matches if wanted == key.partition("/")[0]]
        if len(matches) == 1:
            return platform[matches[0]]()
        if len(matches) > 1:
            raise PlaybookError(
                f"--database {choice} matches several databases ({', '.join(matches)}): pass one of them as --database H/DB"
                if hosts_only
                else f"--database {choice} matches {', '.join(matches)}: pass one as --database H/DB"
            )
        known = [*platform, "DATABASE_URL", "PGHOST", SERVICE_CHOICE]
        raise PlaybookError(f"--database {choice}: no such database here; choose from {', '.join(known)}")
    if len(platform) > 1:
        raise PlaybookError(
            f"the platform declares several PostgreSQL databases ({', '.join(platform)}): "
            "pick one with --database H/DB (or set mlflow.database)"
        )
    if platform:
        return next(iter(platform.values()))()
    url = env.get("DATABASE_URL")
    if url and _is_postgres_url(url):
        return parse_url(url, "DATABASE_URL")
    if env.get("PGHOST"):
        return _from_libpq(env)
    return _service_or_refuse(service, up_hint)


def _service_or_refuse(service: Callable[[], Database | None], up_hint: str) -> Database:
    found = service()
    if found is None:
        raise PlaybookError(
            f"no PostgreSQL database: run `invoke postgres.up` first{up_hint}, or set DATABASE_URL "
            "(or POSTGRES_<H>_* / PGHOST...) to one, or leave out --backend postgres"
        )
    return found


# ---------------------------------------------------------------- checks before any write


def _pg_error(error: Exception) -> tuple[str, str]:
    """(SQLSTATE code, message) of a pg8000 DatabaseError."""
    detail = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    return detail.get("C", ""), detail.get("M", str(error))


def reach_shortfalls(db: Database, password: str | None, timeout: float = 5) -> list[str]:
    """Connect as MLflow will (pg8000, pure Python): what is wrong, in one line each, or nothing.

    A database whose MLflow schema is newer than the server's (a downgrade) is refused by the
    upgrade check (mlflow_upgrade.before_start locally, mlflow_upgrade.attach on an image change),
    which reads it with the server's own environment, PGPASSWORD included.
    """
    try:
        import pg8000.dbapi
        import pg8000.exceptions
    except ImportError:
        print(f"mlflow: {db.where()} not checked from here (no pg8000: pip install pg8000)", flush=True)
        return []
    ssl = dict(db.options).get("sslmode") in ("require", "verify-ca", "verify-full")
    try:
        connection = pg8000.dbapi.connect(
            user=db.user,
            host=db.host,
            port=db.port,
            database=db.dbname,
            password=password,
            timeout=timeout,
            ssl_context=True if ssl else None,
        )
    except pg8000.exceptions.DatabaseError as error:
        code, message = _pg_error(error)
        if code in ("28P01", "28000"):
            return [
                f"PostgreSQL at {db.host}:{db.port} refused user {db.user} ({message}): "
                f"check the password and user of {db.origin}"
            ]
        if code == "3D000":
            return [f"{db.where()} does not exist ({db.origin}): create it, or point MLflow at another database"]
        return [f"PostgreSQL at {db.host}:{db.port} refused the connection ({code} {message}): check {db.origin}"]
    except (pg8000.exceptions.InterfaceError, OSError) as error:
        cause = error.__cause__ or error.__context__ or error
        reason = str(cause).strip() or type(cause).__name__
        return [
            f"cannot reach PostgreSQL at {db.host}:{db.port} ({reason[:160]}): "
            f"check the host and port of {db.origin}, and that the server runs"
        ]
    connection.close()
    return []


def resolvable(host: str) -> bool:
    """Whether the host name resolves from here (an in-cluster service name does not from outside)."""
    import socket

    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def environment() -> Mapping[str, str]:
    return os.environ


def find_by_uri(env: Mapping[str, str], uri: str, service: Callable[[], Database | None]) -> Database:
    """The database (with its password) behind a URI a server was given: every source is tried."""
    candidates: list[Callable[[], Database | None]] = list(platform_databases(env).values())
    if env.get("DATABASE_URL") and _is_postgres_url(env["DATABASE_URL"]):
        candidates.append(lambda: parse_url(env["DATABASE_URL"], "DATABASE_URL"))
    if env.get("PGHOST"):
        candidates.append(lambda: _from_libpq(env))
    candidates.append(service)
    for candidate in candidates:
        try:
            found = candidate()
        except PlaybookError:
            continue
        if found is not None and found.uri() == uri:
            return found
    parts = urlsplit(uri)
    raise PlaybookError(
        f"MLflow uses database {unquote(parts.path.lstrip('/'))} on {parts.hostname}:{parts.port}, whose credentials "
        "are not in this environment: export the variables `mlflow.up` was given (or start the postgres service)"
    )


# ---------------------------------------------------------------- the backend a server runs, and the one to run


def deployed_uri(deployment: dict) -> str | None:
    """The backend store URI a deployed server reads (its MLFLOW_BACKEND_STORE_URI)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for entry in container.get("env") or []:
        if entry.get("name") == BACKEND_URI_ENV:
            return entry.get("value")
    args = container.get("args") or []  # a server deployed before the URI moved to the environment
    return args[args.index("--backend-store-uri") + 1] if "--backend-store-uri" in args[:-1] else None


def backend_of_uri(uri: str | None) -> str | None:
    if not uri:
        return None
    return "postgres" if uri.startswith(("postgresql", "postgres")) else "sqlite"


def describe_uri(uri: str | None) -> str:
    """The backend as output may show it: the database's host and name, never more."""
    if backend_of_uri(uri) == "postgres":
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(uri)
        return f"PostgreSQL, database {unquote(parts.path.lstrip('/'))} on {parts.hostname}:{parts.port or 5432}"
    return "SQLite on its volume" if uri else "unknown"


def choose_backend(flag: str | None, deployed: str | None, configured: str) -> tuple[str, str]:
    """--backend, else the running server's (an `up` at session start keeps it), else mlflow.backend."""
    if flag:
        return flag, "--backend"
    if deployed:
        return deployed, "kept from the running server; pass --backend to change it"
    return check_backend(configured) or "sqlite", "setting mlflow.backend"


def workers_for(c, backend: str) -> int:
    """mlflow.workers; unset: 1 for SQLite, mlflow.postgres_workers for PostgreSQL."""
    cfg = c.config.mlflow
    value = cfg.get("workers")
    if value is None:
        value = 1 if backend == "sqlite" else cfg.get("postgres_workers", 1)
    return check_workers(value, backend)
