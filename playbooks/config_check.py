"""The configuration (invoke.yaml, INVOKE_* variables) against the kinds of the defaults.

A setting of the wrong kind (`local.start_timeout: soon`, a list where a name belongs) is
refused in one line before a task runs, instead of failing deep inside it.
"""

from __future__ import annotations

from collections.abc import Mapping

from playbooks.defaults import DEFAULTS


def _number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _problem(default, value) -> str | None:
    """Why value cannot stand where default stands, or None. A None default takes anything."""
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int | float):
        return None if _number(value) else "a number"
    if isinstance(default, str):
        # Quantities such as `cpu: 1` come as numbers from YAML: scalars stand for strings.
        return None if isinstance(value, str | int | float) and not isinstance(value, bool) else "a single value"
    if isinstance(default, list | tuple):
        return None if isinstance(value, list | tuple) else "a list"
    if isinstance(default, Mapping):
        return None if hasattr(value, "keys") else "a mapping of settings"
    return None


def mismatches(config, defaults: Mapping, path: str = "") -> list[tuple[str, object, str]]:
    """(dotted key, value, what it should be) for each setting whose kind differs from its default's."""
    found = []
    for key, default in defaults.items():
        try:
            value = config[key]
        except (KeyError, TypeError):
            continue
        where = f"{path}.{key}" if path else key
        problem = _problem(default, value)
        if problem:
            found.append((where, value, problem))
        elif isinstance(default, Mapping) and hasattr(value, "keys"):
            found += mismatches(value, default, where)
    return found


def config_problem(config) -> str | None:
    """The first setting whose kind differs from its default's, as the line that names the fix; None when all fit."""
    found = mismatches(config, DEFAULTS)
    if not found:
        return None
    key, value, wanted = found[0]
    variable = "INVOKE_" + key.upper().replace(".", "_")
    return f"setting {key} is {value!r}, which is not {wanted}: fix it in invoke.yaml or {variable}"
