"""Rollouts beyond Deployments: a StatefulSet and a Job are waited for, sized against a quota and
checked for access through the same path as a Deployment (kube.wait_for_rollout, stuck, quota,
target.NAMESPACED_NEEDS). The JSON is shaped as the API returns it."""

from __future__ import annotations

import copy

import pytest

from playbooks.errors import PlaybookError
from playbooks.probe import Probes
from playbooks.quota import check, needs
from playbooks.stuck import WORKLOADS, Fixes, rollout_findings, rollout_progress
from playbooks.target import NAMESPACED_NEEDS, access_checks
from tests.test_wait_causes import (
    CRASH_OOM,
    NS,
    QUOTA_MESSAGE,
    Answers,
    container,
    deployment,
    event,
    job,
    job_pod,
    kubectl_with,
    lines,  # noqa: F401  the fixture
    pod,
    replicaset,
    state,
)

LABELS = {"app.kubernetes.io/name": "postgres", "app.kubernetes.io/instance": "postgres"}
READY = container({"running": {"startedAt": "2026-03-02T10:15:00Z"}}, ready=True, image="postgres:17")


def statefulset(replicas=1, ready=0, updated=None, generation=1, observed=1, current="postgres-6d5f", update=None):
    update = update or current
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "postgres", "namespace": NS, "uid": "uid-sts", "generation": generation, "labels": LABELS},
        "spec": {
            "replicas": replicas,
            "serviceName": "postgres",
            "selector": {"matchLabels": LABELS},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "containers": [
                        {
                            "name": "postgres",
                            "image": "postgres:17",
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "256Mi"},
                                "limits": {"cpu": "500m", "memory": "512Mi"},
                            },
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "2Gi"}}}}
            ],
        },
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": replicas,
            "updatedReplicas": replicas if updated is None else updated,
            "currentRevision": current,
            "updateRevision": update,
        },
    }


def sts_pod(index=0, revision="postgres-6d5f", statuses=None, phase="Running"):
    found = pod(phase=phase, statuses=statuses)
    found["metadata"].update(
        name=f"postgres-{index}",
        labels={**LABELS, "controller-revision-hash": revision},
        ownerReferences=[
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "postgres", "uid": "uid-sts", "controller": True}
        ],
    )
    return found


COMPLETE = {"type": "Complete", "status": "True", "reason": "Completed"}
FAILED = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "reached the backoff limit"}


# ---------------------------------------------------------------- progress, per kind


def test_a_deployment_is_done_when_all_replicas_are_available():
    assert rollout_progress(state(deployment(available=1)), "mlflow")[0] is True
    assert rollout_progress(state(deployment(available=0)), "mlflow", "Deployment")[0] is False


def test_a_statefulset_is_done_when_its_pods_are_ready_at_the_update_revision():
    done, line = rollout_progress(state(statefulset(ready=1), sts_pod(statuses=[READY])), "postgres", "StatefulSet")
    assert done and line.startswith("1/1 ready, 1 updated; postgres-0 Running")
    not_ready = state(statefulset(ready=0), sts_pod(statuses=[READY]))
    assert rollout_progress(not_ready, "postgres", "StatefulSet")[0] is False
    rolling = state(statefulset(ready=1, current="postgres-6d5f", update="postgres-7a8b"))
    assert rollout_progress(rolling, "postgres", "StatefulSet")[0] is False
    unseen = state(statefulset(ready=1, generation=2, observed=1))
    assert rollout_progress(unseen, "postgres", "StatefulSet")[0] is False
    assert rollout_progress(state(), "postgres", "StatefulSet") == (False, "statefulset postgres not found")


def test_a_job_is_done_when_it_completed():
    assert rollout_progress(state(job(conditions=[COMPLETE])), "dask-smoke", "Job") == (True, "Complete")
    assert rollout_progress(state(job()), "dask-smoke", "Job") == (False, "no pod yet")
    assert rollout_progress(state(job(conditions=[FAILED])), "dask-smoke", "Job")[0] is False


# ---------------------------------------------------------------- findings, per kind


def test_a_statefulset_pod_out_of_memory_names_the_setting():
    oom = copy.deepcopy(CRASH_OOM)
    found = rollout_findings(
        state(statefulset(), sts_pod(statuses=[oom])), "postgres", None, Fixes("postgres.resources"), "StatefulSet"
    )
    assert [f.cause for f in found] == [
        "container mlflow of pod postgres-0 ran out of memory (OOMKilled at its memory limit of 768Mi) and restarts "
        "in a loop (3 restarts): raise postgres.resources.limits.memory (now 768Mi)"
    ]


def test_a_statefulset_its_controller_may_not_create_pods_for_asks_for_events_then_names_the_quota():
    short = state(statefulset())
    asked = rollout_findings(short, "postgres", None, kind="StatefulSet")
    assert [(f.events_of, f.wants_events) for f in asked] == [(("StatefulSet", "postgres"), True)]
    refused = event(
        "FailedCreate",
        f"create Pod postgres-0 in StatefulSet postgres failed error: {QUOTA_MESSAGE}",
        kind="StatefulSet",
        name="postgres",
        uid="uid-sts",
        source="statefulset-controller",
    )
    found = rollout_findings(short, "postgres", [refused], kind="StatefulSet")
    assert len(found) == 1 and found[0].key == "statefulset/postgres/quota"
    assert found[0].cause.startswith("statefulset postgres cannot create pods:")
    assert "exceeded quota: budget" in found[0].cause
    assert rollout_findings(short, "postgres", [], kind="StatefulSet") == []


