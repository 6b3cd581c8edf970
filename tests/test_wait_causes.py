"""Why a rollout or Job wait cannot end well: the pure judgement over kubectl's JSON, and the wait
that stops on it (evidence, then one line naming the cause and the fix).

The JSON is shaped as `kubectl get deployments.apps,replicasets.apps,pods,persistentvolumeclaims
-o json` and `kubectl get events -o json` return it (fields as a real cluster fills them).
"""

from __future__ import annotations

import copy
import json

import pytest

from playbooks import kube
from playbooks.deploy import Plan
from playbooks.errors import PlaybookError
from playbooks.jobs import job_failure_cause, job_findings, job_progress, wait_for_job
from playbooks.kube import Kubectl, Result
from playbooks.stuck import (
    Fixes,
    Sightings,
    decide,
    pod_findings,
    rollout_findings,
    rollout_progress,
)
from tests.manifests import target

NS = "ws-frank-s1"
LABELS = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow"}
MLFLOW = Fixes("mlflow.resources")
NOW = "2026-03-02T10:15:30Z"


# ---------------------------------------------------------------- realistic objects


def deployment(name="mlflow", revision=2, generation=2, observed=2, replicas=1, available=0, conditions=()):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-deploy-{name}",
            "generation": generation,
            "labels": {**LABELS, "app.kubernetes.io/component": "tracking-server"},
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
        },
        "spec": {"replicas": replicas, "selector": {"matchLabels": LABELS}, "strategy": {"type": "Recreate"}},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": available,
            "readyReplicas": available,
            "unavailableReplicas": replicas - available,
            "conditions": [
                {
                    "type": "Available",
                    "status": "False",
                    "reason": "MinimumReplicasUnavailable",
                    "message": "Deployment does not have minimum availability.",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "ReplicaSetUpdated",
                    "message": f'ReplicaSet "{name}-958576bb9" is progressing.',
                },
                *conditions,
            ],
        },
    }


def replicaset(template_hash="958576bb9", revision=2, deployment_name="mlflow", replicas=1):
    name = f"{deployment_name}-{template_hash}"
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-rs-{template_hash}",
            "labels": {**LABELS, "pod-template-hash": template_hash},
            "annotations": {
                "deployment.kubernetes.io/revision": str(revision),
                "deployment.kubernetes.io/desired-replicas": "1",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment_name,
                    "uid": f"uid-deploy-{deployment_name}",
                    "controller": True,
                }
            ],
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "observedGeneration": 1},
    }


def pod(
    suffix="ld9n6",
    template_hash="958576bb9",
    phase="Running",
    statuses=None,
    conditions=None,
    node="node-1",
    deleting=False,
    memory="768Mi",
    image="ghcr.io/mlflow/mlflow:v3.17.2-full",
):
    name = f"mlflow-{template_hash}-{suffix}"
    meta = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-pod-{suffix}",
        "labels": {**LABELS, "pod-template-hash": template_hash},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"mlflow-{template_hash}",
                "uid": f"uid-rs-{template_hash}",
                "controller": True,
            }
        ],
    }
    if deleting:
        meta["deletionTimestamp"] = NOW
        meta["deletionGracePeriodSeconds"] = 30
    spec = {
        "containers": [
            {
                "name": "mlflow",
                "image": image,
                "resources": {
                    "requests": {"cpu": "100m", "memory": "512Mi"},
                    "limits": {"cpu": "500m", "memory": memory},
                },
            }
        ],
        "volumes": [
            {"name": "db", "persistentVolumeClaim": {"claimName": "mlflow-db"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
    }
    if node:
        spec["nodeName"] = node
    status = {"phase": phase, "conditions": conditions or [{"type": "PodScheduled", "status": "True"}]}
    if statuses is not None:
        status["containerStatuses"] = statuses
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def container(
    state: dict, last: dict | None = None, restarts=0, ready=False, image="ghcr.io/mlflow/mlflow:v3.17.2-full"
):
    return {
        "name": "mlflow",
        "image": image,
        "imageID": "",
        "ready": ready,
        "started": False,
        "restartCount": restarts,
        "state": state,
        "lastState": last or {},
    }


def claim(phase="Pending", storage_class=None):
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "mlflow-db",
            "namespace": NS,
            "uid": "uid-pvc-db",
            "labels": {**LABELS, "app.kubernetes.io/component": "database"},
        },
        "spec": spec,
        "status": {"phase": phase},
    }


def event(
    reason: str,
    message: str,
    kind="PersistentVolumeClaim",
    name="mlflow-db",
    uid="uid-pvc-db",
    type_="Warning",
    source="persistentvolume-controller",
    at=NOW,
):
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.17f8a2b3c4d5e6f7", "namespace": NS, "creationTimestamp": at},
        "involvedObject": {"kind": kind, "name": name, "namespace": NS, "uid": uid, "apiVersion": "v1"},
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": source},
        "count": 3,
        "firstTimestamp": at,
        "lastTimestamp": at,
    }


