"""One-off Kubernetes Jobs: apply, wait with a deadline and progress, read the logs, delete."""

from __future__ import annotations

import json
from dataclasses import dataclass

from playbooks.errors import PlaybookError
from playbooks.kube import Kubectl
from playbooks.stuck import (
    NO_POD,
    Fixes,
    Sightings,
    event_time,
    events_about,
    job_failure_cause,
    job_findings,
    job_progress,
    list_items,
    named,
)


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
