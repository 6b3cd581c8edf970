"""kubectl, called as argv lists pinned to the detected target, with deadlines.

Manifests travel on stdin, so no secret ever reaches a command line. In dry-run mode the
writes are printed (Secrets redacted) instead of run; reads still happen.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace

from playbooks.errors import PlaybookError
from playbooks.render import redacted, to_yaml
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


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def find_command(binary: str, fix: str):
    """The sh.Command for a CLI; a missing one is one line that names the fix."""
    import sh

    try:
        return sh.Command(binary)
    except sh.CommandNotFound:
        raise PlaybookError(f"{binary} not found: {fix}") from None


def run_argv(command, argv: list[str], env: dict[str, str], timeout: float, stdin: str | None = None) -> Result:
    """Run a found CLI (an sh.Command) with argv and an explicit environment; any exit code is a Result.

    sh.TimeoutException propagates: each caller says what a time-out means for it.
    """
    done = command(
        *argv, _in=stdin, _env=env, _timeout=timeout, _tty_out=False, _return_cmd=True, _ok_code=list(range(256))
    )
    return Result(done.exit_code, done.stdout.decode(), done.stderr.decode())


def _first_error_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


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
        # Never the caller's KUBECONFIG: the target's flags say which config is used (a list of
        # files, which no flag takes, is the target's own KUBECONFIG).
        return self.target.child_env(os.environ)

    def argv(self, *args: str) -> list[str]:
        return [self.binary, *self.target.kubectl_flags(), *args]

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60, check: bool = True) -> Result:
        import sh

        try:
            result = run_argv(self.command(), [*self.target.kubectl_flags(), *args], self._env(), timeout, stdin)
        except sh.TimeoutException:
            raise ApiUnreachable(
                f"kubectl {' '.join(args[:2])} did not finish within {timeout:.0f}s: check that the API server "
                f"{self.target.server} is reachable"
            ) from None
        if check and not result.ok:
            raise self.failure(args, result)
        return result

    def failure(self, args: tuple[str, ...], result: Result) -> PlaybookError:
        message = _first_error_line(result.stderr or result.stdout)
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

    def show(self, *args: str, stdin_docs: list[dict] | None = None) -> None:
        """Print a write instead of running it (dry-run)."""
        line = shlex.join(self.argv(*args))
        if stdin_docs is not None:
            self.out(f"$ {line} <<'EOF'\n{to_yaml(redacted(stdin_docs))}EOF")
        else:
            self.out(f"$ {line}")

    # ------------------------------------------------------------ objects

    def _apply_flags(self) -> list[str]:
        return ["--server-side", f"--field-manager={self.field_manager}", "--force-conflicts", "-f", "-"]

    def differs(self, docs: list[dict], timeout: float = 120) -> bool:
        """Whether a server-side apply of docs would change anything (a server-side dry run)."""
        diff = self.run("diff", *self._apply_flags(), stdin=to_yaml(docs), timeout=timeout, check=False)
        if diff.exit_code not in (0, 1):
            raise self.failure(("diff",), diff)
        return diff.exit_code == 1

    def apply_now(self, docs: list[dict], timeout: float = 120) -> None:
        if self.dry_run:
            self.show("apply", *self._apply_flags(), stdin_docs=docs)
            return
        self.run("apply", *self._apply_flags(), stdin=to_yaml(docs), timeout=timeout)

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
        args = ["delete", *names, "--ignore-not-found", "--cascade=foreground", "--wait=true", f"--timeout={int(timeout)}s"]
        if self.dry_run:
            self.show(*args)
            return
        self.run(*args, timeout=timeout + 15)

    def get_json(self, what: str, selector: str | None = None, timeout: float = 20) -> dict:
        args = ["get", what, "-o", "json"]
        if selector:
            args += ["-l", selector]
        return json.loads(self.run(*args, timeout=timeout).stdout or "{}")

    # ------------------------------------------------------------ waiting

    def poll(self, label: str, selector: str, timeout: float, probe: Callable[[float], tuple[bool, str]], late: str) -> float:
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
                    raise ApiUnreachable(f"{label}: {late} within {timeout:.0f}s and the API is unreachable: {unreachable}")
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
        return f"/readyz fails {', '.join(failing)}" if failing else _first_error_line(result.stderr or result.stdout)

    def wait_for_deployment(
        self, name: str, selector: str, timeout: float, label: str | None = None, resources: str | None = None
    ) -> None:
        """Wait until the Deployment's rollout is complete, as `kubectl rollout status` decides.

        The wait stops early, with the evidence and one line naming the cause and a fix, when the
        cluster already says the rollout cannot finish (see rollout_findings). resources is the
        setting that sizes the Deployment's pods (e.g. "mlflow.resources"): the fix names it.
        """
        label = label or name
        fixes = Fixes(resources)
        sightings = Sightings()
        kinds = self.readable("deployments.apps", "pods", "replicasets.apps", "persistentvolumeclaims")

        def probe(seconds: float) -> tuple[bool, str]:
            state = self.get_json(kinds, selector, timeout=seconds)
            done, line = rollout_progress(state, name)
            if not done:
                found = self.explained(lambda events: rollout_findings(state, name, events, fixes), None, seconds)
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


def list_items(state: dict) -> list[dict]:
    return state.get("items", [state]) if state.get("kind") == "List" else [state]


def named(items: list[dict], kind: str, name: str) -> dict | None:
    return next((i for i in items if i.get("kind") == kind and i["metadata"]["name"] == name), None)


def owned_by(item: dict, kind: str, names: Iterable[str]) -> bool:
    names = set(names)
    return any(o.get("kind") == kind and o.get("name") in names for o in item["metadata"].get("ownerReferences") or [])


def _deleting(item: dict) -> bool:
    return bool(item["metadata"].get("deletionTimestamp"))


def _revision(item: dict) -> int:
    value = (item["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0")
    return int(value) if str(value).isdigit() else 0


def deployment_pods(items: list[dict], deployment: dict) -> tuple[list[dict], list[dict]]:
    """(every pod of the Deployment, the live pods of its current revision) among items.

    Pods belong to the Deployment through its ReplicaSets; the current revision is the
    ReplicaSet whose revision annotation the Deployment carries (its pod-template-hash). Only
    those pods decide whether a rollout is stuck: during a rolling update an old pod may be
    terminating, or even crash (that may be why it is replaced). Without ReplicaSets in items
    (the credentials may not list them), every live pod counts.
    """
    pods = [i for i in items if i.get("kind") == "Pod"]
    name = deployment["metadata"]["name"]
    sets = [i for i in items if i.get("kind") == "ReplicaSet" and owned_by(i, "Deployment", [name])]
    if not sets:
        return pods, [p for p in pods if not _deleting(p)]
    mine = [p for p in pods if owned_by(p, "ReplicaSet", (rs["metadata"]["name"] for rs in sets))]
    revision = _revision(deployment)
    newest = [rs for rs in sets if _revision(rs) == revision] or [max(sets, key=_revision)]
    hashes = {(rs["metadata"].get("labels") or {}).get("pod-template-hash") for rs in newest}
    names = {rs["metadata"]["name"] for rs in newest}
    current = [
        p
        for p in mine
        if not _deleting(p)
        and (owned_by(p, "ReplicaSet", names) or (p["metadata"].get("labels") or {}).get("pod-template-hash") in hashes)
    ]
    return mine, current


def rollout_progress(state: dict, name: str) -> tuple[bool, str]:
    """Whether a Deployment's rollout is complete (as `kubectl rollout status` decides), and a status line."""
    items = list_items(state)
    deployment = named(items, "Deployment", name)
    if deployment is None:
        return False, f"deployment {name} not found"
    pods, _ = deployment_pods(items, deployment)
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    want = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    total = status.get("replicas", 0)
    done = (
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and updated == want
        and total == want
        and available == want
    )
    pod_states = ", ".join(_pod_state(p) for p in pods[:4])
    line = f"{available}/{want} available, {updated} updated"
    return done, f"{line}; {pod_states}" if pod_states else line


