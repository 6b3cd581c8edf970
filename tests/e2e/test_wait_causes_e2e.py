"""A rollout that cannot finish fails fast, with the evidence and one line naming the cause and the fix.

The node is played per namespace by `ScenarioKubelet`: instead of reporting pods Ready, it
reports what a real kubelet reports when a container is OOM-killed in a loop, when an image
cannot be pulled, or when the scheduler finds a pod's claim unbound. The Deployments,
ReplicaSets, claims, quota and PodSecurity admission are the real API server's and controller
manager's: a ResourceQuota or a namespace's pod-security level refuses pods for real.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.conftest import one_error_line
from tests.e2e.controlplane import FakeKubelet

TIMEOUT = "120"  # the rollout's deadline; every case must end well before it
FAST = 60


class ScenarioKubelet(FakeKubelet):
    """Plays the node for one namespace, which the shared fake kubelet leaves alone (it still
    removes the pods being deleted), and reports a scenario's state instead of Ready."""

    SCENARIOS = ("oom-loop", "image-pull", "unbound-claim")

    def __init__(self, shared: FakeKubelet, namespace: str, scenario: str):
        assert scenario in self.SCENARIOS
        super().__init__(shared.plane, shared.node)
        self.shared, self.namespace, self.scenario = shared, namespace, scenario

    def start(self) -> ScenarioKubelet:
        from kubernetes import client

        self.core = client.CoreV1Api(self.plane.api())
        self.shared.ignored_namespaces.add(self.namespace)
        self._thread = threading.Thread(target=self._loop, name=f"scenario-{self.scenario}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        super().stop()
        self.shared.ignored_namespaces.discard(self.namespace)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for pod in self.core.list_namespaced_pod(self.namespace, _request_timeout=5).items:
                    self._tend(pod)
            except Exception:  # the API may be restarting; keep playing the node
                pass
            self._stop.wait(0.3)

    def _tend(self, pod) -> None:

        meta = pod.metadata
        if meta.deletion_timestamp is not None or pod.status.container_statuses or _said(pod):
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.scenario == "unbound-claim":
            # What the scheduler says of a pod whose claim no one binds; the pod stays unbound.
            message = (
                "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: "
                "0/1 nodes are available: 1 Preemption is not helpful for scheduling."
            )
            condition = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastTransitionTime": now,
            }
            self.core.patch_namespaced_pod_status(
                meta.name, meta.namespace, {"status": {"phase": "Pending", "conditions": [condition]}}
            )
            return
        if not pod.spec.node_name:
            self._bind(meta)
            return
        if self.scenario == "oom-loop":
            phase = "Running"
            statuses = [
                {
                    "name": c.name, "image": c.image, "imageID": f"fake://{c.image}", "ready": False, "started": False,
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off 40s restarting failed container={c.name} pod={meta.name}_{meta.namespace}({meta.uid})"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": now, "finishedAt": now}},
                }
                for c in pod.spec.containers
            ]  # fmt: skip
        else:  # image-pull
            phase = "Pending"
            statuses = [
                {
                    "name": c.name, "image": c.image, "imageID": "", "ready": False, "started": False, "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{c.image}"'}},
                }
                for c in pod.spec.containers
            ]  # fmt: skip
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now},
        ]
        status = {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": statuses,
            "hostIP": "127.0.0.1",
            "startTime": now,
        }
        self.core.patch_namespaced_pod_status(meta.name, meta.namespace, {"status": status})


def _said(pod) -> bool:
    return any(c.type == "PodScheduled" and c.status == "False" for c in pod.status.conditions or [])


@pytest.fixture
def scenario(session):
    """Start a scenario for the session's namespace: scenario("oom-loop")."""
    if session.cluster.kubelet is None:
        pytest.skip("scenarios are played by the envtest provider's fake kubelet")
    started: list[ScenarioKubelet] = []

    def play(name: str) -> ScenarioKubelet:
        kubelet = ScenarioKubelet(session.cluster.kubelet, session.namespace, name).start()
        started.append(kubelet)
        return kubelet

    yield play
    for kubelet in started:
        kubelet.stop()


def timed(session, *args: str, env: dict[str, str] | None = None):
    began = time.monotonic()
    result = session.run(*args, env=env, timeout=200)
    return result, time.monotonic() - began


def test_oom_killed_in_a_loop_fails_fast_naming_the_memory_setting(session, scenario):
    scenario("oom-loop")
    result, seconds = timed(session, "mlflow.up", env={"INVOKE_MLFLOW_ROLLOUT_TIMEOUT": TIMEOUT})
    line = one_error_line(
        result,
        (
            "ran out of memory (OOMKilled at its memory limit of 768Mi)",
            "raise mlflow.resources.limits.memory (now 768Mi)",
        ),
    )
    assert line.startswith("error: mlflow: container mlflow of pod mlflow-"), line
    assert seconds < FAST, f"took {seconds:.0f}s for a {TIMEOUT}s deadline"
    out = result.stdout
    assert "Running (CrashLoopBackOff, last OOMKilled)" in out
    assert "mlflow: stuck: container mlflow of pod mlflow-" in out and "evidence follows" in out
    assert "--- pods: kubectl get pods" in out and "--- events: kubectl get events" in out
    assert "--- last logs of container mlflow before its restart: kubectl logs mlflow-" in out
    assert out.index("evidence follows") < out.index("--- last logs"), "the evidence comes before the error line"
    assert "not ready within" not in out + result.stderr