def state(*items) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": list(items), "metadata": {"resourceVersion": ""}}


CRASH_OOM = container(
    {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": "back-off 40s restarting failed container=mlflow pod=mlflow-958576bb9-ld9n6_ws-frank-s1(uid-pod-ld9n6)",
        }
    },
    {
        "terminated": {
            "exitCode": 137,
            "reason": "OOMKilled",
            "startedAt": "2026-03-02T10:14:40Z",
            "finishedAt": "2026-03-02T10:15:02Z",
        }
    },
    restarts=3,
)
CRASH_ERROR = container(
    {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container=mlflow"}},
    {
        "terminated": {
            "exitCode": 1,
            "reason": "Error",
            "startedAt": "2026-03-02T10:15:00Z",
            "finishedAt": "2026-03-02T10:15:03Z",
        }
    },
    restarts=2,
)
UNBOUND = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "lastTransitionTime": NOW,
    "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
}
QUOTA_MESSAGE = (
    'pods "mlflow-958576bb9-x7k2p" is forbidden: exceeded quota: budget, requested: limits.cpu=500m, '
    "used: limits.cpu=1900m, limited: limits.cpu=2"
)
POD_SECURITY_MESSAGE = (
    'pods "mlflow-958576bb9-x7k2p" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
    '(container "mlflow" must set securityContext.allowPrivilegeEscalation=false)'
)


def replica_failure(message: str) -> dict:
    return {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "lastTransitionTime": NOW,
        "message": message,
    }


def only(found):
    assert len(found) == 1, found
    return found[0]


def decided(found, seconds: float):
    return decide(found, {f.key: seconds for f in found})


# ---------------------------------------------------------------- containers


def test_crashloop_oomkilled_names_memory_limit_and_the_setting():
    found = rollout_findings(
        state(deployment(), replicaset(), pod(statuses=[CRASH_OOM]), claim("Bound")), "mlflow", fixes=MLFLOW
    )
    finding = only(found)
    assert decided(found, 0) is finding, "CrashLoopBackOff decides at once"
    assert finding.cause == (
        "container mlflow of pod mlflow-958576bb9-ld9n6 ran out of memory (OOMKilled at its memory limit of 768Mi) "
        "and restarts in a loop (3 restarts): raise mlflow.resources.limits.memory (now 768Mi)"
    )
    assert (finding.pod, finding.container, finding.previous_logs) == ("mlflow-958576bb9-ld9n6", "mlflow", True)
    assert "OOMKilled (exit code 137)" in finding.detail and "memory limit 768Mi" in finding.detail


def test_oomkilled_without_a_setting_has_a_generic_fix():
    finding = only(rollout_findings(state(deployment(), replicaset(), pod(statuses=[CRASH_OOM])), "mlflow"))
    assert "ran out of memory (OOMKilled at its memory limit of 768Mi)" in finding.cause
    assert finding.cause.endswith(
        "raise the container's memory limit (resources.limits.memory of its service's settings)"
    )


def test_the_dask_worker_setting_is_named_as_given():
    finding = only(pod_findings(pod(statuses=[CRASH_OOM], memory="448Mi"), fixes=Fixes("dask.worker_resources")))
    assert finding.cause.endswith("raise dask.worker_resources.limits.memory (now 448Mi)")
    full_key = only(pod_findings(pod(statuses=[CRASH_OOM]), fixes=Fixes("dask.scheduler_resources.limits.memory")))
    assert full_key.cause.endswith("raise dask.scheduler_resources.limits.memory (now 768Mi)"), (
        "a full key is not doubled"
    )


