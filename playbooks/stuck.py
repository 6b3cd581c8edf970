"""Why a rollout or a Job cannot finish: pure findings over the JSON kubectl returns.

A wait (playbooks/kube.py, playbooks/jobs.py) polls the cluster and hands the state here;
a Finding names the cause and its fix, and `decide` picks the first one that has lasted its
grace period (transient states such as ErrImagePull get a few seconds, a crash loop none).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace


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


# What a wait lists (one `kubectl get`) for each kind it can wait for; the first two always.
WORKLOADS = {
    "Deployment": ("deployments.apps", "pods", "replicasets.apps", "persistentvolumeclaims"),
    "StatefulSet": ("statefulsets.apps", "pods", "persistentvolumeclaims"),
    "Job": ("jobs.batch", "pods", "persistentvolumeclaims"),
}


def rollout_progress(state: dict, name: str, kind: str = "Deployment") -> tuple[bool, str]:
    """Whether a Deployment's, StatefulSet's or Job's rollout is complete (as `kubectl rollout status`
    decides; a Job: when it completed), and a status line."""
    items = list_items(state)
    workload = named(items, kind, name)
    if workload is None:
        return False, f"{kind.lower()} {name} not found"
    if kind == "StatefulSet":
        return _statefulset_progress(items, workload)
    if kind == "Job":
        finished, succeeded, line = job_progress(state, name)
        return finished and succeeded, line
    return _deployment_progress(items, workload)


def _deployment_progress(items: list[dict], deployment: dict) -> tuple[bool, str]:
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


def statefulset_pods(items: list[dict], statefulset: dict) -> tuple[list[dict], list[dict]]:
    """(every pod of the StatefulSet, its live pods of the update revision) among items."""
    name = statefulset["metadata"]["name"]
    pods = [i for i in items if i.get("kind") == "Pod" and owned_by(i, "StatefulSet", [name])]
    revision = (statefulset.get("status") or {}).get("updateRevision")
    current = [
        p
        for p in pods
        if not _deleting(p)
        and (not revision or (p["metadata"].get("labels") or {}).get("controller-revision-hash") == revision)
    ]
    return pods, current


def _statefulset_progress(items: list[dict], statefulset: dict) -> tuple[bool, str]:
    spec, status = statefulset.get("spec") or {}, statefulset.get("status") or {}
    pods, _ = statefulset_pods(items, statefulset)
    want = spec.get("replicas", 1)
    ready, updated = status.get("readyReplicas", 0), status.get("updatedReplicas", 0)
    strategy = spec.get("updateStrategy") or {}
    partition = ((strategy.get("rollingUpdate") or {}).get("partition")) or 0
    seen = status.get("observedGeneration", 0)
    observed = seen > 0 and seen >= statefulset["metadata"].get("generation", 0)
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        rolled = True
    elif partition:
        rolled = updated >= want - partition
    else:
        rolled = status.get("updateRevision") == status.get("currentRevision")
    done = observed and ready >= want and rolled
    pod_states = ", ".join(_pod_state(p) for p in pods[:4])
    line = f"{ready}/{want} ready, {updated} updated"
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
IMAGE_REASONS = {
    "ImagePullBackOff": AT_ONCE,
    "InvalidImageName": AT_ONCE,
    "ErrImageNeverPull": AT_ONCE,
    "ErrImagePull": TRANSIENT,
}
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
        return (
            f"raise {key} (now {limit})"
            if key
            else "raise the container's memory limit (resources.limits.memory of its service's settings)"
        )

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
        return (
            f"lower {self.resources} or the number of pods"
            if self.resources
            else "lower the pods' resources or their number"
        )


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
        return Finding(
            f"deployment/{name}/ReplicaFailure",
            f"{what} cannot create pods",
            f"{what}: FailedCreate",
            NEVER,
            events_of=about,
            wants_events=True,
        )
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
        return Finding(
            f"claim/{name}/unknown", f"{what} is not bound", f"{what}: Pending", NEVER, wants_events=True, **base
        )
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
        found += [
            f for n in names if n in (claims or {}) and (f := claim_finding(claims[n], events, fixes)) is not None
        ]
    elif unscheduled.get("reason") == "Unschedulable":
        said = _short(re.split(r"\s+preemption:", message)[0], 240)
        name = pod["metadata"]["name"]
        lower = f"{fixes.resources}.requests" if fixes.resources else "the pod's requests"
        cause = f"pod {name} cannot be scheduled ({said}): free room on the nodes, or lower {lower}"
        found.append(
            Finding(f"pod/{name}/Unschedulable", cause, f"pod {name}: Unschedulable ({said})", UNSCHEDULABLE, name)
        )
    return found


def rollout_findings(
    state: dict, name: str, events: list[dict] | None = None, fixes: Fixes = GENERIC_FIXES, kind: str = "Deployment"
) -> list[Finding]:
    """Why the rollout of a Deployment, StatefulSet or Job cannot finish, most telling first, from
    `kubectl get <WORKLOADS[kind]> -l ... -o json` (and the events a finding asks for, of a claim, a
    failing ReplicaSet, or a StatefulSet or Job short of pods: None means not looked up)."""
    if kind == "StatefulSet":
        return statefulset_findings(state, name, events, fixes)
    if kind == "Job":
        return _job_rollout_findings(state, name, events, fixes)
    return deployment_findings(state, name, events, fixes)


def deployment_findings(
    state: dict, name: str, events: list[dict] | None = None, fixes: Fixes = GENERIC_FIXES
) -> list[Finding]:
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


def _short_of_pods(
    workload: dict, pods: list[dict], want: int, events: list[dict] | None, fixes: Fixes
) -> list[Finding]:
    """A controller that has fewer live pods than it wants may have been refused creating them:
    its FailedCreate events say so (fetched only then)."""
    kind, name = workload["kind"], workload["metadata"]["name"]
    if len([p for p in pods if not _deleting(p)]) >= want:
        return []
    if events is None:
        return [Finding(f"{kind.lower()}/{name}/short", f"{kind} {name} has too few pods", "", NEVER,
                        events_of=(kind, name), wants_events=True)]  # fmt: skip
    refused = [e for e in events_about(events, workload) if e.get("reason") == "FailedCreate"]
    if not refused:
        return []
    what, key = f"{kind.lower()} {name}", f"{kind.lower()}/{name}"
    failure = create_failure(refused[-1].get("message", ""), what, key, fixes, any(_deleting(p) for p in pods))
    return [failure] if failure else []


def statefulset_findings(
    state: dict, name: str, events: list[dict] | None = None, fixes: Fixes = GENERIC_FIXES
) -> list[Finding]:
    """Why a StatefulSet's rollout cannot finish: its controller refused to create a pod (quota,
    PodSecurity), or a pod of its update revision cannot run (image, crash, scheduling, claims)."""
    items = list_items(state)
    statefulset = named(items, "StatefulSet", name)
    if statefulset is None:
        return []
    seen = (statefulset.get("status") or {}).get("observedGeneration", 0)
    if seen < statefulset["metadata"].get("generation", 0):
        return []
    pods, current = statefulset_pods(items, statefulset)
    claims = {i["metadata"]["name"]: i for i in items if i.get("kind") == "PersistentVolumeClaim"}
    want = (statefulset.get("spec") or {}).get("replicas", 1)
    found = _short_of_pods(statefulset, pods, want, events, fixes)
    for pod in sorted(current, key=lambda p: p["metadata"]["name"]):
        found += pod_findings(pod, claims, events, fixes)
    return found


def _job_rollout_findings(state: dict, name: str, events: list[dict] | None, fixes: Fixes) -> list[Finding]:
    """A Job waited for as a rollout: a failed Job decides at once (with why its pod ended); one
    without pods asks for its events (job_findings judges them); else job_findings."""
    fixes = replace(fixes, job=True)
    finished, succeeded, line = job_progress(state, name)
    if finished and not succeeded:
        cause = job_failure_cause(state, name, fixes)
        said = f"job {name} failed ({line})" + (f": {cause}" if cause else "")
        return [Finding(f"job/{name}/Failed", said, f"job {name}: {line}", AT_ONCE)]
    job = named(list_items(state), "Job", name)
    if job is not None and not job_pods(list_items(state), name) and events is None:
        return [
            Finding(
                f"job/{name}/nopod", f"job {name} has no pod", "", NEVER, events_of=("Job", name), wants_events=True
            )
        ]
    return job_findings(state, name, events, fixes)


# ---------------------------------------------------------------- Jobs

NO_POD = "no pod yet"
JOB_FIXES = Fixes(job=True)  # no setting names known: generic wording


def job_pods(items: list[dict], job: str) -> list[dict]:
    """The live pods of the Job among items (owned by it, or labelled with its name)."""
    return [
        i for i in items if i.get("kind") == "Pod" and not i["metadata"].get("deletionTimestamp") and _of_job(i, job)
    ]


def _of_job(pod: dict, job: str) -> bool:
    return owned_by(pod, "Job", [job]) or (pod["metadata"].get("labels") or {}).get("job-name") == job


def job_findings(state: dict, job: str, events: list[dict] | None = None, fixes: Fixes = JOB_FIXES) -> list[Finding]:
    """Why a Job that has not ended cannot finish, most telling first, from
    `kubectl get jobs.batch,pods -l ... -o json` and events (the Job's, when it has no pod;
    None: not looked up).

    - the Job controller may not create its pod (FailedCreate: exceeded quota, PodSecurity): at once;
    - a pod's container cannot run: OOMKilled in a loop, an image the cluster cannot pull, a
      missing Secret/ConfigMap key; unschedulable; an unbound claim. Other crashes are
      left to the Job's backoffLimit (restarting is how a Job retries).
    """
    items = list_items(state)
    found_job = named(items, "Job", job)
    if found_job is None:
        return []
    pods = job_pods(items, job)
    found: list[Finding] = []
    if not pods and events:
        refused = [e for e in events_about(events, found_job) if e.get("reason") == "FailedCreate"]
        if refused:
            failure = create_failure(refused[-1].get("message", ""), f"job {job}", f"job/{job}", fixes, grace=0.0)
            found += [failure] if failure else []
    claims = {i["metadata"]["name"]: i for i in items if i.get("kind") == "PersistentVolumeClaim"}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        found += pod_findings(pod, claims, events, fixes)
    return found


def job_failure_cause(state: dict, job: str, fixes: Fixes = JOB_FIXES) -> str | None:
    """Why a failed Job's pod ended, when a container says so: out of memory (and the setting
    to raise), or an exit code with the advice to read its logs."""
    items = list_items(state)
    pods = [i for i in items if i.get("kind") == "Pod" and _of_job(i, job)]
    crashed = None
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        specs = {c["name"]: c for c in (pod.get("spec") or {}).get("containers") or []}
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = (
                (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated") or {}
            )
            where = f"container {status['name']} of pod {pod['metadata']['name']}"
            if ended.get("reason") == "OOMKilled":
                limit = ((specs.get(status["name"], {}).get("resources") or {}).get("limits") or {}).get("memory")
                at = f" at its memory limit of {limit}" if limit else ""
                return f"{where} ran out of memory (OOMKilled{at}): {fixes.memory(limit)}"
            if ended and ended.get("exitCode") not in (0, None) and crashed is None:
                crashed = (
                    f"{where} exited with code {ended['exitCode']} ({ended.get('reason', 'Error')}): read its logs"
                )
    return crashed


def job_progress(state: dict, job: str) -> tuple[bool, bool, str]:
    """(finished, succeeded, status line) of a Job and its pods, as `kubectl get jobs.batch,pods -l ... -o json` returns them."""
    items = state.get("items", [state]) if state.get("kind") == "List" else [state]
    found = next((i for i in items if i.get("kind") == "Job" and i["metadata"]["name"] == job), None)
    pods = ", ".join(pod_state(i) for i in items if i.get("kind") == "Pod")
    if found is None:
        return False, False, f"job {job} not found"
    ended = f"; {pods}" if pods else ""
    for condition in found.get("status", {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return True, True, f"Complete{ended}"
        if condition.get("type") == "Failed":
            why = condition.get("reason", "Failed")
            message = condition.get("message", "")
            return True, False, f"{why}: {message}{ended}" if message else f"{why}{ended}"
    return False, False, pods or NO_POD


def pod_state(pod: dict) -> str:
    """A Job pod in a few words: phase, and why it waits or how its container ended."""
    name = pod["metadata"]["name"]
    status = pod.get("status", {})
    phase = status.get("phase", "Unknown")
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if "waiting" in state:
            return f"{name} {phase} ({state['waiting'].get('reason', 'waiting')})"
        if "terminated" in state:
            ended = state["terminated"]
            return f"{name} {phase} ({ended.get('reason', 'terminated')}, exit code {ended.get('exitCode')})"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{name} unschedulable ({condition.get('message') or condition.get('reason', '')})"
    return f"{name} {phase}"
