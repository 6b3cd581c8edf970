"""One-off Kubernetes Jobs: apply, wait with a deadline and progress, read the logs, delete."""

from __future__ import annotations

import json
from dataclasses import dataclass

from playbooks.errors import PlaybookError
from playbooks.kube import Kubectl

NO_POD = "no pod yet"


@dataclass
class JobOutcome:
    succeeded: bool
    logs: str
    detail: str  # how it ended, e.g. "succeeded after 12s" or "pod x Failed (OOMKilled)"


def run_job(kubectl: Kubectl, docs: list[dict], selector: str, timeout: float, label: str) -> JobOutcome:
    """Run the Job in docs (with the objects it needs) to its end, then delete them all.

    Leftovers of an interrupted run of the same name are deleted first: a Job's pod
    template cannot be changed in place.
    """
    job = next(doc["metadata"]["name"] for doc in docs if doc["kind"] == "Job")
    names = [f"{doc['kind'].lower()}/{doc['metadata']['name']}" for doc in docs]
    remove(kubectl, names)
    try:
        kubectl.apply(docs)
        succeeded, detail = wait_for_job(kubectl, job, selector, timeout, label)
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


def wait_for_job(kubectl: Kubectl, job: str, selector: str, timeout: float, label: str) -> tuple[bool, str]:
    """Wait until the Job completes or fails; (succeeded, how it ended). Evidence and an error at the deadline."""
    outcome: list = []  # succeeded, and the last status line: how it ended

    def probe(seconds: float) -> tuple[bool, str]:
        finished, succeeded, line = job_progress(kubectl.get_json("jobs.batch,pods", selector, timeout=seconds), job)
        if line == NO_POD:
            line = _why_no_pod(kubectl, job) or line
        outcome[:] = [succeeded, line]
        return finished, line

    elapsed = kubectl.poll(label, selector, timeout, probe, f"job {job} not finished")
    succeeded, line = outcome
    kubectl.out(f"{label}: job {'succeeded' if succeeded else 'failed'} after {elapsed:.0f}s")
    return succeeded, line


def _why_no_pod(kubectl: Kubectl, job: str) -> str | None:
    """The Job controller's last complaint (e.g. exceeded quota); a quota refusal ends the wait."""
    selector = f"involvedObject.kind=Job,involvedObject.name={job},type=Warning"
    try:
        result = kubectl.run("get", "events", "--field-selector", selector, "-o", "json", timeout=20)
    except PlaybookError:
        return None
    events = sorted(json.loads(result.stdout or "{}").get("items", []), key=lambda e: e.get("lastTimestamp") or "")
    if not events:
        return None
    message = events[-1].get("message", "").strip()
    if "exceeded quota" in message:
        raise PlaybookError(f"job {job} may not start a pod: {message}; free some quota or lower the Job's resources")
    return f"no pod yet: {message}"


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