def test_crashloop_with_an_exit_code_says_to_read_the_logs():
    finding = only(
        rollout_findings(state(deployment(), replicaset(), pod(statuses=[CRASH_ERROR])), "mlflow", fixes=MLFLOW)
    )
    assert finding.grace == 0 and finding.previous_logs
    assert finding.cause == (
        "container mlflow of pod mlflow-958576bb9-ld9n6 keeps crashing (exit code 1 (Error), 2 restarts, CrashLoopBackOff): "
        "read its last log lines above or with `invoke mlflow.logs`"
    )
    generic = only(pod_findings(pod(statuses=[CRASH_ERROR])))
    assert generic.cause.endswith("`kubectl logs --previous mlflow-958576bb9-ld9n6 -c mlflow`")


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "InvalidImageName"])
def test_an_image_the_cluster_cannot_pull_decides_at_once(reason):
    message = {
        "ImagePullBackOff": 'Back-off pulling image "ghcr.io/mlflow/mlflow:v3.17.2-fulll"',
        "InvalidImageName": 'Failed to apply default image tag "ghcr.io/MLflow/mlflow:v3": couldn\'t parse image reference: invalid reference format',
    }[reason]
    image = "ghcr.io/mlflow/mlflow:v3.17.2-fulll"
    waiting = container({"waiting": {"reason": reason, "message": message}}, image=image)
    found = rollout_findings(
        state(deployment(), replicaset(), pod(phase="Pending", statuses=[waiting], image=image)), "mlflow", fixes=MLFLOW
    )
    finding = decided(found, 0)
    assert finding is not None
    assert finding.cause.startswith(
        f"the cluster cannot pull image {image} for container mlflow of pod mlflow-958576bb9-ld9n6 ({reason}: "
    )
    assert finding.cause.endswith(
        "set mlflow.image to an image the nodes can pull (name, tag, registry access), or preload it on the nodes"
    )


def test_err_image_pull_just_seen_is_not_a_failure_but_after_ten_seconds_it_is():
    waiting = container(
        {
            "waiting": {
                "reason": "ErrImagePull",
                "message": "rpc error: code = NotFound desc = failed to pull and unpack image: not found",
            }
        }
    )
    found = pod_findings(pod(phase="Pending", statuses=[waiting]), fixes=MLFLOW)
    assert decided(found, 0) is None and decided(found, 5) is None
    assert "not found" in decided(found, 10).cause


def test_create_container_config_error_gives_the_waiting_message():
    message = "couldn't find key AWS_ACCESS_KEY_ID in Secret ws-frank-s1/mlflow-s3"
    waiting = container({"waiting": {"reason": "CreateContainerConfigError", "message": message}})
    found = pod_findings(pod(phase="Pending", statuses=[waiting]), fixes=MLFLOW)
    assert decided(found, 2) is None, "the Secret may be a moment behind the pod"
    finding = decided(found, 10)
    assert f"(CreateContainerConfigError: {message})" in finding.cause
    assert "create what it refers to (Secret, ConfigMap, key)" in finding.cause


@pytest.mark.parametrize(
    "waiting",
    [
        {"reason": "ContainerCreating"},
        {"reason": "PodInitializing"},
    ],
)
def test_a_pod_on_its_way_is_not_a_failure(waiting):
    found = rollout_findings(
        state(deployment(), replicaset(), pod(phase="Pending", statuses=[container({"waiting": waiting})])),
        "mlflow",
        fixes=MLFLOW,
    )
    assert found == []
    assert rollout_progress(
        state(deployment(), replicaset(), pod(phase="Pending", statuses=[container({"waiting": waiting})])), "mlflow"
    )[1] == (f"0/1 available, 1 updated; mlflow-958576bb9-ld9n6 Pending ({waiting['reason']})")


def test_a_ready_rollout_has_nothing_to_find():
    running = container({"running": {"startedAt": NOW}}, ready=True)
    found = state(deployment(available=1), replicaset(), pod(statuses=[running]), claim("Bound"))
    assert rollout_progress(found, "mlflow")[0] is True
    assert rollout_findings(found, "mlflow") == []


# ---------------------------------------------------------------- rolling updates


def test_an_old_pod_terminating_or_crashing_during_a_rollout_decides_nothing():
    old_terminating = pod("aaaaa", template_hash="7d9f8c6b5", statuses=[CRASH_OOM], deleting=True)
    old_crashing = pod("bbbbb", template_hash="7d9f8c6b5", statuses=[CRASH_ERROR])
    new_creating = pod("ccccc", phase="Pending", statuses=[container({"waiting": {"reason": "ContainerCreating"}})])
    items = state(
        deployment(revision=3),
        replicaset("7d9f8c6b5", revision=2, replicas=1),
        replicaset("958576bb9", revision=3, replicas=1),
        old_terminating,
        old_crashing,
        new_creating,
    )
    assert rollout_findings(items, "mlflow", fixes=MLFLOW) == []
    _, line = rollout_progress(items, "mlflow")
    assert "mlflow-7d9f8c6b5-aaaaa Terminating (CrashLoopBackOff, last OOMKilled)" in line