def _pod_state(pod: dict) -> str:
    name = pod["metadata"]["name"]
    status = pod.get("status", {})
    phase = "Terminating" if _deleting(pod) else status.get("phase", "Unknown")
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            reason = waiting.get("reason", "waiting")
            ended = ((container.get("lastState") or {}).get("terminated") or {}).get("reason")
            if reason == "CrashLoopBackOff" and ended:
                return f"{name} {phase} ({reason}, last {ended})"
            return f"{name} {phase} ({reason})"
        if not container.get("ready"):
            return f"{name} {phase} (not ready)"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{name} unschedulable ({condition.get('reason', '')})"
    return f"{name} {phase}"


# ---------------------------------------------------------------- why a wait cannot end well
#
# Pure functions over the JSON kubectl returns. Each finding is a state the cluster shows
# that stops a rollout or a Job for good once it has lasted its grace period (some states
# are normal for a few seconds: an image pull that will be retried, a volume being made).

# Seconds a state must last before it decides.
AT_ONCE = 0.0
TRANSIENT = 10.0  # ErrImagePull, CreateContainer*Error, a refused pod creation, a claim the binder gave up on
UNSCHEDULABLE = 12.0
PROVISIONING = 30.0  # a volume the provisioner has not made yet (or a claim without any events)
PROVISIONER_WORKING = 60.0  # the provisioner took the claim and is making the volume
NEVER = math.inf  # explains, decides nothing (yet): e.g. its events are not known
UNBOUND_CLAIMS = re.compile(r"unbound immediate PersistentVolumeClaims|pod has unbound", re.I)
IMAGE_REASONS = {"ImagePullBackOff": AT_ONCE, "InvalidImageName": AT_ONCE, "ErrImageNeverPull": AT_ONCE, "ErrImagePull": TRANSIENT}
CREATE_REASONS = ("CreateContainerConfigError", "CreateContainerError")


