"""One-off Kubernetes Jobs: apply, wait with a deadline and progress, read the logs, delete."""

from __future__ import annotations

import json
from dataclasses import dataclass

from playbooks.errors import PlaybookError
from playbooks.kube import Kubectl
from playbooks.stuck import (
    Finding,
    Fixes,
    Sightings,
    create_failure,
    event_time,
    events_about,
    list_items,
    named,
    owned_by,
    pod_findings,
)

NO_POD = "no pod yet"
JOB_FIXES = Fixes(job=True)  # no setting names known: generic wording


@dataclass
class JobOutcome:
    succeeded: bool
    logs: str
    detail: str  # how it ended, e.g. "succeeded after 12s" or "pod x Failed (OOMKilled)"


def run_job(
    kubectl: Kubectl, docs: list[dict], selector: str, timeout: float, label: str, resources: str | None = None
) -> JobOutcome:
    """Run the Job in docs (with the objects it needs) to its end, then delete them all.

    Leftovers of an interrupted run of the same name are deleted first: a Job's pod
    template cannot be changed in place. resources: the setting that sizes its pod (e.g.
    "dask.smoke_resources"), named by the fix when it runs out of memory.
    """
    job = next(doc["metadata"]["name"] for doc in docs if doc["kind"] == "Job")
    names = [f"{doc['kind'].lower()}/{doc['metadata']['name']}" for doc in docs]
    remove(kubectl, names)
    try:
        kubectl.apply(docs)
        succeeded, detail = wait_for_job(kubectl, job, selector, timeout, label, resources)
        logs = kubectl.run("logs", f"job/{job}", "--tail=400", timeout=30, check=False)
        return JobOutcome(succeeded, logs.stdout if logs.ok else "", detail)
    finally:
        try:
            remove(kubectl, names)
        except PlaybookError as error:
            kubectl.out(f"{label}: could not delete {', '.join(names)}: {error}")


def remove(kubectl: Kubectl, names: list[str], timeout: float = 60) -> None:
    # Foreground: the pods go with the Job, so none is left to be mistaken for the next run's.
    args = ["delete", *names, "--ignore-not-found", "--cascade=foreground", "--wait=true", f"--timeout={int(timeout)}s"]
    kubectl.run(*args, timeout=timeout + 15)


def wait_for_job(
    kubectl: Kubectl, job: str, selector: str, timeout: float, label: str, resources: str | None = None
) -> tuple[bool, str]:
    """Wait until the Job completes or fails; (succeeded, how it ended).

    It stops early, with the evidence and one line naming the cause, when the Job cannot
    finish (see job_findings); evidence and an error at the deadline. A failed Job's "how it
    ended" names the cause too (e.g. its pod ran out of memory, and the setting to raise).
    """
    fixes = Fixes(resources, job=True)
    sightings = Sightings()
    outcome: list = []  # succeeded, and the last status line: how it ended

    def probe(seconds: float) -> tuple[bool, str]:
        state = kubectl.get_json("jobs.batch,pods", selector, timeout=seconds)
        finished, succeeded, line = job_progress(state, job)
        if finished:
            cause = None if succeeded else job_failure_cause(state, job, fixes)
            outcome[:] = [succeeded, f"{line}; {cause}" if cause else line]
            return True, line
        events = None
        if line == NO_POD:
            events = _why_no_pod(kubectl, job, seconds)
            found_job = named(list_items(state), "Job", job)
            said = events_about(events, found_job) if found_job else []  # not an earlier run's
            line = f"{NO_POD}: {_short_message(said[-1])}" if said else line
        outcome[:] = [succeeded, line]
        found = kubectl.explained(lambda more: job_findings(state, job, more, fixes), events, seconds)
        kubectl.judge(sightings, found, line)
        return False, line

    elapsed = kubectl.poll(label, selector, timeout, probe, f"job {job} not finished")
    succeeded, line = outcome
    kubectl.out(f"{label}: job {'succeeded' if succeeded else 'failed'} after {elapsed:.0f}s")
    return succeeded, line


def _short_message(event: dict) -> str:
    return " ".join(event.get("message", "").split())


def _why_no_pod(kubectl: Kubectl, job: str, seconds: float = 20) -> list[dict]:
    """The Job controller's complaints (Warning events about the Job, oldest first): e.g. a
    FailedCreate for an exceeded quota or a PodSecurity refusal, which job_findings judges."""
    selector = f"involvedObject.kind=Job,involvedObject.name={job},type=Warning"
    try:
        result = kubectl.run("get", "events", "--field-selector", selector, "-o", "json", timeout=min(seconds, 20))
    except PlaybookError:
        return []
    return sorted(json.loads(result.stdout or "{}").get("items", []), key=event_time)


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