def test_a_new_pod_in_crashloop_decides_while_the_old_one_still_runs():
    old_running = pod(
        "aaaaa", template_hash="7d9f8c6b5", statuses=[container({"running": {"startedAt": NOW}}, ready=True)]
    )
    items = state(
        deployment(revision=3),
        replicaset("7d9f8c6b5", revision=2),
        replicaset("958576bb9", revision=3),
        old_running,
        pod("ccccc", statuses=[CRASH_OOM]),
    )
    assert only(rollout_findings(items, "mlflow", fixes=MLFLOW)).pod == "mlflow-958576bb9-ccccc"


def test_a_change_the_controller_has_not_seen_yet_decides_nothing():
    """Just applied: observedGeneration lags, and the crashing pods are the ones being replaced."""
    items = state(deployment(generation=3, observed=2), replicaset(), pod(statuses=[CRASH_ERROR]))
    assert rollout_findings(items, "mlflow") == []


def test_pods_of_another_deployment_under_the_same_selector_do_not_count():
    """Dask's scheduler and workers share the instance's labels: each wait judges its own pods."""
    other = pod("zzzzz", template_hash="5c6d7e8f9", statuses=[CRASH_OOM])
    other["metadata"]["ownerReferences"][0]["name"] = "mlflow-other-5c6d7e8f9"
    items = state(deployment(), replicaset(), replicaset("5c6d7e8f9", deployment_name="mlflow-other"), other)
    assert rollout_findings(items, "mlflow") == []
    assert "zzzzz" not in rollout_progress(items, "mlflow")[1]


def test_without_replicasets_every_live_pod_of_the_selector_counts():
    items = state(deployment(), pod(statuses=[CRASH_OOM]), pod("old", deleting=True, statuses=[CRASH_ERROR]))
    assert only(rollout_findings(items, "mlflow")).pod == "mlflow-958576bb9-ld9n6"


# ---------------------------------------------------------------- pods that cannot be created


def test_replica_failure_for_quota_names_it_and_the_fix():
    items = state(deployment(conditions=[replica_failure(QUOTA_MESSAGE)]), replicaset(replicas=1))
    found = rollout_findings(items, "mlflow", fixes=MLFLOW)
    assert decided(found, 3) is None, "quota held by a pod that just went away is released within seconds"
    finding = decided(found, 10)
    assert finding.cause == (
        "the ReplicaSet of deployment mlflow cannot create pods: exceeded quota: budget, requested: limits.cpu=500m, "
        "used: limits.cpu=1900m, limited: limits.cpu=2; free quota (delete what you no longer need), ask for a larger "
        "quota, or lower mlflow.resources or the number of pods"
    )


def test_replica_failure_reads_the_failing_replicasets_latest_refusal_for_current_figures():
    """The condition keeps its first words ("used: pods=1" of a pod deleted since); the events say it as it is."""
    first = 'pods "mlflow-958576bb9-k5lk9" is forbidden: exceeded quota: budget, requested: pods=1, used: pods=1, limited: pods=0'
    failing = replicaset()
    failing["status"]["conditions"] = [replica_failure(first)]
    items = state(deployment(conditions=[replica_failure(first)]), failing)
    asking = only(rollout_findings(items, "mlflow", None, MLFLOW))
    assert asking.wants_events and asking.events_of == ("ReplicaSet", "mlflow-958576bb9")
    assert decided([asking], 3600) is None
    latest = 'pods "mlflow-958576bb9-vzmvd" is forbidden: exceeded quota: budget, requested: pods=1, used: pods=0, limited: pods=0'
    refusals = [
        event(
            "FailedCreate",
            f"Error creating: {first}",
            kind="ReplicaSet",
            name="mlflow-958576bb9",
            uid="uid-rs-958576bb9",
            source="replicaset-controller",
            at="2026-03-02T10:15:01Z",
        ),
        event(
            "FailedCreate",
            f"(combined from similar events): Error creating: {latest}",
            kind="ReplicaSet",
            name="mlflow-958576bb9",
            uid="uid-rs-958576bb9",
            source="replicaset-controller",
            at="2026-03-02T10:15:09Z",
        ),
    ]
    finding = decided(rollout_findings(items, "mlflow", refusals, MLFLOW), 10)
    assert finding.cause.startswith(
        "the ReplicaSet of deployment mlflow cannot create pods: exceeded quota: budget, requested: pods=1, used: pods=0, limited: pods=0; free quota"
    )
    assert finding.events_of == ("ReplicaSet", "mlflow-958576bb9"), "the evidence shows its events"
    no_events = decided(rollout_findings(items, "mlflow", [], MLFLOW), 10)
    assert "used: pods=1, limited: pods=0" in no_events.cause, "events that may not be read: the condition's words"