@dataclass(frozen=True)
class Fixes:
    """The settings an error line names as the fix.

    resources: the setting that sizes the pods ("mlflow.resources", "dask.worker_resources",
    "dask.smoke_resources"); its section ("mlflow") gives the image, storage class and logs
    task. None: generic wording. job: the pods are a Job's (its logs are in the evidence; no
    `invoke <service>.logs`).
    """

    resources: str | None = None
    job: bool = False

    @property
    def section(self) -> str | None:
        return self.resources.split(".", 1)[0] if self.resources else None

    def memory(self, limit: str | None) -> str:
        key = self.resources and f"{self.resources.removesuffix('.limits.memory')}.limits.memory"
        if limit is None:
            if key:
                return f"set {key} to what it needs (it has no limit: the node ran out of memory)"
            return "give the container a memory limit that fits it (its resources setting), or free memory on the node"
        return f"raise {key} (now {limit})" if key else "raise the container's memory limit (resources.limits.memory of its service's settings)"

    def logs(self, pod: str, container: str) -> str:
        if self.section and not self.job:
            return f"`invoke {self.section}.logs`"
        return f"`kubectl logs --previous {pod} -c {container}`"

    def image(self) -> str:
        where = f"set {self.section}.image to" if self.section else "use"
        return f"{where} an image the nodes can pull (name, tag, registry access), or preload it on the nodes"

    def storage_class(self) -> str:
        where = f"set {self.section}.storage_class to" if self.section else "use"
        return f"{where} a StorageClass the cluster has (kubectl get storageclass), or ask for a default StorageClass"

    def smaller(self) -> str:
        return f"lower {self.resources} or the number of pods" if self.resources else "lower the pods' resources or their number"


GENERIC_FIXES = Fixes()


@dataclass(frozen=True)
class Finding:
    """A state that stops a wait once it has lasted grace seconds."""

    key: str  # the same state in the next poll has the same key
    cause: str  # the error line (after the wait's label): what, and the fix
    detail: str  # what the cluster shows, in a few words (the evidence's header)
    grace: float = AT_ONCE
    pod: str | None = None
    container: str | None = None
    previous_logs: bool = False  # the evidence shows `kubectl logs --previous` of the container
    events_of: tuple[str, str] | None = None  # (kind, name) whose events explain it
    wants_events: bool = False  # it can only be judged with those events


