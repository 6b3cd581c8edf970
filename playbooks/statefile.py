"""Local mode's files: private (folders 0700, files 0600), written atomically, checked on read.

A reader sees the old file or the new one, never half of one (temp file + fsync + rename);
a file that does not parse, or parses to the wrong shape, is reported as a problem instead
of ending in a traceback deep inside a task.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from playbooks import runner

# The fields of a process's state file and their types (see local.write_state).
PROCESS_FIELDS: dict[str, tuple[type, ...]] = {
    "pid": (int,),
    "pgid": (int,),
    "start_time": (int,),
    "cmdline": (list,),
    "argv": (list,),
    "fingerprint": (str,),
    "ports": (dict,),
    "inputs": (dict,),
    "health_url": (str, type(None)),
    "health_port": (int, type(None)),
    "started": (int, float),
}


def private_dir(path: Path) -> Path:
    """The folder (and its missing parents), 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace path with text atomically; the file is 0600 from its first byte, its folder 0700."""
    private_dir(path.parent)
    runner.write_private(path, text)


def write_json(path: Path, data: dict) -> None:
    write_private(path, json.dumps(data, indent=2))


def read_json(path: Path) -> tuple[dict | None, str | None]:
    """(data, None), (None, None) when there is no file, or (None, what is wrong with it)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, f"cannot be read ({error.strerror or error})"
    try:
        data = json.loads(text)
    except ValueError:
        return None, "is not valid JSON (truncated or overwritten?)" if text.strip() else "is empty"
    if not isinstance(data, dict):
        return None, f"holds a {type(data).__name__}, not a mapping"
    return data, None


def shape_problem(data: dict, fields: dict[str, tuple[type, ...]] = PROCESS_FIELDS) -> str | None:
    """What is wrong with the shape of data, or None."""
    for key, types in fields.items():
        if key not in data:
            return f"lacks {key!r}"
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join("null" if kind is type(None) else kind.__name__ for kind in types)
            return f"has {key}={value!r}, which is not {wanted}"
    if data["pid"] <= 1 or data["pgid"] <= 1:
        return f"has pid {data['pid']} / pgid {data['pgid']}, which no service of ours can have"
    if not all(isinstance(part, str) for part in data["argv"] + data["cmdline"]) or not data["cmdline"]:
        return "has a command line that is not a list of strings"
    if not all(isinstance(port, int) and not isinstance(port, bool) for port in data["ports"].values()):
        return "has a port that is not a number"
    return None
