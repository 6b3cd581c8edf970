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


VERSIONS_FILE = "kubectl-versions.json"
REMEMBERED = 16


def _binary_key(command) -> str | None:
    """What identifies one kubectl file: its path, inode, size and change times (a new binary, a new key)."""
    import os

    try:
        path = os.path.realpath(str(command))
        info = os.stat(path)
    except OSError:
        return None
    return f"{path}|{info.st_ino}|{info.st_size}|{info.st_mtime_ns}|{info.st_ctime_ns}"


def _remembered_versions() -> tuple[dict, object]:
    """The remembered versions, and the file that holds them (None: no private folder to keep them in)."""
    import os

    from playbooks.runner import private_dir

    try:
        path = private_dir(os.environ) / VERSIONS_FILE
    except PlaybookError:
        return {}, None
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, path
    return (known if isinstance(known, dict) else {}), path


def kubectl_version(binary: str, command) -> tuple[int, int, str]:
    """(major, minor, text) of a kubectl client: asked once per process, and remembered across runs for
    the same file (in private_dir, keyed by path, inode, size and change times), so that a no-op `up`
    starts no kubectl process at all."""
    import os

    from playbooks.runner import run_argv

    if binary in _kubectl_versions:
        return _kubectl_versions[binary]
    key = _binary_key(command)
    known, path = _remembered_versions() if key else ({}, None)
    found = known.get(key) if key else None
    if isinstance(found, list) and len(found) == 3:
        _kubectl_versions[binary] = (int(found[0]), int(found[1]), str(found[2]))
        return _kubectl_versions[binary]
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
    if key and path is not None and _binary_key(command) == key:  # unchanged while it answered
        from playbooks.runner import write_private

        try:
            kept = list({**known, key: [major, minor, text]}.items())[-REMEMBERED:]  # the most recent ones
            write_private(path, json.dumps(dict(kept)))
        except OSError:
            pass  # remembering is only a saving
    return _kubectl_versions[binary]


def kubectl_shortfalls(binary: str, command) -> list[str]:
    major, minor, text = kubectl_version(binary, command)
    if (major, minor) < KUBECTL_MINIMUM:
        wanted = ".".join(map(str, KUBECTL_MINIMUM))
        return [f"kubectl {text} ({binary}) is too old: install kubectl {wanted} or newer, or set tools.kubectl"]
    return []
