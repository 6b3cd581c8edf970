"""Scan for planted secret values: in the argv of every process while tasks run, in outputs, in files.

    with ArgvScan() as argv:
        result = run("up", "smoke")
    assert argv.saw("mlflow", "server"), "the scan saw no server: it proves nothing"
    assert argv.leaks(secrets) == [] and text_leaks({"up": result.stdout}, secrets) == []

Only argv (/proc/*/cmdline) is sampled: the environment legitimately carries secrets to the
server processes. Every process on the machine is sampled, so tests should plant values of
their own (`planted()`), which no other test can put anywhere.
"""

from __future__ import annotations

import os
import stat
import threading
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path


def planted(prefix: str = "") -> dict[str, str]:
    """Fresh, distinctive AWS credentials (moto's S3 server accepts any)."""
    tag = uuid.uuid4().hex
    return {
        "AWS_ACCESS_KEY_ID": f"AKIASCAN{prefix.upper()}{tag[:10].upper()}",
        "AWS_SECRET_ACCESS_KEY": f"scan-s3cr3t-{prefix}{tag}",
    }


def _cmdlines() -> dict[int, str]:
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    raw = handle.read()
            except OSError:
                continue
            if raw:
                found[int(entry.name)] = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    return found


class ArgvScan:
    """Samples the command line of every process in a background thread while the block runs.

    `seen` keeps each distinct command line once; a secret can be checked for after the
    block (values generated during the run, such as a store's credentials, too).
    """

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.seen: set[str] = set()
        self.sweeps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="argv-scan", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)
        self.sample()

    def sample(self) -> None:
        self.seen.update(_cmdlines().values())
        self.sweeps += 1

    def __enter__(self) -> ArgvScan:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def saw(self, *parts: str) -> list[str]:
        """The command lines that contain every one of parts (empty: the scan saw no such process)."""
        return sorted(line for line in self.seen if all(part in line for part in parts))

    def leaks(self, secrets: Mapping[str, str]) -> list[str]:
        """'<secret name> in argv: <command line>' for every command line that holds a secret value."""
        return [
            f"{name} in argv: {line[:300]}"
            for name, value in secrets.items()
            for line in sorted(self.seen)
            if value and value in line
        ]


def text_leaks(texts: Mapping[str, str], secrets: Mapping[str, str]) -> list[str]:
    """'<secret name> in <where>' for every text (output of a run, a file) that holds a secret value."""
    return [
        f"{name} in {where}"
        for where, text in texts.items()
        for name, value in secrets.items()
        if value and value in text
    ]


def output_texts(results: Iterable[tuple[str, object]]) -> dict[str, str]:
    """{'<label> stdout': ..., '<label> stderr': ...} of completed processes, for text_leaks."""
    texts = {}
    for label, result in results:
        texts[f"{label} stdout"] = result.stdout
        texts[f"{label} stderr"] = result.stderr
    return texts


def file_leaks(root: Path, secrets: Mapping[str, str], holders: Iterable[Path] = ()) -> tuple[list[str], list[Path]]:
    """Scan every file under root (as bytes) for the secrets, except the holders, files meant to
    keep a secret, each of which must be 0600. Returns (leaks and wrong modes, files scanned)."""
    holders = {Path(path).resolve() for path in holders}
    problems, scanned = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        if path.resolve() in holders:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode != 0o600:
                problems.append(f"{path} holds a secret with mode {mode:o}, not 600")
            continue
        data = path.read_bytes()
        scanned.append(path)
        problems += [f"{name} in {path}" for name, value in secrets.items() if value and value.encode() in data]
    return problems, scanned
