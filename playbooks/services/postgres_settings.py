"""PostgreSQL settings both backends share, checked offline: names, the server's own settings, the start script."""

from __future__ import annotations

import re
import secrets

from playbooks.errors import PlaybookError
from playbooks.target import validate_namespace

SERVICE = "postgres"
PORT = 5432
# Role and database names the server takes unquoted: lower case, at most 63 bytes.
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MEMORY = re.compile(r"^[1-9][0-9]*(kB|MB|GB)$")


def instance(c, name: str | None) -> str:
    name = name or c.config.postgres.name
    try:
        return validate_namespace(name)
    except PlaybookError:
        raise PlaybookError(f"invalid service name {name!r}: use a DNS label such as 'postgres'") from None


def identifier(value, setting: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise PlaybookError(
            f"setting {setting} is {value!r}: use a lower-case name of letters, digits and _ (at most 63), "
            "starting with a letter or _"
        )
    return value


def user(c) -> str:
    return identifier(c.config.postgres.user, "postgres.user")


def database(c) -> str:
    return identifier(c.config.postgres.database, "postgres.database")


def server_settings(c) -> dict[str, str]:
    """The `-c` settings of the server that configuration may change, checked."""
    cfg = c.config.postgres
    buffers = str(cfg.shared_buffers).strip()
    if not MEMORY.match(buffers):
        raise PlaybookError(
            f"setting postgres.shared_buffers is {cfg.shared_buffers!r}: use a size such as 64MB (kB, MB or GB)"
        )
    connections = str(cfg.max_connections).strip()
    if isinstance(cfg.max_connections, bool) or not connections.isdigit() or not 5 <= int(connections) <= 1000:
        raise PlaybookError(
            f"setting postgres.max_connections is {cfg.max_connections!r}: use a whole number from 5 to 1000"
        )
    return {"shared_buffers": buffers, "max_connections": connections}


def validate(c, name: str | None = None) -> str:
    """Every setting `up` uses, before anything is asked or written; returns the instance name."""
    found = instance(c, name)
    user(c)
    database(c)
    server_settings(c)
    return found


def generate_password() -> str:
    # URL-safe: no character a connection URI or a .pgpass line would need to escape.
    return secrets.token_urlsafe(24)


def server_flags(settings: dict[str, str]) -> list[str]:
    """`-c key=value` for each of the server's settings."""
    return [flag for key, value in settings.items() for flag in ("-c", f"{key}={value}")]
