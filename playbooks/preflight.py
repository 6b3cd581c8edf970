"""Preflight: the checks that can refuse a plan, run together before the first write.

A check returns the shortfalls it found, each one short sentence that names its fix (a
PlaybookError it raises counts as one). `refuse` turns them into a single line, so a user
fixes everything in one go instead of meeting the problems one run at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from playbooks.errors import PlaybookError

Check = Callable[[], list[str]]

# kubectl 1.26: `kubectl events`, server-side diff and apply with --force-conflicts.
KUBECTL_MINIMUM = (1, 26)
_kubectl_versions: dict[str, tuple[int, int, str]] = {}


def gather(checks: list[Check]) -> list[str]:
    """Run the checks concurrently; their shortfalls in the order the checks were given."""

    def run(check: Check) -> list[str]:
        try:
            return list(check())
        except PlaybookError as error:
            return [str(error)]

    if len(checks) <= 1:
        return [s for check in checks for s in run(check)]
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        return [s for found in pool.map(run, checks) for s in found]


def refuse(shortfalls: list[str]) -> None:
    """Nothing to do when there is no shortfall; else one line listing every one."""
    unique = list(dict.fromkeys(shortfalls))
    if len(unique) == 1:
        raise PlaybookError(unique[0])
    if unique:
        listed = "; ".join(f"({i}) {s}" for i, s in enumerate(unique, 1))
        raise PlaybookError(f"{len(unique)} problems, nothing was changed: {listed}")


def require(checks: list[Check]) -> None:
    refuse(gather(checks))


def kubectl_version(binary: str, command) -> tuple[int, int, str]:
    """(major, minor, text) of a kubectl client, asked once per process."""
    import os

    from playbooks.runner import run_argv

    if binary not in _kubectl_versions:
        result = run_argv(command, ["version", "--client", "-o", "json"], dict(os.environ), timeout=20)
        try:
            info = json.loads(result.stdout)["clientVersion"]
            major, minor = int(info["major"]), int(str(info["minor"]).rstrip("+"))
            text = str(info.get("gitVersion", f"v{major}.{minor}")).lstrip("v")
        except (ValueError, KeyError, TypeError):
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no answer"]
            raise PlaybookError(
                f"{binary} version --client did not answer ({last[0]}): install kubectl or set tools.kubectl"
            ) from None
        _kubectl_versions[binary] = (major, minor, text)
    return _kubectl_versions[binary]


def kubectl_shortfalls(binary: str, command) -> list[str]:
    major, minor, text = kubectl_version(binary, command)
    if (major, minor) < KUBECTL_MINIMUM:
        wanted = ".".join(map(str, KUBECTL_MINIMUM))
        return [f"kubectl {text} ({binary}) is too old: install kubectl {wanted} or newer, or set tools.kubectl"]
    return []
