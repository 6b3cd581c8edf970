"""Running the CLIs (kubectl, helm, kind, docker): argv lists, an explicit environment, a deadline.

Never a shell, never the caller's cluster settings: the environment of a child is the
caller's without the variables that pick a cluster, and a kubeconfig that is a list of files
(a:b, which no --kubeconfig flag takes) reaches the child as its KUBECONFIG. Writes are shown
instead of run in dry-run mode (`shown`); files that hold credentials or generated values are
written 0600, atomically (`write_private`).
"""

from __future__ import annotations

import os
import shlex
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playbooks.errors import PlaybookError

# Variables that would choose a cluster, a context, a namespace or a kind cluster behind the flags' back.
CLUSTER_VARS = frozenset({"KUBECONFIG", "HELM_NAMESPACE", "HELM_KUBECONTEXT", "KIND_CLUSTER_NAME"})


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class TimedOut(Exception):
    """A command outlived its deadline (and was killed): each caller says what that means for it."""


def find_command(binary: str, fix: str):
    """The sh.Command for a CLI; a missing one is one line that names the fix."""
    import sh

    try:
        return sh.Command(binary)
    except sh.CommandNotFound:
        raise PlaybookError(f"{binary} not found: {fix}") from None


def run_argv(
    command,
    argv: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    stdin: str | None = None,
    lines: Callable[[str], None] | None = None,
) -> Result:
    """Run a found CLI (find_command) with argv; any exit code is a Result, a deadline raises TimedOut.

    With lines, each output line (stdout and stderr) is handed to it as it comes, and the
    Result's stdout holds them all.
    """
    import sh

    seen: list[str] = []
    streams: dict = {}
    if lines is not None:

        def line(text: str) -> None:
            seen.append(text)
            lines(text)

        streams = {"_out": line, "_err": line}
    try:
        done = command(
            *argv,
            _in=stdin,
            _env=dict(env),
            _timeout=timeout,
            _tty_out=False,
            _return_cmd=True,
            _ok_code=list(range(256)),
            **streams,
        )
    except sh.TimeoutException:
        raise TimedOut(f"`{shlex.join([str(command), *argv][:3])}` did not finish within {timeout:.0f}s") from None
    if lines is not None:
        return Result(done.exit_code, "".join(seen), "")
    return Result(done.exit_code, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def last_line(text: str) -> str:
    """The last non-empty line of a CLI's output: where kubectl, helm and kind say what went wrong."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


# ---------------------------------------------------------------- environment


def is_list(kubeconfig: str | None) -> bool:
    """Several kubeconfig files (a:b): no --kubeconfig flag takes them, only KUBECONFIG does."""
    return bool(kubeconfig) and os.pathsep in kubeconfig


def kubeconfig_flags(kubeconfig: str | None, flag: str = "--kubeconfig") -> list[str]:
    """The flag that names one kubeconfig file; none for a list (it goes in the environment, see child_env)."""
    return [flag, kubeconfig] if kubeconfig and not is_list(kubeconfig) else []


def child_env(base: Mapping[str, str], kubeconfig: str | None = None) -> dict[str, str]:
    """base without the variables that pick a cluster; KUBECONFIG only when kubeconfig is a list of files."""
    env = {key: value for key, value in base.items() if key not in CLUSTER_VARS and not key.startswith("HELM_KUBE")}
    if is_list(kubeconfig):
        env["KUBECONFIG"] = kubeconfig
    return env


# ---------------------------------------------------------------- dry-run


def shown(argv: Sequence[str], stdin: str | None = None, note: str = "") -> str:
    """A write as dry-run prints it: the real command line, and what it reads on stdin (already redacted)."""
    line = f"$ {shlex.join(argv)}{note}"
    return f"{line} <<'EOF'\n{stdin}EOF" if stdin is not None else line


# ---------------------------------------------------------------- private files


def private_dir(env: Mapping[str, str]) -> Path:
    """A folder only this user may enter: under $XDG_RUNTIME_DIR, else the temporary directory.

    Not under HOME, which may be read-only in a pod. The folder is created 0700; one that is
    a symlink or belongs to someone else (a shared /tmp) is refused, never used.
    """
    runtime = env.get("XDG_RUNTIME_DIR")
    base = (
        Path(runtime)
        if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK)
        else Path(tempfile.gettempdir())
    )
    folder = base / f"datalab-playbooks-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError as error:
        raise PlaybookError(
            f"cannot create {folder} ({error.strerror}): set XDG_RUNTIME_DIR or TMPDIR to a writable folder"
        ) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PlaybookError(
            f"{folder} is not a folder of this user (a symlink, or made by someone else): remove it, "
            "or set XDG_RUNTIME_DIR or TMPDIR to a private folder"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        folder.chmod(0o700)
    return folder


def write_private(path: Path, text: str) -> Path:
    """Write text to path readable by its owner only (0600 from its creation), replacing it atomically.

    A missing parent folder is created 0700. The text goes to a temporary file beside path
    first (synced to disk), so a reader sees the old file or the new one, never a part.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def private_file(text: str, name: str, prefix: str = "playbooks-") -> Iterator[Path]:
    """text in a 0600 file inside a new 0700 temporary folder, both deleted on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield write_private(Path(folder) / name, text)