class Sightings:
    """When each finding was first seen, by this machine's clock: how long a state has lasted."""

    def __init__(self, clock: Callable[[], float] | None = None):
        self.clock = clock or (lambda: time.monotonic())
        self.first: dict[str, float] = {}

    def ages(self, found: list[Finding]) -> dict[str, float]:
        now = self.clock()
        self.first = {f.key: self.first.get(f.key, now) for f in found}  # a state that went away starts over
        return {key: now - seen for key, seen in self.first.items()}


def decide(found: list[Finding], ages: dict[str, float]) -> Finding | None:
    """The first finding (they come most telling first) that has lasted its grace period."""
    return next((f for f in found if ages.get(f.key, 0.0) >= f.grace), None)


def event_time(event: dict) -> str:
    return event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp") or ""


def events_about(events: Iterable[dict], item: dict) -> list[dict]:
    """The events about item (same kind and name; same uid where both have one), oldest first."""
    kind, meta = item.get("kind"), item["metadata"]
    uid = meta.get("uid")
    about = [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("kind") == kind
        and (e.get("involvedObject") or {}).get("name") == meta["name"]
        and (not uid or not e["involvedObject"].get("uid") or e["involvedObject"]["uid"] == uid)
    ]
    return sorted(about, key=event_time)


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _refusal(message: str) -> str:
    """A pod creation's refusal without the request's noise: 'pods "x-" is forbidden: exceeded quota: ...' -> 'exceeded quota: ...'."""
    message = re.sub(r"^(\(combined from similar events\): )?Error creating: ", "", message.strip())
    return re.sub(r'^pods? "[^"]*" is forbidden: ', "", message)


def create_failure(
    message: str, what: str, key: str, fixes: Fixes, settling: bool = False, grace: float | None = None
) -> Finding | None:
    """A refused pod creation (ReplicaSet or Job controller): quota, PodSecurity, anything else.

    settling: pods of the same owner are still terminating; they hold quota until they are
    gone, so a quota refusal decides nothing yet. grace: overrides the quota's and others'.
    """
    said = _refusal(message)
    detail = f"{what}: FailedCreate ({_short(said, 120)})"
    refused = f"{what} cannot create pods: {_short(said, 300)}"
    if "exceeded quota" in said:
        if settling:
            return None
        fix = f"free quota (delete what you no longer need), ask for a larger quota, or {fixes.smaller()}"
        return Finding(f"{key}/quota", f"{refused}; {fix}", detail, TRANSIENT if grace is None else grace)
    if "violates PodSecurity" in said:
        fix = (
            "the namespace's pod-security level (label pod-security.kubernetes.io/enforce) refuses them: "
            "make the pods comply (security.pod, security.container) or ask for a lower level"
        )
        return Finding(f"{key}/podsecurity", f"{refused}; {fix}", detail, AT_ONCE)
    return Finding(f"{key}/other", f"{refused}; fix what it names", detail, TRANSIENT if grace is None else grace)


def _failing(item: dict) -> dict | None:
    """The item's ReplicaFailure condition when it is True."""
    conditions = (item.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "ReplicaFailure" and c.get("status") == "True"), None)


def replica_failure(
    deployment: dict, pods: list[dict], fixes: Fixes, sets: Iterable[dict] = (), events: list[dict] | None = None
) -> Finding | None:
    """The Deployment's ReplicaFailure condition: its ReplicaSet's pod creation was refused.

    The condition keeps the words of the first refusal (a quota's "used" may still count a pod
    that has gone since): the latest FailedCreate event of the failing ReplicaSet, when sets
    and events are given, says it as it is now.
    """
    condition = _failing(deployment)
    if condition is None:
        return None
    name = deployment["metadata"]["name"]
    what = f"the ReplicaSet of deployment {name}"
    message = condition.get("message") or condition.get("reason", "FailedCreate")
    failing = next((rs for rs in sets if _failing(rs) is not None), None)
    about = ("ReplicaSet", failing["metadata"]["name"]) if failing else None
    if failing is not None and events is None:
        return Finding(f"deployment/{name}/ReplicaFailure", f"{what} cannot create pods", f"{what}: FailedCreate", NEVER, events_of=about, wants_events=True)
    refused = [e for e in events_about(events or [], failing) if e.get("reason") == "FailedCreate"] if failing else []
    if refused:
        message = refused[-1].get("message") or message
    found = create_failure(message, what, f"deployment/{name}", fixes, any(_deleting(p) for p in pods))
    return found if found is None or about is None else replace(found, events_of=about)