def test_replica_failure_for_quota_waits_while_a_pod_of_the_deployment_terminates():
    items = state(
        deployment(conditions=[replica_failure(QUOTA_MESSAGE)]), replicaset(), pod("old", deleting=True, statuses=[])
    )
    assert rollout_findings(items, "mlflow", fixes=MLFLOW) == []


def test_replica_failure_for_pod_security_decides_at_once_and_names_the_namespace_level():
    items = state(deployment(conditions=[replica_failure(POD_SECURITY_MESSAGE)]), replicaset())
    finding = decided(rollout_findings(items, "mlflow", fixes=MLFLOW), 0)
    assert finding.cause.startswith(
        'the ReplicaSet of deployment mlflow cannot create pods: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false'
    )
    assert "pod-security.kubernetes.io/enforce" in finding.cause and "security.pod, security.container" in finding.cause


# ---------------------------------------------------------------- scheduling and volumes


def test_unschedulable_for_more_than_twelve_seconds_decides_with_the_schedulers_words():
    condition = {
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": NOW,
        "message": "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
    }  # fmt: skip
    found = rollout_findings(
        state(deployment(), replicaset(), pod(phase="Pending", node=None, conditions=[condition]), claim("Bound")),
        "mlflow",
        fixes=MLFLOW,
    )
    assert decided(found, 5) is None
    assert decided(found, 12).cause == (
        "pod mlflow-958576bb9-ld9n6 cannot be scheduled (0/1 nodes are available: 1 Insufficient memory.): "
        "free room on the nodes, or lower mlflow.resources.requests"
    )


def pending_on_claim(claim_obj: dict, events=None):
    items = state(deployment(), replicaset(), pod(phase="Pending", node=None, conditions=[UNBOUND]), claim_obj)
    return rollout_findings(items, "mlflow", events, MLFLOW)


def test_an_unbound_claim_asks_for_its_events_first():
    finding = only(pending_on_claim(claim()))
    assert finding.wants_events and finding.events_of == ("PersistentVolumeClaim", "mlflow-db")
    assert decided([finding], 3600) is None, "not judged without the claim's events"


def test_a_claim_without_class_or_volume_names_the_claim_and_the_setting():
    failed = event("FailedBinding", "no persistent volumes available for this claim and no storage class is set")
    found = pending_on_claim(claim(), [failed])
    assert decided(found, 3) is None, "the binder's first word may come before a default class is found"
    assert decided(found, 10).cause == (
        "volume claim mlflow-db (storageClassName: none, so the default class) is not bound (FailedBinding: no persistent "
        "volumes available for this claim and no storage class is set): set mlflow.storage_class to a StorageClass the "
        "cluster has (kubectl get storageclass), or ask for a default StorageClass"
    )


def test_a_claim_whose_provisioning_failed_names_the_class():
    failed = event("ProvisioningFailed", 'storageclass.storage.k8s.io "fast" not found')
    finding = decided(pending_on_claim(claim(storage_class="fast"), [failed]), 10)
    assert finding.cause.startswith(
        'volume claim mlflow-db (storageClassName: fast) is not bound (ProvisioningFailed: storageclass.storage.k8s.io "fast" not found)'
    )


def test_a_claim_being_provisioned_for_three_seconds_is_not_a_failure_but_thirty_seconds_without_a_provisioner_is():
    waiting = event(
        "ExternalProvisioning",
        "Waiting for a volume to be created either by the external provisioner 'rancher.io/local-path' or manually by the "
        "system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
        type_="Normal",
    )
    found = pending_on_claim(claim(storage_class="local-path"), [waiting])
    assert decided(found, 3) is None
    finding = decided(found, 30)
    assert finding.cause.startswith(
        "volume claim mlflow-db (storageClassName: local-path) is not bound: no provisioner made its volume (Waiting for a volume"
    )
    assert "check that the class's provisioner runs" in finding.cause