def test_an_image_the_cluster_cannot_pull_fails_fast_for_each_deployment(session, scenario):
    scenario("image-pull")
    result, seconds = timed(session, "dask.up", env={"INVOKE_DASK_ROLLOUT_TIMEOUT": TIMEOUT})
    line = one_error_line(
        result,
        (
            "cannot pull image ghcr.io/dask/dask:2026.8.0-py3.11",
            "(ImagePullBackOff: Back-off pulling image",
            "set dask.image to an image the nodes can pull",
        ),
    )
    assert line.startswith(("error: dask/dask-scheduler: ", "error: dask/dask-worker: ")), line
    assert seconds < FAST, f"took {seconds:.0f}s for a {TIMEOUT}s deadline"
    assert result.stdout.count("evidence follows") == 2, "both Deployments' waits stop early"


def test_a_claim_no_one_can_bind_fails_naming_the_claim_and_the_storage_class_setting(session, scenario):
    """The claim's FailedBinding comes from the real persistent-volume controller (no StorageClass in envtest)."""
    scenario("unbound-claim")
    result, seconds = timed(session, "mlflow.up", env={"INVOKE_MLFLOW_ROLLOUT_TIMEOUT": TIMEOUT})
    one_error_line(
        result,
        (
            "volume claim mlflow-db (storageClassName: none, so the default class) is not bound (FailedBinding: no persistent volumes available for this claim and no storage class is set)",
            "set mlflow.storage_class to a StorageClass",
        ),
    )
    assert seconds < FAST, f"took {seconds:.0f}s for a {TIMEOUT}s deadline"
    assert "--- events of PersistentVolumeClaim mlflow-db" in result.stdout


POD_QUOTA = """
apiVersion: v1
kind: ResourceQuota
metadata: {{name: budget, namespace: {ns}}}
spec:
  hard: {{pods: "0"}}
"""


def _quota_counts(session) -> None:
    """Admission refuses nothing until the quota controller has filled in the quota's status."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        quota = json.loads(
            session.cluster.kubectl("get", "resourcequota", "budget", "-n", session.namespace, "-o", "json").stdout
        )
        if "pods" in quota.get("status", {}).get("used", {}):
            return
        time.sleep(0.5)
    raise TimeoutError("the quota controller did not fill in the quota's status within 30s")


def test_a_replicaset_refused_by_the_quota_fails_the_wait_with_the_quotas_words(session):
    """The quota shrank under a running service and its pod went (evicted, deleted): `up` again
    changes nothing (so no quota preflight), waits, and says why no pod comes."""
    if session.cluster.plane is None:
        pytest.skip("needs the envtest provider's controller manager to refuse the pod for real")
    first = session.run("mlflow.up")
    assert first.returncode == 0, first.stdout + first.stderr
    session.cluster.kubectl("apply", "-f", "-", stdin=POD_QUOTA.format(ns=session.namespace))
    _quota_counts(session)
    session.cluster.kubectl(
        "delete", "pods", "-n", session.namespace, "-l", "app.kubernetes.io/name=mlflow", "--wait=true"
    )
    result, seconds = timed(session, "mlflow.up", env={"INVOKE_MLFLOW_ROLLOUT_TIMEOUT": TIMEOUT})
    # Current figures (the ReplicaSet's latest refusal): its condition still counts the deleted pod.
    line = one_error_line(
        result,
        (
            "the ReplicaSet of deployment mlflow cannot create pods: exceeded quota: budget, requested: pods=1, used: pods=0, limited: pods=0; free quota",
            "lower mlflow.resources",
        ),
    )
    assert "is forbidden" not in line
    assert "--- events of ReplicaSet mlflow-" in result.stdout
    assert "mlflow: no change" in result.stdout
    assert seconds < FAST, f"took {seconds:.0f}s for a {TIMEOUT}s deadline"


def test_pods_the_namespaces_pod_security_level_refuses_fail_the_wait_at_once(session):
    """Settings that break "restricted" in a namespace that enforces it: the real PodSecurity admission refuses each pod."""
    if session.cluster.plane is None:
        pytest.skip("needs the envtest provider's controller manager")
    session.cluster.kubectl("label", "namespace", session.namespace, "pod-security.kubernetes.io/enforce=restricted")
    (session.tmp / "invoke.yaml").write_text("security:\n  container:\n    allowPrivilegeEscalation: true\n")
    result, seconds = timed(session, "mlflow.up", env={"INVOKE_MLFLOW_ROLLOUT_TIMEOUT": TIMEOUT})
    one_error_line(
        result,
        (
            'cannot create pods: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false',
            "pod-security.kubernetes.io/enforce",
            "security.container",
        ),
    )
    assert seconds < FAST, f"took {seconds:.0f}s for a {TIMEOUT}s deadline"