def test_a_failed_job_decides_at_once_with_why_its_pod_ended():
    ended = container({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    found = rollout_findings(
        state(job(conditions=[FAILED]), job_pod([ended], phase="Failed")), "dask-smoke", None, kind="Job"
    )
    assert len(found) == 1 and found[0].grace == 0
    assert found[0].cause.startswith("job dask-smoke failed (BackoffLimitExceeded: reached the backoff limit")
    assert "ran out of memory (OOMKilled at its memory limit of 128Mi)" in found[0].cause


# ---------------------------------------------------------------- the wait, per kind


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_every_kind_is_listed_with_its_pods_in_one_get(kind):
    assert WORKLOADS[kind][1] == "pods" and WORKLOADS[kind][0].split(".")[0] == kind.lower() + "s"


def test_the_wait_for_a_statefulset_ends_when_it_is_ready(monkeypatch, lines):  # noqa: F811
    kinds = ",".join(WORKLOADS["StatefulSet"])
    answers = Answers({kinds: state(statefulset(ready=1), sts_pod(statuses=[READY]))})
    kubectl_with(answers, monkeypatch, lines).wait_for_rollout("StatefulSet", "postgres", "x=y", 60, "postgres")
    assert answers.gets(kinds) == 1 and lines[-1] == "postgres: ready after 0s"


def test_the_wait_for_a_statefulset_stops_on_a_crashing_pod_with_one_line(monkeypatch, lines):  # noqa: F811
    kinds = ",".join(WORKLOADS["StatefulSet"])
    answers = Answers({kinds: state(statefulset(), sts_pod(statuses=[copy.deepcopy(CRASH_OOM)]))})
    kubectl = kubectl_with(answers, monkeypatch, lines)
    with pytest.raises(PlaybookError) as error:
        kubectl.wait_for_rollout("StatefulSet", "postgres", "x=y", 60, "postgres", "postgres.resources")
    assert str(error.value).startswith("postgres: container mlflow of pod postgres-0 ran out of memory")
    assert "\n" not in str(error.value)
    assert any(line.startswith("--- pods: kubectl get pods -l x=y") for line in lines)


def test_the_wait_for_a_job_stops_when_it_failed(monkeypatch, lines):  # noqa: F811
    kinds = ",".join(WORKLOADS["Job"])
    answers = Answers({kinds: state(job(conditions=[FAILED]))})
    with pytest.raises(PlaybookError, match=r"^migrate: job dask-smoke failed \(BackoffLimitExceeded"):
        kubectl_with(answers, monkeypatch, lines).wait_for_rollout("Job", "dask-smoke", "x=y", 60, "migrate")


def test_the_wait_for_a_job_ends_when_it_completed(monkeypatch, lines):  # noqa: F811
    kinds = ",".join(WORKLOADS["Job"])
    answers = Answers({kinds: state(job(conditions=[COMPLETE]))})
    kubectl_with(answers, monkeypatch, lines).wait_for_rollout("Job", "dask-smoke", "x=y", 60, "migrate")
    assert lines == ["migrate: ready after 0s"]


def test_the_wait_for_a_deployment_is_the_same_path(monkeypatch, lines):  # noqa: F811
    kinds = ",".join(WORKLOADS["Deployment"])
    answers = Answers({kinds: state(deployment(available=1), replicaset())})
    kubectl_with(answers, monkeypatch, lines).wait_for_deployment("mlflow", "x=y", 60)
    assert answers.gets(kinds) == 1 and lines == ["mlflow: ready after 0s"]


# ---------------------------------------------------------------- quota and access


def test_a_statefulset_takes_its_pods_and_a_claim_per_replica_from_the_quota():
    adds = needs([statefulset(replicas=2)])
    assert adds["pods"] == 2 and adds["count/statefulsets.apps"] == 1
    assert adds["limits.memory"] == 2 * 512 * 2**20 and adds["requests.cpu"] == needs([statefulset()])["cpu"] * 2
    assert adds["persistentvolumeclaims"] == 2 and adds["requests.storage"] == 2 * 2 * 2**30
    quota = {"metadata": {"name": "small"}, "status": {"hard": {"requests.storage": "3Gi"}, "used": {}}}
    with pytest.raises(PlaybookError, match=r"requests.storage needs 4096Mi more, 3072Mi of 3072Mi left"):
        check([quota], [statefulset(replicas=2)], [], NS)
    check([quota], [statefulset(replicas=2)], [statefulset(replicas=2)], NS)


def test_a_job_takes_its_parallel_pods_from_the_quota():
    one = job()
    one["spec"]["template"] = {"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "250m"}}}]}}
    one["spec"]["parallelism"] = 3
    adds = needs([one])
    assert adds["pods"] == 3 and adds["limits.cpu"] * 4 == 3 and adds["count/jobs.batch"] == 1


def test_access_checks_ask_for_statefulsets_like_deployments():
    for verb in ("create", "patch", "delete"):
        assert (verb, "statefulsets", "apps") in NAMESPACED_NEEDS
    rules = ({"verbs": ["create", "patch", "delete"], "apiGroups": ["apps"], "resources": ["deployments"]},)
    checks = {(c.verb, c.resource): c.allowed for c in access_checks(Probes(False, rules), NS)}
    assert checks[("create", "deployments")] is True and checks[("create", "statefulsets")] is False
