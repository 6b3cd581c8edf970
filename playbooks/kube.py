"""kubectl, called as argv lists pinned to the detected target, with deadlines.

Manifests travel on stdin, so no secret ever reaches a command line. In dry-run mode the
writes are printed (Secrets redacted) instead of run; reads still happen.
"""

from __future__ import annotations

import json
import os
import queue
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property

from playbooks.errors import PlaybookError
from playbooks.render import redacted, to_yaml
from playbooks.runner import Result, TimedOut, child_env, find_command, last_line, run_argv, shown
from playbooks.stuck import (
    WORKLOADS,
    Finding,
    Fixes,
    Sightings,
    decide,
    event_time,
    rollout_findings,
    rollout_progress,
)
from playbooks.target import Target
from playbooks.together import pause

Printer = Callable[[str], None]
HEARTBEAT_SECONDS = 15
POLL_SECONDS = 2
# What kubectl says when the API server is down, restarting or overloaded: worth retrying.
UNREACHABLE = (
    r"connection refused|was refused|connection reset|no such host|i/o timeout|Unable to connect|EOF|TLS handshake"
    r"|ServiceUnavailable|currently unable to handle the request|GOAWAY|shutting down|context deadline exceeded"
)


class ApiUnreachable(PlaybookError):
    """The API server did not answer: worth retrying until a deadline."""


class Stuck(PlaybookError):
    """A wait that cannot end well: the cluster already says why (a Finding). Raised by a probe."""

    def __init__(self, finding: Finding, line: str):
        super().__init__(finding.cause)
        self.finding, self.line = finding, line