def _container_specs(pod: dict) -> dict[str, dict]:
    spec = pod.get("spec") or {}
    return {c["name"]: c for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]}


def container_finding(pod: dict, status: dict, fixes: Fixes) -> Finding | None:
    """Why one container cannot run, from its waiting state (and how it last ended)."""
    waiting = (status.get("state") or {}).get("waiting")
    if not waiting:
        return None
    pod_name, name = pod["metadata"]["name"], status["name"]
    spec = _container_specs(pod).get(name, {})
    reason, message = waiting.get("reason", ""), _short(waiting.get("message", ""), 200)
    where = f"container {name} of pod {pod_name}"
    key = f"pod/{pod_name}/{name}/{reason}"
    if reason == "CrashLoopBackOff":
        ended = (status.get("lastState") or {}).get("terminated") or {}
        restarts = status.get("restartCount", 0)
        if ended.get("reason") == "OOMKilled":
            limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
            at = f" at its memory limit of {limit}" if limit else ", with no memory limit of its own"
            return Finding(
                key,
                f"{where} ran out of memory (OOMKilled{at}) and restarts in a loop ({restarts} restarts): {fixes.memory(limit)}",
                f"{where}: CrashLoopBackOff, last ended OOMKilled (exit code {ended.get('exitCode', 137)}), {restarts} restarts, memory limit {limit or 'none'}",
                AT_ONCE, pod_name, name, previous_logs=True,
            )  # fmt: skip
        if fixes.job:
            return None  # a Job retries by restarting; its backoffLimit decides
        how = f"exit code {ended.get('exitCode')} ({ended.get('reason', 'Error')})" if ended else "it exits"
        return Finding(
            key,
            f"{where} keeps crashing ({how}, {restarts} restarts, CrashLoopBackOff): read its last log lines above or with {fixes.logs(pod_name, name)}",
            f"{where}: CrashLoopBackOff, last ended with {how}, {restarts} restarts",
            AT_ONCE, pod_name, name, previous_logs=True,
        )  # fmt: skip
    if reason in IMAGE_REASONS:
        image = spec.get("image") or status.get("image") or "?"
        said = f": {message}" if message else ""
        return Finding(
            key,
            f"the cluster cannot pull image {image} for {where} ({reason}{said}): {fixes.image()}",
            f"{where}: {reason} for image {image}",
            IMAGE_REASONS[reason], pod_name, name,
        )  # fmt: skip
    if reason in CREATE_REASONS:
        return Finding(
            key,
            f"{where} cannot start ({reason}: {message or 'no message'}): create what it refers to (Secret, ConfigMap, key) or fix the setting that names it",
            f"{where}: {reason}",
            TRANSIENT, pod_name, name,
        )  # fmt: skip
    return None  # ContainerCreating, PodInitializing: on its way


def _scheduled(pod: dict) -> dict | None:
    """The pod's PodScheduled condition when it is False."""
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return condition
    return None


