"""helm, called as argv lists pinned to the detected target, with deadlines.

Values travel in files written with mode 0600 inside a private temporary directory and
deleted afterwards, so nothing generated reaches a command line. The argv built here
works with helm 3.8+ and helm 4: a bare `--wait` (a boolean in 3, the `watcher` strategy
in 4), no `--atomic` (renamed in 4), no `helm list --all` (removed in 4). In dry-run mode
writes are printed instead of run; reads still happen.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml

from playbooks.errors import PlaybookError
from playbooks.kube import HEARTBEAT_SECONDS, POLL_SECONDS, Printer
from playbooks.render import REDACTED, dump_yaml
from playbooks.runner import (
    Result,
    TimedOut,
    child_env,
    find_command,
    kubeconfig_flags,
    last_line,
    private_file,
    run_argv,
    shown,
)
from playbooks.target import Target

MINIMUM_VERSION = (3, 8, 0)
# Keys whose values are never printed, wherever they sit in a values tree.
SECRET_KEYS = frozenset({"password", "apiToken", "token", "secret"})
# Every state a release can be in: `helm list` hides some by default and helm 4 has no --all.
LIST_STATES = ("--deployed", "--failed", "--pending", "--uninstalling", "--superseded")
_VERSION = re.compile(r"v(\d+)\.(\d+)\.(\d+)")
_checked: dict[str, tuple[int, int, int]] = {}


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = _VERSION.search(text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def redact_values(values):
    """A copy safe to print: every value under a secret-looking key replaced."""
    if isinstance(values, dict):
        return {
            key: REDACTED if key in SECRET_KEYS and value not in (None, "") else redact_values(value)
            for key, value in values.items()
        }
    if isinstance(values, list):
        return [redact_values(item) for item in values]
    return copy.deepcopy(values)


def merge_values(base: dict, override: dict) -> dict:
    """Merge values as helm merges several -f files: mappings recursively, the later file wins."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@contextmanager
def values_file(values: dict, name: str = "values.yaml") -> Iterator[Path]:
    """values written to a 0600 file in a private temporary directory, deleted on exit."""
    with private_file(dump_yaml(values), name, prefix="playbooks-helm-") as path:
        yield path


def _stop(process) -> None:
    import sh

    process.terminate()
    try:
        process.wait(timeout=10)
    except sh.TimeoutException:
        process.kill()