class Kubectl:
    def __init__(
        self,
        target: Target,
        binary: str = "kubectl",
        field_manager: str = "datalab-playbooks",
        dry_run: bool = False,
        out: Printer = print,
    ):
        self.target = target
        self.binary = binary
        self.field_manager = field_manager
        self.dry_run = dry_run
        self.out = out

    # ------------------------------------------------------------ running

    def command(self):
        return find_command(self.binary, "install kubectl or set tools.kubectl in invoke.yaml")

    def _env(self) -> dict[str, str]:
        return child_env(os.environ, self.target.source.kubeconfig)

    @cached_property
    def api(self):
        """The in-process client for reads (playbooks.kubeapi), or None: then every read is a kubectl call."""
        from playbooks import kubeapi

        return kubeapi.client_for(self.target.source, os.environ)

    def argv(self, *args: str) -> list[str]:
        return [self.binary, *self.target.kubectl_flags(), *args]

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60, check: bool = True) -> Result:
        try:
            result = run_argv(self.command(), [*self.target.kubectl_flags(), *args], self._env(), timeout, stdin)
        except TimedOut:
            raise ApiUnreachable(
                f"kubectl {' '.join(args[:2])} did not finish within {timeout:.0f}s: check that the API server "
                f"{self.target.server} is reachable"
            ) from None
        if check and not result.ok:
            raise self.failure(args, result)
        return result

    def failure(self, args: tuple[str, ...], result: Result) -> PlaybookError:
        message = last_line(result.stderr or result.stdout)
        missing = re.search(r'namespaces "([^"]+)" not found', message)
        if missing:
            return PlaybookError(
                f"namespace {missing.group(1)} does not exist: create it (kubectl create namespace "
                f"{missing.group(1)}) or pick another with --namespace"
            )
        if "Forbidden" in message or "forbidden" in message:
            return PlaybookError(f"kubectl {args[0]}: {message}; ask for that permission or use another namespace")
        if re.search(UNREACHABLE, message):
            return ApiUnreachable(f"cannot reach the Kubernetes API at {self.target.server}: {message}")
        return PlaybookError(f"kubectl {args[0]} failed: {message}")

    def show(self, *args: str, stdin_docs: list[dict] | None = None, note: str = "") -> None:
        """Print a write instead of running it (dry-run); Secrets in stdin_docs are redacted."""
        stdin = None if stdin_docs is None else to_yaml(redacted(stdin_docs))
        self.out(shown(self.argv(*args), stdin, note))

    # ------------------------------------------------------------ objects

    def server_side_flags(self) -> list[str]:
        """The flags of every apply (and of its diff): server-side, as this field manager, documents on stdin."""
        return ["--server-side", f"--field-manager={self.field_manager}", "--force-conflicts", "-f", "-"]

    def show_apply(self, docs: list[dict] | None = None, note: str = "") -> None:
        """Print the apply of docs that apply_now runs (dry-run); without docs, only its command line."""
        self.show("apply", *self.server_side_flags(), stdin_docs=docs, note=note)

    def differs(self, docs: list[dict], timeout: float = 120) -> bool:
        """Whether a server-side apply of docs would change anything (a server-side dry run).

        Asked in-process when the client can (playbooks.kubeapi.differs), else by `kubectl diff`,
        which also says what is wrong when the dry run fails.
        """
        if self.api is not None:
            from playbooks import kubeapi

            changes = kubeapi.differs(self.api, docs, self.target.namespace, self.field_manager, timeout)
            if changes is not None:
                return changes
        diff = self.run("diff", *self.server_side_flags(), stdin=to_yaml(docs), timeout=timeout, check=False)
        if diff.exit_code not in (0, 1):
            raise self.failure(("diff",), diff)
        return diff.exit_code == 1

    def apply_now(self, docs: list[dict], timeout: float = 120) -> None:
        if self.dry_run:
            self.show_apply(docs)
            return
        self.run("apply", *self.server_side_flags(), stdin=to_yaml(docs), timeout=timeout)

    def apply(self, docs: list[dict], timeout: float = 120) -> bool:
        """Server-side apply of docs; returns whether anything changed."""
        if self.dry_run:
            self.apply_now(docs)
            return False
        if not self.differs(docs, timeout):
            return False
        self.apply_now(docs, timeout)
        return True

    def live(self, docs: list[dict]) -> list[dict]:
        """The live versions of the objects in docs that exist."""
        names = [f"{doc['kind'].lower()}/{doc['metadata']['name']}" for doc in docs]
        result = self.run("get", *names, "-o", "json", "--ignore-not-found", timeout=30)
        state = json.loads(result.stdout or "{}")
        return state.get("items", [state] if state.get("kind") not in (None, "List") else [])

    def names(self, kinds: list[str], selector: str) -> list[str]:
        """kind/name of every object of these kinds that carries the labels."""
        result = self.run("get", ",".join(kinds), "-l", selector, "-o", "name", "--ignore-not-found")
        return [line for line in result.stdout.split() if line]

    def delete(self, names: list[str], timeout: float = 120) -> None:
        if not names:
            return
        # Foreground: a Deployment is gone only once its pods are, so the quota they held is
        # free when `down` returns and an `up` right after it fits again.
        args = [
            "delete",
            *names,
            "--ignore-not-found",
            "--cascade=foreground",
            "--wait=true",
            f"--timeout={int(timeout)}s",
        ]
        if self.dry_run:
            self.show(*args)
            return
        self.run(*args, timeout=timeout + 15)

    def get_json(self, what: str, selector: str | None = None, timeout: float = 20) -> dict:
        """`kubectl get what -l selector -o json`; in-process for the kinds playbooks.kubeapi knows."""
        if self.api is not None:
            from playbooks import kubeapi

            listed = kubeapi.list_kinds(self.api, what.split(","), self.target.namespace, selector, timeout)
            if listed is not None:
                return listed
        args = ["get", what, "-o", "json"]
        if selector:
            args += ["-l", selector]
        output = self.run(*args, timeout=timeout).stdout
        try:
            return json.loads(output or "{}")
        except ValueError as error:
            # Seen on an overloaded node: kubectl exits 0 with its JSON cut short. A wait retries it.
            raise ApiUnreachable(
                f"kubectl get {what} printed incomplete JSON ({error}); the API may be overloaded"
            ) from None

    # ------------------------------------------------------------ waiting

    def poll(
        self, label: str, selector: str, timeout: float, probe: Callable[[float], tuple[bool, str]], late: str
    ) -> float:
        """Call probe(seconds for one call) until it reports done; return the seconds it took.

        Its status line is shown when it changes and at least every HEARTBEAT_SECONDS. A poll
        the API does not answer (down, restarting, not ready yet) is shown and retried, so a
        wait survives an API server restart. At the deadline the evidence is printed and the
        wait fails; if the API is still unreachable then, the failure says so in one line. A
        probe that finds the wait cannot end well raises Stuck: the evidence is printed and the
        wait fails at once, with the finding's one line (the cause and a fix).
        """
        start = time.monotonic()
        deadline = start + timeout
        last_line, last_print = "", 0.0
        while True:
            elapsed = time.monotonic() - start
            unreachable = None
            try:
                done, line = probe(min(20, max(deadline - time.monotonic(), 1)))
            except Stuck as stuck:
                self.out(f"{label}: {stuck.line} [{elapsed:.0f}s/{timeout:.0f}s]")
                self.out(f"{label}: stuck: {stuck.finding.detail}; evidence follows")
                self.print_evidence(selector, stuck.finding)
                raise PlaybookError(f"{label}: {stuck.finding.cause}") from None
            except ApiUnreachable as error:
                unreachable = error
            except PlaybookError as error:
                unreachable = self._while_not_ready(error, max(deadline - time.monotonic(), 1))
                if unreachable is None:
                    raise
            if unreachable is not None:
                done, line = False, f"not yet, API unreachable: {unreachable}"
            if done:
                return elapsed
            now = time.monotonic()
            if line != last_line or now - last_print >= HEARTBEAT_SECONDS:
                self.out(f"{label}: {line} [{elapsed:.0f}s/{timeout:.0f}s]")
                last_line, last_print = line, now
            if now >= deadline:
                if unreachable is not None:
                    raise ApiUnreachable(
                        f"{label}: {late} within {timeout:.0f}s and the API is unreachable: {unreachable}"
                    )
                self.out(f"{label}: {late} within {timeout:.0f}s; evidence follows")
                self.print_evidence(selector)
                raise PlaybookError(
                    f"{label}: {late} within {timeout:.0f}s (see the evidence above); fix the cause or raise the timeout"
                )
            pause(min(POLL_SECONDS, max(deadline - now, 0.1)))

    def _while_not_ready(self, error: PlaybookError, seconds: float) -> ApiUnreachable | None:
        """A refusal from an API server that is not ready yet (it just restarted: its caches are
        still filling, so even a token or a role may be refused) is worth retrying; from a
        ready one it is final (None)."""
        why = self.not_ready(min(seconds, 10))
        return None if why is None else ApiUnreachable(f"{error} (the API server is not ready: {why})")

    def not_ready(self, timeout: float = 10) -> str | None:
        """None when the API server reports itself ready (/readyz), else why not."""
        try:
            result = self.run("get", "--raw", "/readyz", timeout=timeout, check=False)
        except ApiUnreachable as error:
            return str(error)
        if result.ok:
            return None
        failing = re.findall(r"\[-\]([\w/.-]+) failed", result.stderr + result.stdout)
        return f"/readyz fails {', '.join(failing)}" if failing else last_line(result.stderr or result.stdout)

    def wait_for_deployment(
        self, name: str, selector: str, timeout: float, label: str | None = None, resources: str | None = None
    ) -> None:
        """Wait until the Deployment's rollout is complete (see wait_for_rollout)."""
        self.wait_for_rollout("Deployment", name, selector, timeout, label, resources)

    def wait_for_rollout(
        self,
        kind: str,
        name: str,
        selector: str,
        timeout: float,
        label: str | None = None,
        resources: str | None = None,
    ) -> None:
        """Wait until the rollout of a Deployment, StatefulSet or Job is complete, as `kubectl rollout status`
        decides (a Job: until it completed).

        The wait stops early, with the evidence and one line naming the cause and a fix, when the
        cluster already says the rollout cannot finish (see rollout_findings). resources is the
        setting that sizes its pods (e.g. "mlflow.resources"): the fix names it.
        """
        label = label or name
        fixes = Fixes(resources, job=kind == "Job")
        sightings = Sightings()
        kinds = self.readable(*WORKLOADS[kind])

        def probe(seconds: float) -> tuple[bool, str]:
            state = self.get_json(kinds, selector, timeout=seconds)
            done, line = rollout_progress(state, name, kind)
            if not done:
                found = self.explained(lambda events: rollout_findings(state, name, events, fixes, kind), None, seconds)
                self.judge(sightings, found, line)
            return done, line

        elapsed = self.poll(label, selector, timeout, probe, "not ready")
        self.out(f"{label}: ready after {elapsed:.0f}s")

    def readable(self, *kinds: str) -> str:
        """The kinds (comma-joined, for one `kubectl get`) that the credentials are not known to be refused listing.

        The first two are always asked for: a wait cannot do without them.
        """
        wanted = [*kinds[:2], *(k for k in kinds[2:] if self.target.may("list", *k.split(".", 1)) is not False)]
        return ",".join(wanted)

    def events_of(self, kind: str, name: str, timeout: float = 20) -> list[dict]:
        """The events about one object (oldest first); none when they may not be read."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        result = self.run("get", "events", "--field-selector", selector, "-o", "json", timeout=timeout, check=False)
        if not result.ok:
            if re.search(UNREACHABLE, result.stderr):
                raise self.failure(("get", "events"), result)
            return []
        return sorted(json.loads(result.stdout or "{}").get("items", []), key=event_time)

    def explained(
        self, findings_of: Callable[[list[dict] | None], list[Finding]], events: list[dict] | None, seconds: float = 20
    ) -> list[Finding]:
        """findings_of(events); when some finding needs the events of an object (a claim), fetch them and ask again.

        Events are fetched only then: a poll of a healthy rollout costs one `kubectl get`.
        """
        found = findings_of(events)
        wanted = sorted({f.events_of for f in found if f.wants_events and f.events_of})
        if not wanted:
            return found
        fetched = [event for kind, name in wanted for event in self.events_of(kind, name, seconds)]
        return findings_of([*(events or []), *fetched])

    def judge(self, sightings: Sightings, found: list[Finding], line: str) -> None:
        """Raise Stuck when a finding has lasted its grace period."""
        verdict = decide(found, sightings.ages(found))
        if verdict is not None:
            raise Stuck(verdict, line)

    def print_evidence(self, selector: str, finding: Finding | None = None) -> None:
        """Pods, events and logs of what carries the labels: what anyone would look at first.

        With a finding, also the failing container's logs before its last restart and the events
        of the object it is about. Each section is bounded (its last 60 lines).
        """
        sections = [
            ("pods", ("get", "pods", "-l", selector, "-o", "wide")),
            ("pod details", ("describe", "pods", "-l", selector)),
            ("events", ("get", "events", "--sort-by=.lastTimestamp")),
            ("logs", ("logs", "-l", selector, "--all-containers", "--prefix", "--tail=40")),
        ]
        if finding is not None:
            if finding.events_of:
                kind, name = finding.events_of
                selector_of = f"involvedObject.kind={kind},involvedObject.name={name}"
                sections.append((f"events of {kind} {name}", ("get", "events", "--field-selector", selector_of)))
            if finding.pod and finding.container and finding.previous_logs:
                args = ("logs", finding.pod, "-c", finding.container, "--previous", "--tail=30")
                sections.append((f"last logs of container {finding.container} before its restart", args))
        for title, args in sections:
            try:
                result = self.run(*args, timeout=20, check=False)
                text = (result.stdout or result.stderr).rstrip()
            except PlaybookError as error:
                text = str(error)
            lines = text.splitlines()[-60:]
            self.out(f"--- {title}: kubectl {' '.join(args)}")
            self.out("\n".join(lines) if lines else "(nothing)")

    # ------------------------------------------------------------ port-forward

    @contextmanager
    def port_forward(self, service: str, port: int, timeout: float = 20) -> Iterator[int]:
        """Forward a free local port on 127.0.0.1 to a service; yields the local port."""
        with self.forward(service, port, timeout) as forward:
            yield forward.port

    @contextmanager
    def forward(self, service: str, port: int, timeout: float = 20) -> Iterator[Forward]:
        """Like port_forward, but yields a Forward that can tell whether it dropped since."""
        import sh

        command = self.command()
        lines: queue.Queue[str] = queue.Queue()
        errors: list[str] = []

        def error_line(line: str) -> None:
            errors.append(line)
            lines.put(line)

        process = command(
            *self.target.kubectl_flags(),
            "port-forward",
            "--address",
            "127.0.0.1",
            f"service/{service}",
            f":{port}",
            _env=self._env(),
            _bg=True,
            _bg_exc=False,
            _new_session=True,
            _tty_out=False,
            _out=lines.put,
            _err=error_line,
            _ok_code=list(range(256)),
        )
        try:
            local = _await_forwarding(lines, process, timeout)
            yield Forward(service, local, process, errors, len(errors))
        finally:
            if process.is_alive():
                process.terminate()
            try:
                process.wait()
            except sh.SignalException:
                pass  # kubectl ends by the SIGTERM sent above: that is the normal end


@dataclass
class Forward:
    """A running `kubectl port-forward` to service, listening on 127.0.0.1:port."""

    service: str
    port: int
    process: object = field(repr=False)
    errors: list[str] = field(repr=False)
    errors_before: int = 0  # stderr lines printed before the forward was up

    def dropped(self, grace: float = 1.0) -> str | None:
        """Why the forward dropped, or None while it runs.

        kubectl reports a lost connection on stderr and then exits: after a new error line,
        wait up to grace seconds for that exit.
        """
        deadline = time.monotonic() + (grace if len(self.errors) > self.errors_before else 0)
        while self.process.is_alive():
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        with suppress(Exception):  # collects its last output lines; a signal's end raises
            self.process.wait()
        said = [line.strip() for line in self.errors[self.errors_before :] if line.strip()]
        return f"port-forward to service/{self.service} dropped: {said[-1] if said else 'kubectl exited without a message'}"


def _await_forwarding(lines: queue.Queue, process, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if not process.is_alive():
                break
            continue
        seen.append(line.strip())
        match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
        if match:
            return int(match.group(1))
    reason = seen[-1] if seen else f"no answer within {timeout:.0f}s"
    raise PlaybookError(f"port-forward failed: {reason}")