def claim_finding(claim: dict, events: list[dict] | None, fixes: Fixes) -> Finding | None:
    """Why a PersistentVolumeClaim stays unbound, from its events (None: not yet looked up)."""
    name = claim["metadata"]["name"]
    if (claim.get("status") or {}).get("phase") == "Bound":
        return None
    storage_class = (claim.get("spec") or {}).get("storageClassName")
    what = f"volume claim {name} (storageClassName: {storage_class or 'none, so the default class'})"
    base = dict(events_of=("PersistentVolumeClaim", name))
    if events is None:
        return Finding(f"claim/{name}/unknown", f"{what} is not bound", f"{what}: Pending", NEVER, wants_events=True, **base)
    about = events_about(events, claim)
    failed = [e for e in about if e.get("reason") in ("ProvisioningFailed", "FailedBinding")]
    latest = (failed or about or [None])[-1]
    if latest is None:
        cause = f"{what} is not bound and nothing reports why: {fixes.storage_class()}"
        return Finding(f"claim/{name}/silent", cause, f"{what}: Pending, no events", PROVISIONING, **base)
    reason, message = latest.get("reason", ""), _short(latest.get("message", ""), 240)
    detail = f"{what}: Pending, {reason}: {message}"
    cause = f"{what} is not bound ({reason}: {message}): {fixes.storage_class()}"
    if failed:
        return Finding(f"claim/{name}/{reason}", cause, detail, TRANSIENT, **base)
    if reason == "ExternalProvisioning":
        cause = f"{what} is not bound: no provisioner made its volume ({message}): check that the class's provisioner runs, or {fixes.storage_class()}"
        return Finding(f"claim/{name}/{reason}", cause, detail, PROVISIONING, **base)
    if reason == "Provisioning":
        return Finding(f"claim/{name}/{reason}", cause, detail, PROVISIONER_WORKING, **base)
    if reason == "WaitForFirstConsumer":
        return None  # bound once the pod is scheduled: the pod's own state tells
    return Finding(f"claim/{name}/{reason}", cause, detail, PROVISIONING, **base)


def pod_findings(
    pod: dict, claims: dict[str, dict] | None = None, events: list[dict] | None = None, fixes: Fixes = GENERIC_FIXES
) -> list[Finding]:
    """Why a live pod cannot become ready: its containers' waiting states, its scheduling, its claims."""
    if _deleting(pod):
        return []
    status = pod.get("status") or {}
    found = [
        f
        for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        if (f := container_finding(pod, c, fixes)) is not None
    ]
    unscheduled = _scheduled(pod)
    if unscheduled is None or (pod.get("spec") or {}).get("nodeName"):
        return found
    message = unscheduled.get("message", "")
    if UNBOUND_CLAIMS.search(message):
        # Normal for a few seconds while a volume is made: the claims' events decide.
        volumes = (pod.get("spec") or {}).get("volumes") or []
        names = [v["persistentVolumeClaim"]["claimName"] for v in volumes if v.get("persistentVolumeClaim")]
        found += [f for n in names if n in (claims or {}) and (f := claim_finding(claims[n], events, fixes)) is not None]
    elif unscheduled.get("reason") == "Unschedulable":
        said = _short(re.split(r"\s+preemption:", message)[0], 240)
        name = pod["metadata"]["name"]
        lower = f"{fixes.resources}.requests" if fixes.resources else "the pod's requests"
        cause = f"pod {name} cannot be scheduled ({said}): free room on the nodes, or lower {lower}"
        found.append(Finding(f"pod/{name}/Unschedulable", cause, f"pod {name}: Unschedulable ({said})", UNSCHEDULABLE, name))
    return found


def rollout_findings(state: dict, name: str, events: list[dict] | None = None, fixes: Fixes = GENERIC_FIXES) -> list[Finding]:
    """Why the Deployment's rollout cannot finish, most telling first, from
    `kubectl get deployments.apps,replicasets.apps,pods,persistentvolumeclaims -l ... -o json`
    (and the events a finding asks for, of a claim or a failing ReplicaSet: None means not looked up)."""
    items = list_items(state)
    deployment = named(items, "Deployment", name)
    if deployment is None:
        return []
    if deployment.get("status", {}).get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
        return []  # the controller has not acted on the change yet: its pods are the old ones
    pods, current = deployment_pods(items, deployment)
    claims = {i["metadata"]["name"]: i for i in items if i.get("kind") == "PersistentVolumeClaim"}
    sets = [i for i in items if i.get("kind") == "ReplicaSet" and owned_by(i, "Deployment", [name])]
    failure = replica_failure(deployment, pods, fixes, sets, events)
    found = [failure] if failure else []
    for pod in sorted(current, key=lambda p: p["metadata"]["name"]):
        found += pod_findings(pod, claims, events, fixes)
    return found
