"""The one fake kubectl of the unit tests: strict, scripted per call.

The unit tests have no API server (the e2e suite has real ones), so where code under test
runs kubectl they give it this stand-in: an executable that answers only the calls the test
expects, and fails every other one. A test scripts each call it expects and its answer:

    def test_reads_the_password(fake_kubectl):            # the fixture in tests/conftest.py
        fake_kubectl.flags = ["--kubeconfig", "/dev/null", "--context", "ctx", "--namespace", "ns"]
        fake_kubectl.expect("get", "secret/x", "-o", "json", "--ignore-not-found", stdout=secret)
        fake_kubectl.expect("apply", "--server-side", ANY, "--force-conflicts", "-f", "-", times=1)
        fake_kubectl.expect("port-forward", "--address", "127.0.0.1", "service/web", ":80", forward=41234)
        ...  # run the code with tools.kubectl = fake_kubectl.path
        assert [c.args for c in fake_kubectl.calls()] == [[...], ...]

A call matches an expectation when its argv is the expectation's flags (default: the fake's
`flags`) followed by its args; a token may be ANY or like(regex). The first expectation that
matches and has uses left answers: stdout (a dict or list is printed as JSON), stderr, exit,
after `sleep` seconds; `forward=PORT` makes a port-forward a real TCP forward to
127.0.0.1:PORT (`drop_after=N`: it drops as kubectl does when its pod goes away, after N
chunks from the client). `times=N` allows N uses (default: any number).

Any other call exits 2 and names itself on stderr; the fixture then fails the test even when
the code under test swallowed the error. Every call is recorded (argv, stdin, exit code).
kubectl reads stdin only for `-f -`, and so does this fake.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import shlex
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ANY = {"re": ".*"}
UNEXPECTED_EXIT = 2
LOST = [
    'E0101 00:00:00.000000    4242 portforward.go:413] "Unhandled Error" err="an error occurred forwarding '
    "{local} -> {port}: error forwarding port {port} to pod {service}-6d4b7c9f8-x2x7q, uid : network namespace "
    'for sandbox \\"0f3c\\" is closed"',
    "error: lost connection to pod",
]


def like(pattern: str) -> dict:
    """An argv token that matches the regular expression (whole token)."""
    return {"re": pattern}


def kube_list(*items: dict) -> dict:
    """What `kubectl get KIND -o json` prints."""
    return {"apiVersion": "v1", "kind": "List", "items": list(items), "metadata": {"resourceVersion": ""}}


def client_version(git_version: str = "v1.35.0") -> dict:
    """What `kubectl version --client -o json` prints."""
    major, minor = git_version.lstrip("v").split(".")[:2]
    return {"clientVersion": {"major": major, "minor": minor, "gitVersion": git_version}}


@dataclass
class Call:
    argv: list[str]
    stdin: str | None
    exit: int
    expectation: int | None  # index of the expectation that answered; None: unexpected
    time: float
    port: int | None = None  # a port-forward's local port
    flags: int = 0  # how many leading argv items were the expectation's flags

    @property
    def args(self) -> list[str]:
        """argv without the flags of the expectation that answered it."""
        return self.argv[self.flags :]

    @property
    def unexpected(self) -> bool:
        return self.expectation is None


@dataclass
class FakeKubectl:
    """The test side: scripts expectations, reads what the fake recorded. `path` is the executable."""

    folder: Path
    flags: list[str] = field(default_factory=list)
    expectations: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = str(self.folder / "kubectl")
        Path(self.path).write_text(
            f"#!/bin/sh\nFAKE_KUBECTL_DIR={shlex.quote(str(self.folder))} "
            f'exec {shlex.quote(sys.executable)} {shlex.quote(__file__)} "$@"\n'
        )
        os.chmod(self.path, 0o755)
        self._write()

    def expect(
        self,
        *args: str | dict,
        stdout: str | dict | list = "",
        stderr: str = "",
        exit: int = 0,
        times: int | None = None,
        flags: list[str] | None = None,
        sleep: float = 0,
        forward: int | None = None,
        drop_after: int | None = None,
    ) -> int:
        """Allow a call (the fake's flags, or flags, then args) and script its answer; returns its index."""
        if not isinstance(stdout, str):
            stdout = json.dumps(stdout)
        self.expectations.append(
            {
                "argv": [*(self.flags if flags is None else flags), *args],
                "flags": len(self.flags if flags is None else flags),
                "stdout": stdout,
                "stderr": stderr,
                "exit": exit,
                "times": times,
                "sleep": sleep,
                "forward": forward,
                "drop_after": drop_after,
            }
        )
        self._write()
        return len(self.expectations) - 1

    def _write(self) -> None:
        with _locked(self.folder):
            (self.folder / "script.json").write_text(json.dumps(self.expectations))

    def calls(self) -> list[Call]:
        log = self.folder / "calls.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        return [Call(**json.loads(line)) for line in lines]

    def argvs(self) -> list[list[str]]:
        return [call.argv for call in self.calls()]

    def uses(self, index: int) -> int:
        """How many calls the expectation answered."""
        return sum(call.expectation == index for call in self.calls())

    def forget_calls(self) -> None:
        with _locked(self.folder):
            (self.folder / "calls.jsonl").unlink(missing_ok=True)

    def unexpected(self) -> list[Call]:
        return [call for call in self.calls() if call.unexpected]

    def check(self) -> None:
        """Fail when any call was not expected (the fixture calls it after each test)."""
        wrong = self.unexpected()
        if wrong:
            listed = "\n".join(f"  kubectl {shlex.join(call.argv)}" for call in wrong)
            raise AssertionError(f"fake kubectl: {len(wrong)} unexpected call(s):\n{listed}")


# ---------------------------------------------------------------- the executable side


class _locked:
    def __init__(self, folder: Path):
        self.path = folder / "lock"

    def __enter__(self):
        self.file = open(self.path, "a")
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def __exit__(self, *_):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _token_matches(want: str | dict, got: str) -> bool:
    if isinstance(want, dict):
        return re.fullmatch(want["re"], got, re.DOTALL) is not None
    return want == got


def _matches(expectation: dict, argv: list[str]) -> bool:
    want = expectation["argv"]
    return len(want) == len(argv) and all(_token_matches(w, g) for w, g in zip(want, argv, strict=True))


def _reads_stdin(argv: list[str]) -> bool:
    return any(a == "-f" and b == "-" for a, b in itertools.pairwise(argv)) or "--filename=-" in argv


def _record(folder: Path, line: dict) -> None:
    with open(folder / "calls.jsonl", "a") as out:
        out.write(json.dumps(line) + "\n")


def _choose(folder: Path, argv: list[str], stdin: str | None) -> tuple[int | None, dict | None]:
    """The expectation that answers argv (its use counted), or None; the call is recorded, except a forward's."""
    with _locked(folder):
        expectations = json.loads((folder / "script.json").read_text())
        log = folder / "calls.jsonl"
        used = [json.loads(line)["expectation"] for line in log.read_text().splitlines()] if log.exists() else []
        for index, expectation in enumerate(expectations):
            if _matches(expectation, argv) and (
                expectation["times"] is None or used.count(index) < expectation["times"]
            ):
                if expectation["forward"] is None:
                    _record(folder, _line(argv, stdin, expectation["exit"], index, expectation["flags"]))
                else:  # counted now; its exit code and port are filled in once it listens
                    _record(folder, _line(argv, stdin, None, index, expectation["flags"], port=0))
                return index, expectation
        _record(folder, _line(argv, stdin, UNEXPECTED_EXIT, None, 0))
        return None, None


def _line(argv, stdin, exit, index, flags, port=None) -> dict:
    return {"argv": argv, "stdin": stdin, "exit": exit, "expectation": index, "time": time.time(), "flags": flags,
            "port": port}  # fmt: skip


def _forward(folder: Path, argv: list[str], index: int, expectation: dict) -> int:
    service = next(a for a in argv if a.startswith("service/")).removeprefix("service/")
    port = int(next(a for a in argv if a.startswith(":"))[1:])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    local = listener.getsockname()[1]
    with _locked(folder):  # the call's record gets its port
        log = folder / "calls.jsonl"
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        for line in lines:
            if line["expectation"] == index and line.get("port") == 0 and line["argv"] == argv:
                line["port"], line["exit"] = local, 0
                break
        log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(f"Forwarding from 127.0.0.1:{local} -> {port}", flush=True)
    drop_after = expectation["drop_after"]
    chunks = [0]
    lock = threading.Lock()

    def drop() -> None:
        for line in LOST:
            print(line.format(local=local, port=port, service=service), file=sys.stderr, flush=True)
        os._exit(1)

    def pump(source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                if counted:
                    with lock:
                        chunks[0] += 1
                        if drop_after is not None and chunks[0] >= drop_after:
                            drop()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    while True:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", expectation["forward"]))
        threading.Thread(target=pump, args=(client, server, True), daemon=True).start()
        threading.Thread(target=pump, args=(server, client, False), daemon=True).start()


def main(argv: list[str]) -> int:
    folder = Path(os.environ["FAKE_KUBECTL_DIR"])
    stdin = sys.stdin.read() if _reads_stdin(argv) else None
    index, expectation = _choose(folder, argv, stdin)
    if expectation is None:
        print(f"fake kubectl: unexpected call: kubectl {shlex.join(argv)}", file=sys.stderr)
        return UNEXPECTED_EXIT
    time.sleep(expectation["sleep"])
    if expectation["forward"] is not None:
        return _forward(folder, argv, index, expectation)
    sys.stdout.write(expectation["stdout"])
    sys.stderr.write(expectation["stderr"])
    return expectation["exit"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
