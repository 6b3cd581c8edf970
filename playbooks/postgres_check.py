"""The PostgreSQL smoke check: log in with the generated password, write a row and read it back.

pg8000 (pure Python) is the client; it is imported inside the check, so `invoke --list` stays fast.
The password is only handed to the driver, never printed: a failure shows the server's words, which
never contain it.
"""

from __future__ import annotations

import secrets
import time

from playbooks.report import CheckFailed, Report

TABLE = "datalab_playbooks_smoke"


def _connect(host: str, port: int, user: str, database: str, password: str, timeout: float):
    import pg8000.native

    return pg8000.native.Connection(user, host=host, port=port, database=database, password=password, timeout=timeout)


def _reason(error: Exception) -> str:
    """pg8000's error as one line: the server's message (a dict with M) or the error itself."""
    first = error.args[0] if error.args else error
    if isinstance(first, dict):
        return f"{first.get('M', first)} ({first.get('C', '?')})"
    return str(first).strip().splitlines()[0] if str(first).strip() else type(error).__name__


def round_trip(
    host: str, port: int, user: str, database: str, password: str, service: str = "postgres", timeout: float = 60
) -> Report:
    """Connect, create a temporary table, write and read a row, drop it; then a wrong password must be refused."""
    report = Report(service)
    deadline = time.monotonic() + timeout
    try:
        with report.step("connect", f"{user}@{host}:{port}/{database}") as info:
            connection = None
            while connection is None:
                try:
                    connection = _connect(host, port, user, database, password, min(10.0, timeout))
                except Exception as error:  # the server may still be starting: retry until the deadline
                    if time.monotonic() >= deadline or "password authentication failed" in _reason(error):
                        raise CheckFailed(_reason(error)) from None
                    time.sleep(1)
            version = connection.run("SHOW server_version")[0][0]
            info["detail"] = f"{user}@{host}:{port}/{database}, PostgreSQL {version}"
        try:
            marker = secrets.token_hex(8)
            with report.step("create a temporary table"):
                connection.run(f"CREATE TEMPORARY TABLE {TABLE} (id integer PRIMARY KEY, note text NOT NULL)")
            with report.step("write and read a row") as info:
                connection.run(f"INSERT INTO {TABLE} (id, note) VALUES (1, :note)", note=marker)
                rows = connection.run(f"SELECT note FROM {TABLE} WHERE id = 1")
                if rows != [[marker]]:
                    raise CheckFailed(f"read back {rows!r}, wrote {marker!r}")
                info["detail"] = "1 row"
            with report.step("drop the table"):
                connection.run(f"DROP TABLE {TABLE}")
        finally:
            connection.close()
        # Last: through a port-forward, the server closing the refused connection can end kubectl's forward.
        with report.step("a wrong password is refused"):
            try:
                _connect(host, port, user, database, password + "-wrong", 10).close()
            except Exception as error:
                if "password authentication failed" not in _reason(error):
                    raise CheckFailed(f"expected a refusal, got: {_reason(error)}") from None
            else:
                raise CheckFailed("the server let a wrong password in: check its pg_hba.conf")
    except CheckFailed:
        pass
    return report
