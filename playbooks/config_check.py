"""The configuration (invoke.yaml, INVOKE_* variables) against the defaults, before a task runs.

Under our sections (those of playbooks/defaults.py), a key the defaults do not have (a typo
such as `mlflow: {prot: 1}`) and a value of the wrong kind (`local.state_dir: 5`, a list
where a mapping belongs) are refused in one line naming the key and what it should be,
instead of being ignored or failing deep inside a task. Booleans from the environment are
read strictly: invoke itself takes any non-empty INVOKE_* value but "0" as true, so
INVOKE_SECURITY_NETWORK_POLICY=false would turn the policy on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from playbooks.defaults import DEFAULTS

TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")
# Mappings whose keys are Kubernetes' (a securityContext, requests/limits): not ours to list.
OPEN = ("security.pod", "security.container")
# Settings without a default value (None) and the kind they take.
OPTIONAL_STRINGS = {"namespace", "mode", "kubeconfig", "context", "storage_class", "bucket", "state_dir"}
# Quantities and versions come as numbers from YAML (`cpu: 1`, `limit: 1`): scalars stand for strings there.
NUMERIC_STRINGS = {"storage_size", "worker_scratch_size", "request", "limit", "memory", "chart_version"}


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


def _open(path: str) -> bool:
    return path in OPEN or "resources" in path


def _problem(key: str, default, value) -> str | None:
    """Why value cannot stand where default stands, or None."""
    if value is None:
        return None
    if default is None:
        return None if key not in OPTIONAL_STRINGS or isinstance(value, str) else "a string"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int | float):
        return None if _number(value) else "a number"
    if isinstance(default, str):
        if isinstance(value, str):
            return None
        if key in NUMERIC_STRINGS and isinstance(value, int | float) and not isinstance(value, bool):
            return None
        return "a string"
    if isinstance(default, list | tuple):
        return None if isinstance(value, list | tuple) else "a list"
    if isinstance(default, Mapping):
        return None if hasattr(value, "keys") else "a mapping of settings"
    return None


def mismatches(config, defaults: Mapping, path: str = "") -> list[tuple[str, object, str]]:
    """(dotted key, value, what it should be) for each unknown key and each value of the wrong kind."""
    found = []
    for key in config:
        where = f"{path}.{key}" if path else key
        if key not in defaults:
            if path and not _open(path):
                known = ", ".join(sorted(defaults))
                found.append((where, config[key], f"a known setting (unknown key; {path} has {known})"))
            continue
        default, value = defaults[key], config[key]
        problem = _problem(key, default, value)
        if problem:
            found.append((where, value, problem))
        elif isinstance(default, Mapping) and hasattr(value, "keys") and not _open(where):
            found += mismatches(value, default, where)
    return found


def env_variable(key: str) -> str:
    return "INVOKE_" + key.upper().replace(".", "_")


def strict_booleans(config, defaults: Mapping, path: str = "", env=None) -> str | None:
    """Read each boolean setting's INVOKE_* variable strictly and put its value in the config;
    the line that names the fix for the first value that is no boolean, else None."""
    env = os.environ if env is None else env
    for key, default in defaults.items():
        where = f"{path}.{key}" if path else key
        if isinstance(default, Mapping) and not _open(where):
            try:
                section = config[key]
            except (KeyError, TypeError):
                continue
            if hasattr(section, "keys") and (problem := strict_booleans(section, default, where, env)):
                return problem
        elif isinstance(default, bool) and (raw := env.get(env_variable(where))) is not None:
            text = raw.strip().lower()
            if text not in TRUE + FALSE:
                return f"{env_variable(where)} is {raw!r}, which is not a boolean: use true/false, 1/0 or yes/no"
            config[key] = text in TRUE
    return None


def config_problem(config) -> str | None:
    """The first unknown key or setting of the wrong kind, as the line that names the fix; None when all fit."""
    found = mismatches({key: config[key] for key in DEFAULTS if key in config}, DEFAULTS)
    if found:
        key, value, wanted = found[0]
        if wanted.startswith("a known setting"):
            return f"setting {key} is not {wanted}: fix or remove it in invoke.yaml"
        return f"setting {key} is {value!r}, which is not {wanted}: fix it in invoke.yaml or {env_variable(key)}"
    return strict_booleans(config, DEFAULTS)


def install_load_error_hook() -> None:
    """Under `invoke` (tasks.py), invoke merges invoke.yaml before any code of ours runs, and its
    merge and YAML errors end the run as tracebacks: print them as one `error:` line instead
    (the `playbooks` script catches them itself, see cli.py)."""
    import sys

    previous = sys.excepthook

    def hook(kind, error, trace) -> None:
        module = getattr(kind, "__module__", "") or ""
        if module.startswith(("invoke.config", "invoke.vendor.yaml", "yaml")):
            import re

            reason = re.sub(r"\(\{.*\}\)", "(...)", " ".join(str(error).split()))[:300]
            print(f"error: cannot load the configuration ({reason}): fix invoke.yaml in {os.getcwd()}", file=sys.stderr)
            return
        previous(kind, error, trace)

    sys.excepthook = hook
