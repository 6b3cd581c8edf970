"""MLflow's image upgrade against a real API server, in both modes: the order of operations as the API sees
it (check Job; SQLite: scale the old server to 0, migration Job, then the new Deployment; a failed migration:
the old server scaled back, unchanged) and the refusal of a newer schema, with nothing changed.

The node is played for the test's namespace by `UpgradeKubelet`: server pods run, and the Jobs' pods end as
the scenario says (the schema check's answer in the termination message, the migration's exit code), while it
records what the API shows at the moment each Job pod runs. The Deployments, ReplicaSets, Jobs and their
controllers are the real API server's and controller manager's.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from playbooks.defaults import MLFLOW_PREVIOUS_VERSION, MLFLOW_VERSION
from tests.conftest import one_error_line
from tests.e2e.controlplane import FakeKubelet

PREVIOUS = f"ghcr.io/mlflow/mlflow:v{MLFLOW_PREVIOUS_VERSION}-full"
CURRENT = f"ghcr.io/mlflow/mlflow:v{MLFLOW_VERSION}-full"
OLD_REVISION, HEAD = "b7e2c1a4d9f3", "dc11669786a5"  # MLflow 3.16.1's head, 3.17.2's
FAILURE = "RuntimeError: Cannot backfill trace analytics: spans row references missing trace_info row 'orphan'"


def answer(state: str, revision: str = OLD_REVISION) -> str:
    return json.dumps({"state": state, "revision": revision, "head": HEAD, "version": MLFLOW_VERSION})


class UpgradeKubelet(FakeKubelet):
    """Plays the node for one namespace (the shared fake kubelet leaves it alone): server pods run; a Job's
    pod ends with outcomes[step] = (exit code, termination message); what the API shows then is recorded."""

    def __init__(self, shared: FakeKubelet, namespace: str, outcomes: dict[str, tuple[int, str]]):
        super().__init__(shared.plane, shared.node)
        self.shared, self.namespace, self.outcomes = shared, namespace, outcomes
        self.seen: list[tuple] = []  # (step, server replicas, server image, server pods, job image)
        self.pods: dict[str, dict] = {}
        self.history: list[tuple[int, str]] = []  # the Deployment's (replicas, image), each change

    def start(self) -> UpgradeKubelet:
        from kubernetes import client

        api = self.plane.api()
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.shared.ignored_namespaces.add(self.namespace)
        self._thread = threading.Thread(target=self._loop, name="upgrade-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        super().stop()
        self.shared.ignored_namespaces.discard(self.namespace)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch_deployment()
                for pod in self.core.list_namespaced_pod(self.namespace, _request_timeout=5).items:
                    self._tend(pod)
            except Exception:  # the API may be restarting; keep playing the node
                pass
            self._stop.wait(0.1)

    def server(self) -> tuple[int, str]:
        found = self.apps.read_namespaced_deployment("mlflow", self.namespace)
        return found.spec.replicas, found.spec.template.spec.containers[0].image

    def _watch_deployment(self) -> None:
        now = self.server()
        if not self.history or self.history[-1] != now:
            self.history.append(now)

    def _tend(self, pod) -> None:
        meta = pod.metadata
        job = any(o.kind == "Job" for o in meta.owner_references or [])
        if not job or not pod.spec.node_name or meta.deletion_timestamp or pod.status.phase in ("Succeeded", "Failed"):
            super()._tend(pod)
            return
        step = meta.labels["app.kubernetes.io/component"]
        servers = self.core.list_namespaced_pod(
            self.namespace, label_selector="app.kubernetes.io/component=tracking-server"
        ).items
        self.seen.append((step, *self.server(), len(servers), pod.spec.containers[0].image))
        self.pods[step] = self.core.api_client.sanitize_for_serialization(pod)
        code, message = self.outcomes[step]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ended = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "message": message,
                 "startedAt": now, "finishedAt": now}  # fmt: skip
        container = pod.spec.containers[0]
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [
                {"name": container.name, "image": container.image, "imageID": f"fake://{container.image}",
                 "ready": False, "restartCount": 0, "state": {"terminated": ended}}
            ],
            "startTime": now,
        }  # fmt: skip
        self.core.patch_namespaced_pod_status(meta.name, meta.namespace, {"status": status})


@pytest.fixture
def old_server(session):
    """The previous MLflow release deployed; then the node is played by an UpgradeKubelet (started by the test)."""
    first = session.run("mlflow.up", env={"INVOKE_MLFLOW_IMAGE": PREVIOUS})
    assert first.returncode == 0, first.stdout + first.stderr
    kubelets = []

    def play(outcomes: dict[str, tuple[int, str]]) -> UpgradeKubelet:
        kubelet = UpgradeKubelet(session.cluster.kubelet, session.namespace, outcomes).start()
        kubelets.append(kubelet)
        return kubelet

    yield play
    for kubelet in kubelets:
        kubelet.stop()


def deployment(session) -> dict:
    return session.objects()["Deployment/mlflow"]


def in_order(text: str, *fragments: str) -> None:
    at = 0
    for fragment in fragments:
        found = text.find(fragment, at)
        assert found >= 0, f"{fragment!r} not after position {at} in:\n{text}"
        at = found + len(fragment)


def test_sqlite_upgrade_scales_down_migrates_then_rolls_out(session, old_server):
    kubelet = old_server({"schema-check": (0, answer("older")), "schema-migrate": (0, "")})
    up = session.run("mlflow.up")
    assert up.returncode == 0, up.stdout + up.stderr
    in_order(
        up.stdout,
        f"image changes from {PREVIOUS} to {CURRENT}",
        f"mlflow: database schema older (revision {OLD_REVISION}; MLflow {MLFLOW_VERSION} in {CURRENT} knows up to {HEAD})",
        "mlflow: scaled the old server to 0",
        "mlflow/scale-0: the old server's pods are gone",
        f"mlflow: migrating the database schema from {OLD_REVISION} to {HEAD}",
        "mlflow/schema-migrate: job succeeded",
        f"mlflow: database migrated to {HEAD}; rolling out {CURRENT}",
        "mlflow: applied changes",
        "mlflow: ready after",
    )
    # As the API saw it when each Job's pod ran: the check beside the old server, the migration in its place.
    assert kubelet.seen == [("schema-check", 1, PREVIOUS, 1, CURRENT), ("schema-migrate", 0, PREVIOUS, 0, CURRENT)]
    assert kubelet.history == [(1, PREVIOUS), (0, PREVIOUS), (1, CURRENT)]
    assert not [name for name in session.labelled() if name.startswith("job")], "the Jobs are deleted"

    # The Jobs' pods are the server's: same pod security, volumes, Secrets and environment (plus the URI).
    server = deployment(session)["spec"]["template"]["spec"]
    for step, pod in kubelet.pods.items():
        spec, container = pod["spec"], pod["spec"]["containers"][0]
        assert spec["securityContext"] == server["securityContext"]
        assert container["securityContext"] == server["containers"][0]["securityContext"]
        assert [v["name"] for v in spec["volumes"]] == [v["name"] for v in server["volumes"]]
        assert container["envFrom"] == server["containers"][0]["envFrom"]
        env = {v["name"]: v for v in container["env"]}
        assert all(env[v["name"]] == v for v in server["containers"][0]["env"]), step
        assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "sqlite:////mlflow/db/mlflow.db"
        assert spec["automountServiceAccountToken"] is False and spec["restartPolicy"] == "Never"
        db = next(m for m in container["volumeMounts"] if m["name"] == "db")
        assert db.get("readOnly", False) is (step == "schema-check")
    assert kubelet.pods["schema-migrate"]["spec"]["containers"][0]["command"] == [
        "sh", "-c", 'exec mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"'
    ]  # fmt: skip
    assert kubelet.pods["schema-migrate"]["spec"]["containers"][0]["resources"] == server["containers"][0]["resources"]

    again = session.run("mlflow.up")
    assert again.returncode == 0 and "mlflow: no change" in again.stdout and "schema" not in again.stdout


def test_failed_migration_scales_the_old_server_back_unchanged(session, old_server):
    before = deployment(session)["spec"]["template"]
    kubelet = old_server({"schema-check": (0, answer("older")), "schema-migrate": (1, f"Traceback ...\n{FAILURE}")})
    failed = session.run("mlflow.up")
    line = one_error_line(failed, (f"the database migration from {OLD_REVISION} to {HEAD} failed ({FAILURE})",))
    assert f"the old server ({PREVIOUS}) runs again, unchanged" in line
    in_order(failed.stdout, "mlflow: scaled the old server to 0", "mlflow/schema-migrate: job failed",
             f"mlflow: scaled {PREVIOUS} back to 1", "mlflow/scale-1: ready after")  # fmt: skip
    assert [seen[0] for seen in kubelet.seen] == ["schema-check", "schema-migrate"]
    assert kubelet.history == [(1, PREVIOUS), (0, PREVIOUS), (1, PREVIOUS)], "the new image never served"
    after = deployment(session)
    assert after["spec"]["template"] == before and after["status"].get("readyReplicas") == 1
    assert not [name for name in session.labelled() if name.startswith("job")]


def test_newer_schema_is_refused_with_nothing_changed(session, old_server):
    before = deployment(session)
    kubelet = old_server({"schema-check": (0, answer("newer", "ffffffff0003"))})
    dry = session.run("mlflow.up", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"mlflow: image changes from {PREVIOUS} to {CURRENT}: `up` first checks the database schema" in dry.stdout
    assert kubelet.seen == [] and deployment(session)["spec"] == before["spec"], "a dry run runs no Job"
    refused = session.run("mlflow.up")
    one_error_line(refused, ("revision ffffffff0003, newer than MLflow", "nothing was changed"))
    assert [seen[0] for seen in kubelet.seen] == ["schema-check"], "no migration"
    assert kubelet.history == [(1, PREVIOUS)], "the server never stopped"
    after = deployment(session)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    assert not [name for name in session.labelled() if name.startswith("job")]


# ---------------------------------------------------------------- real pods (the lab)


@pytest.mark.timeout(2400)  # real pods on a busy 2-core node: two rollouts and two Jobs
def test_upgrade_from_the_previous_release_on_real_pods(real_session):
    """The previous MLflow release serves MLflow and Dask's share of the quota; a user logs a run with an
    artifact; `mlflow.up` with the current image checks, migrates (the Job in the server's place) and rolls
    out; the run is read back. The pods' peak memory, the migration's included, is printed and bounded."""
    import contextlib

    from tests.e2e.test_real_pods_e2e import HEADROOM, memory_sampler, need_images
    from tests.e2e.user_clients import LOG_A_RUN, READ_A_RUN, forward, user_python

    session = real_session
    need_images(session, [PREVIOUS, CURRENT, defaults_image("dask")])
    sampler = memory_sampler(session)
    try:
        with sampler or contextlib.nullcontext():
            # MLflow and Dask: in namespace mode the `medium` quota is then nearly full (1920Mi of 2Gi).
            first = session.run("up", "--only", "mlflow,dask", env={"INVOKE_MLFLOW_IMAGE": PREVIOUS}, timeout=900)
            assert first.returncode == 0, first.stdout + first.stderr
            with forward(session.kubeconfig, session.namespace, "mlflow", 5000) as port:
                run_id = user_python(session.env, LOG_A_RUN, f"http://127.0.0.1:{port}")

            up = session.run("mlflow.up", timeout=1500)
            assert up.returncode == 0, up.stdout + up.stderr
            print(up.stdout)
            in_order(
                up.stdout,
                f"image changes from {PREVIOUS} to {CURRENT}",
                "mlflow: database schema older (revision ",
                "mlflow: scaled the old server to 0",
                "mlflow: migrating the database schema from ",
                "mlflow/schema-migrate: job succeeded",
                "mlflow: database migrated to ",
                "mlflow: ready after",
            )
            with forward(session.kubeconfig, session.namespace, "mlflow", 5000) as port:
                kept = json.loads(user_python(session.env, READ_A_RUN, f"http://127.0.0.1:{port}", run_id))
            assert kept == {"params": {"alpha": "0.5"}, "metrics": {"rmse": 0.25}, "text": "kept across down and up"}
            image = deployment(session)["spec"]["template"]["spec"]["containers"][0]["image"]
            assert image == CURRENT
            again = session.run("mlflow.up", timeout=600)
            assert again.returncode == 0 and "mlflow: no change" in again.stdout, again.stdout + again.stderr
        if sampler is not None:
            rows = sampler.rows()
            print("\n".join(row.row() for row in rows))
            # The migration is sampled all the while it runs; the check ends within a second or two, often
            # before the sampler sees its cgroup (its Job would have failed had it run out of its 96Mi).
            migration = [row for row in rows if row.pod.startswith("mlflow-schema-migrate-")]
            assert migration and all(row.samples >= 3 for row in migration), [row.row() for row in rows]
            over = [row.row() for row in rows if row.limit and row.ratio > HEADROOM]
            assert not over, f"working set above {HEADROOM:.0%} of the memory limit: {over}"
    finally:
        purge = session.run("down", "--purge", timeout=600)
    assert purge.returncode == 0, purge.stdout + purge.stderr


def defaults_image(service: str) -> str:
    from playbooks.defaults import DEFAULTS

    return DEFAULTS[service]["image"]