class Helm:
    def __init__(self, target: Target, binary: str = "helm", dry_run: bool = False, out: Printer = print):
        self.target = target
        self.binary = binary
        self.dry_run = dry_run
        self.out = out

    # ------------------------------------------------------------ running

    def _command(self):
        return find_command(self.binary, "install helm 3.8+ or set tools.helm")

    def _env(self) -> dict[str, str]:
        return child_env(os.environ, self.target.source.kubeconfig)

    def flags(self) -> list[str]:
        """Flags that pin helm to this target, whatever the caller's environment (a list of kubeconfig files is in _env)."""
        flags = kubeconfig_flags(self.target.source.kubeconfig)
        if self.target.context:
            flags += ["--kube-context", self.target.context]
        return [*flags, "--namespace", self.target.namespace]

    def argv(self, *args: str, cluster: bool = True) -> list[str]:
        return [self.binary, *args, *(self.flags() if cluster else [])]

    def run(self, *args: str, timeout: float = 60, check: bool = True, cluster: bool = True) -> Result:
        """Run helm; `cluster` adds the flags that pin it to the target (not for repo commands)."""
        try:
            result = run_argv(self._command(), self.argv(*args, cluster=cluster)[1:], self._env(), timeout)
        except TimedOut:
            raise PlaybookError(
                f"helm {' '.join(args[:2])} did not finish within {timeout:.0f}s: check that the API server "
                f"{self.target.server} (or the chart repository) is reachable"
            ) from None
        if check and not result.ok:
            raise self.failure(args, result)
        return result

    def failure(self, args: Sequence[str], result: Result) -> PlaybookError:
        message = last_line(result.stderr or result.stdout).removeprefix("Error: ")
        what = " ".join(args[:2]) if args and args[0] == "repo" else args[0]
        if "another operation" in message and "in progress" in message:
            return PlaybookError(
                f"helm {what}: {message}; an earlier run was interrupted: run `helm rollback` or the service's `down`, then `up` again"
            )
        if args and args[0] in ("repo", "pull", "show"):
            return PlaybookError(
                f"helm {what}: cannot get the chart ({message}); give --chart a local chart directory or an oci:// reference"
            )
        if "cluster unreachable" in message or re.search(r"connection refused|no such host|i/o timeout", message):
            return PlaybookError(f"helm {what}: cannot reach the Kubernetes API at {self.target.server}: {message}")
        if "forbidden" in message.lower():
            return PlaybookError(f"helm {what}: {message}; use credentials that may do this (the vCluster kubeconfig)")
        return PlaybookError(f"helm {what} failed: {message}")

    def show(self, *args: str, cluster: bool = True, note: str = "") -> None:
        """Print a write instead of running it (dry-run)."""
        self.out(shown(self.argv(*args, cluster=cluster), note=note))

    def run_watched(self, args: Sequence[str], timeout: float, progress: Callable[[], str], label: str) -> Result:
        """Run a long helm command (one with --wait) and print progress lines while it runs.

        helm's own --timeout ends the wait; the deadline here is a backstop a minute later.
        """
        import sh

        command = self._command()
        process = command(
            *self.argv(*args)[1:],
            _env=self._env(),
            _bg=True,
            _bg_exc=False,
            _tty_out=False,
            _ok_code=list(range(256)),
        )
        start = time.monotonic()
        last_line, last_print = "", 0.0
        while True:
            try:
                process.wait(timeout=POLL_SECONDS)
                break
            except sh.TimeoutException:
                pass
            elapsed = time.monotonic() - start
            if elapsed > timeout + 60:
                _stop(process)
                raise PlaybookError(
                    f"helm {args[0]} hung past its own {timeout:.0f}s timeout: check the API server {self.target.server}"
                )
            try:
                line = progress()
            except PlaybookError as error:
                line = f"API not answering ({error})"
            now = time.monotonic()
            if line != last_line or now - last_print >= HEARTBEAT_SECONDS:
                self.out(f"{label}: {line} [{elapsed:.0f}s/{timeout:.0f}s]")
                last_line, last_print = line, now
        return Result(process.exit_code, process.stdout.decode(), process.stderr.decode())

    # ------------------------------------------------------------ queries

    def version(self) -> tuple[int, int, int]:
        """helm's version; refuses anything older than 3.8 (OCI charts, `repo list -o json`)."""
        if self.binary in _checked:
            return _checked[self.binary]
        result = self.run("version", "--short", timeout=20, check=False, cluster=False)
        found = parse_version(result.stdout)
        if not result.ok or found is None:
            raise PlaybookError(
                f"{self.binary} version did not answer ({last_line(result.stderr or result.stdout)}): "
                "install helm 3.8+ or set tools.helm"
            )
        if found < MINIMUM_VERSION:
            raise PlaybookError(
                f"helm {'.'.join(map(str, found))} ({self.binary}) is too old: install helm 3.8 or newer, or set tools.helm"
            )
        _checked[self.binary] = found
        return found

    def repos(self) -> dict[str, str]:
        """Configured chart repositories: name -> URL."""
        result = self.run("repo", "list", "-o", "json", timeout=20, check=False, cluster=False)
        if not result.ok:
            if "no repositories" in (result.stderr + result.stdout):  # helm 3 with none configured
                return {}
            raise self.failure(("repo", "list"), result)
        return {repo["name"]: repo["url"] for repo in json.loads(result.stdout or "[]")}

    def ensure_repo(self, name: str, url: str) -> bool:
        """Add the repository unless it is there; returns whether it was added."""
        known = self.repos()
        if known.get(name, "").rstrip("/") == url.rstrip("/"):
            return False
        if name in known:
            raise PlaybookError(
                f"helm repository {name!r} points to {known[name]}, not {url}: "
                f"set gateway.repo_name to another name or run `helm repo remove {name}`"
            )
        if self.dry_run:
            self.show("repo", "add", name, url, cluster=False)
            return True
        self.run("repo", "add", name, url, timeout=120, cluster=False)
        return True

    def update_repo(self, name: str) -> None:
        if self.dry_run:
            self.show("repo", "update", name, cluster=False)
            return
        self.run("repo", "update", name, timeout=120, cluster=False)

    def has_chart_version(self, ref: str, version: str) -> bool:
        """Whether the cached index of a repository lists the chart version (no network)."""
        result = self.run("search", "repo", ref, "--version", version, "-o", "json", timeout=30, cluster=False)
        return any(entry.get("name") == ref for entry in json.loads(result.stdout or "[]"))

    def release(self, name: str) -> dict | None:
        """The release's `helm list` entry (name, status, chart, revision), or None."""
        result = self.run("list", "-o", "json", "--filter", f"^{name}$", *LIST_STATES, timeout=30)
        for entry in json.loads(result.stdout or "[]"):
            if entry.get("name") == name:
                return entry
        return None

    def user_values(self, release: str) -> dict:
        result = self.run("get", "values", release, "-o", "json", timeout=30)
        return json.loads(result.stdout or "{}") or {}

    def show_crds(self, chart: Sequence[str]) -> list[dict]:
        """The CRDs a chart ships (its crds/ folder), parsed. chart: the chart argv (ref, --version)."""
        result = self.run("show", "crds", *chart, timeout=120, cluster=False)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    # ------------------------------------------------------------ writes

    def upgrade_argv(
        self, release: str, chart: Sequence[str], values: Sequence[Path | str], timeout: float
    ) -> list[str]:
        """The arguments of `helm upgrade --install` (after the binary, before the target flags)."""
        args = ["upgrade", "--install", release, *chart]
        for path in values:
            args += ["--values", str(path)]
        return [*args, "--wait", "--timeout", f"{int(timeout)}s"]

    def uninstall_argv(self, release: str, timeout: float) -> list[str]:
        return ["uninstall", release, "--wait", "--timeout", f"{int(timeout)}s"]