def test_events_of_an_earlier_claim_of_the_same_name_are_ignored():
    stale = event(
        "FailedBinding",
        "no persistent volumes available for this claim and no storage class is set",
        uid="uid-of-a-deleted-claim",
    )
    finding = only(pending_on_claim(claim(), [stale]))
    assert finding.key == "claim/mlflow-db/silent" and finding.grace == 30


def test_a_pending_claim_of_a_running_pod_decides_nothing():
    """envtest's fake kubelet runs pods whose claim no one binds: the pod, not the claim, tells."""
    running = container({"running": {"startedAt": NOW}}, ready=True)
    assert rollout_findings(state(deployment(), replicaset(), pod(statuses=[running]), claim()), "mlflow") == []


def test_a_claim_waiting_for_its_first_consumer_is_normal():
    wait = event("WaitForFirstConsumer", "waiting for first consumer to be created before binding", type_="Normal")
    assert pending_on_claim(claim(storage_class="local-path"), [wait]) == []


# ---------------------------------------------------------------- sightings


def test_sightings_measure_how_long_a_state_lasted_and_start_over_when_it_goes():
    now = [100.0]
    sightings = Sightings(clock=lambda: now[0])
    waiting = container({"waiting": {"reason": "ErrImagePull", "message": "not found"}})
    found = pod_findings(pod(phase="Pending", statuses=[waiting]))
    assert decide(found, sightings.ages(found)) is None
    now[0] = 106.0
    assert decide([], sightings.ages([])) is None  # it went away (ContainerCreating) ...
    now[0] = 108.0
    assert decide(found, sightings.ages(found)) is None  # ... and came back: counted anew
    now[0] = 118.0
    assert decide(found, sightings.ages(found)) is found[0]


# ---------------------------------------------------------------- Jobs


def job(name="dask-smoke", conditions=()):
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "uid": "uid-job"},
        "spec": {"backoffLimit": 0},
        "status": {"active": 0, "conditions": list(conditions)},
    }


def job_pod(statuses=None, phase="Pending", memory="128Mi"):
    found = pod("x1", phase=phase, statuses=statuses, memory=memory)
    found["metadata"].update(
        name="dask-smoke-x1",
        labels={"job-name": "dask-smoke", "batch.kubernetes.io/job-name": "dask-smoke"},
        ownerReferences=[
            {"apiVersion": "batch/v1", "kind": "Job", "name": "dask-smoke", "uid": "uid-job", "controller": True}
        ],
    )
    found["spec"]["containers"][0]["name"] = "check"
    for status in statuses or []:
        status["name"] = "check"
    return found


SMOKE = Fixes("dask.smoke_resources", job=True)


def test_a_job_refused_by_the_quota_decides_at_once():
    refused = event(
        "FailedCreate",
        f"Error creating: {QUOTA_MESSAGE.replace('mlflow-958576bb9-x7k2p', 'dask-smoke-abcde')}",
        kind="Job",
        name="dask-smoke",
        uid="uid-job",
        source="job-controller",
    )
    finding = decided(job_findings(state(job()), "dask-smoke", [refused], SMOKE), 0)
    assert finding.cause.startswith(
        "job dask-smoke cannot create pods: exceeded quota: budget, requested: limits.cpu=500m"
    )
    assert finding.cause.endswith("or lower dask.smoke_resources or the number of pods")


def test_a_job_refused_by_pod_security_decides_at_once():
    refused = event(
        "FailedCreate",
        f"Error creating: {POD_SECURITY_MESSAGE}",
        kind="Job",
        name="dask-smoke",
        uid="uid-job",
        source="job-controller",
    )
    finding = decided(job_findings(state(job()), "dask-smoke", [refused], SMOKE), 0)
    assert "violates PodSecurity" in finding.cause and "pod-security.kubernetes.io/enforce" in finding.cause


def test_an_old_jobs_refusal_is_not_this_jobs():
    refused = event(
        "FailedCreate", f"Error creating: {QUOTA_MESSAGE}", kind="Job", name="dask-smoke", uid="uid-of-the-last-run"
    )
    assert job_findings(state(job()), "dask-smoke", [refused], SMOKE) == []


def test_a_job_pod_that_cannot_pull_its_image_decides():
    waiting = container(
        {
            "waiting": {
                "reason": "ImagePullBackOff",
                "message": 'Back-off pulling image "ghcr.io/dask/dask:2026.8.0-py3.11"',
            }
        }
    )
    finding = decided(job_findings(state(job(), job_pod([waiting])), "dask-smoke", None, SMOKE), 0)
    assert (
        "cannot pull image ghcr.io/mlflow/mlflow:v3.17.2-full for container check of pod dask-smoke-x1" in finding.cause
    )
    assert "set dask.image to an image the nodes can pull" in finding.cause


def test_a_job_pod_out_of_memory_in_a_loop_names_the_smoke_resources():
    crash = copy.deepcopy(CRASH_OOM)
    finding = decided(job_findings(state(job(), job_pod([crash], phase="Running")), "dask-smoke", None, SMOKE), 0)
    assert finding.cause.endswith("raise dask.smoke_resources.limits.memory (now 128Mi)")


def test_a_job_pod_that_crashes_otherwise_is_left_to_the_jobs_backoff_limit():
    crash = copy.deepcopy(CRASH_ERROR)
    assert job_findings(state(job(), job_pod([crash], phase="Running")), "dask-smoke", None, SMOKE) == []


def test_a_failed_job_says_its_pod_ran_out_of_memory():
    failed = job(
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ]
    )
    ended = container({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    found = state(failed, job_pod([ended], phase="Failed"))
    assert job_progress(found, "dask-smoke")[:2] == (True, False)
    assert job_failure_cause(found, "dask-smoke", SMOKE) == (
        "container check of pod dask-smoke-x1 ran out of memory (OOMKilled at its memory limit of 128Mi): "
        "raise dask.smoke_resources.limits.memory (now 128Mi)"
    )
    assert job_findings(found, "dask-smoke", None, SMOKE) == [], "an ended Job is not stuck"


# ---------------------------------------------------------------- Plan: which setting sizes which Deployment


@pytest.mark.parametrize(
    ("service", "instance", "deployment_name", "expected"),
    [
        ("mlflow", "mlflow", "mlflow", "mlflow.resources"),
        ("mlflow", "tracking", "tracking", "mlflow.resources"),
        ("dask", "dask", "dask-worker", "dask.worker_resources"),
        ("dask", "team", "team-scheduler", "dask.scheduler_resources"),
        ("storage", "storage", "storage", "storage.resources"),
        ("dask", "dask", "unrelated", None),
    ],
)
def test_plans_name_the_resources_setting_of_each_deployment(service, instance, deployment_name, expected):
    assert Plan(service, instance, [], [deployment_name], 300).resources_setting(deployment_name) == expected


def test_a_plan_may_name_the_setting_itself():
    plan = Plan(
        "dask",
        "dask",
        [],
        ["dask-worker"],
        300,
        resources={"dask-worker": "dask.worker_resources (or --worker-memory)"},
    )
    assert plan.resources_setting("dask-worker") == "dask.worker_resources (or --worker-memory)"


# ---------------------------------------------------------------- the waits, with kubectl's answers


class Answers:
    """kubectl's answers by argv: `get <kinds>` gives a state, `get events` events, anything else text."""

    def __init__(self, get: dict, events: dict[str, list[dict]] | None = None):
        self.get, self.events = get, events or {}
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, kubectl, *args, stdin=None, timeout=60, check=True):
        self.calls.append(args)
        if args[:2] == ("get", "events") and "-o" in args:
            selector = args[args.index("--field-selector") + 1]
            name = dict(part.split("=") for part in selector.split(","))["involvedObject.name"]
            return Result(0, json.dumps({"kind": "List", "items": self.events.get(name, [])}), "")
        if args[0] == "get" and args[1] in self.get:
            return Result(0, json.dumps(self.get[args[1]]), "")
        return Result(0, f"(output of kubectl {' '.join(args)})", "")

    def gets(self, kinds: str) -> int:
        return sum(1 for a in self.calls if a[:2] == ("get", kinds))


@pytest.fixture
def lines(monkeypatch):
    monkeypatch.setattr(kube, "pause", lambda seconds: None)
    return []


def kubectl_with(answers: Answers, monkeypatch, lines) -> Kubectl:
    monkeypatch.setattr(Kubectl, "run", lambda self, *args, **kwargs: answers(self, *args, **kwargs))
    return Kubectl(target("namespace"), out=lines.append)


ROLLOUT_KINDS = "deployments.apps,pods,replicasets.apps,persistentvolumeclaims"


def test_the_wait_stops_at_once_with_evidence_then_one_line(monkeypatch, lines):
    answers = Answers({ROLLOUT_KINDS: state(deployment(), replicaset(), pod(statuses=[CRASH_OOM]), claim("Bound"))})
    kubectl = kubectl_with(answers, monkeypatch, lines)
    with pytest.raises(PlaybookError) as error:
        kubectl.wait_for_deployment("mlflow", "app.kubernetes.io/name=mlflow", 300, "mlflow", "mlflow.resources")
    message = str(error.value)
    assert message.startswith("mlflow: container mlflow of pod mlflow-958576bb9-ld9n6 ran out of memory (OOMKilled")
    assert message.endswith("raise mlflow.resources.limits.memory (now 768Mi)") and "\n" not in message
    text = "\n".join(lines)
    assert (
        lines[0]
        == "mlflow: 0/1 available, 1 updated; mlflow-958576bb9-ld9n6 Running (CrashLoopBackOff, last OOMKilled) [0s/300s]"
    )
    assert lines[1].startswith(
        "mlflow: stuck: container mlflow of pod mlflow-958576bb9-ld9n6: CrashLoopBackOff, last ended OOMKilled"
    )
    assert (
        "--- last logs of container mlflow before its restart: kubectl logs mlflow-958576bb9-ld9n6 -c mlflow --previous --tail=30"
        in text
    )
    assert answers.gets(ROLLOUT_KINDS) == 1, "one poll"
    assert not any(a[:2] == ("get", "events") and "-o" in a for a in answers.calls), "no events fetched for a crash"


def test_a_healthy_poll_costs_one_get_and_a_claim_poll_one_more(monkeypatch, lines):
    pending = state(deployment(), replicaset(), pod(phase="Pending", node=None, conditions=[UNBOUND]), claim())
    failed = event("FailedBinding", "no persistent volumes available for this claim and no storage class is set")
    answers = Answers({ROLLOUT_KINDS: pending}, {"mlflow-db": [failed]})
    kubectl = kubectl_with(answers, monkeypatch, lines)
    clock = [0.0]
    monkeypatch.setattr(kube.time, "monotonic", lambda: clock[0])

    def tick(seconds):
        clock[0] += 2

    monkeypatch.setattr(kube, "pause", tick)
    with pytest.raises(PlaybookError) as error:
        kubectl.wait_for_deployment("mlflow", "app.kubernetes.io/name=mlflow", 300, "mlflow", "mlflow.resources")
    assert "volume claim mlflow-db (storageClassName: none, so the default class) is not bound (FailedBinding" in str(
        error.value
    )
    polls = answers.gets(ROLLOUT_KINDS)
    assert polls == 6, "decided 10s after it was first seen, polling every 2s"
    event_gets = [a for a in answers.calls if a[:2] == ("get", "events") and "-o" in a]
    assert len(event_gets) == polls, "one events call per poll, for the claim only"
    assert "--- events of PersistentVolumeClaim mlflow-db" in "\n".join(lines)


def test_a_job_refused_by_quota_stops_its_wait_with_one_line(monkeypatch, lines):
    refused = event(
        "FailedCreate",
        f"Error creating: {QUOTA_MESSAGE}",
        kind="Job",
        name="dask-smoke",
        uid="uid-job",
        source="job-controller",
    )
    answers = Answers({"jobs.batch,pods": state(job())}, {"dask-smoke": [refused]})
    kubectl = kubectl_with(answers, monkeypatch, lines)
    with pytest.raises(PlaybookError) as error:
        wait_for_job(
            kubectl, "dask-smoke", "app.kubernetes.io/name=dask-smoke", 300, "dask/smoke-job", "dask.smoke_resources"
        )
    assert str(error.value).startswith("dask/smoke-job: job dask-smoke cannot create pods: exceeded quota: budget")
    assert lines[0].startswith("dask/smoke-job: no pod yet: Error creating: pods")


def test_a_failed_job_reports_why_it_ended(monkeypatch, lines):
    failed = job(
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ]
    )
    ended = container({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    answers = Answers({"jobs.batch,pods": state(failed, job_pod([ended], phase="Failed"))})
    kubectl = kubectl_with(answers, monkeypatch, lines)
    succeeded, detail = wait_for_job(kubectl, "dask-smoke", "x=y", 300, "dask/smoke-job", "dask.smoke_resources")
    assert not succeeded
    assert detail.startswith(
        "BackoffLimitExceeded: Job has reached the specified backoff limit; dask-smoke-x1 Failed (OOMKilled, exit code 137); "
    )
    assert detail.endswith("raise dask.smoke_resources.limits.memory (now 128Mi)")
