"""A real Kubernetes control plane from binaries (envtest): etcd, kube-apiserver, kube-controller-manager.

Binaries come from KUBEBUILDER_ASSETS, else /usr/local/kubebuilder/bin (controller-runtime's
convention), else the real-node lab's `bin/` (tests/e2e/lab.py); etcd may also come from PATH. Everything listens on 127.0.0.1 with free ports.
There is no kubelet: `FakeKubelet` binds pending pods to a node and marks them Running and
Ready, as kwok does, so the tasks' real waiting code runs unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from playbooks.procs import free_port, start, stop_group, wait_until

DEFAULT_ASSETS = Path("/usr/local/kubebuilder/bin")
ADMIN_TOKEN = "playbooks-envtest-admin-token"
# Metadata of every request made with service-account credentials (a session's), and of no
# other: the controller manager and the fake kubelet use the admin token and stay out.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "userGroups": ["system:serviceaccounts"]}, {"level": "None"}],
}


def _assets() -> Path:
    """KUBEBUILDER_ASSETS, else /usr/local/kubebuilder/bin, else the real-node lab's binaries."""
    from tests.e2e.lab import lab_bin

    if os.environ.get("KUBEBUILDER_ASSETS"):
        return Path(os.environ["KUBEBUILDER_ASSETS"])
    if not (DEFAULT_ASSETS / "kube-apiserver").exists() and (lab_bin() / "kube-apiserver").exists():
        return lab_bin()
    return DEFAULT_ASSETS


def find_binaries() -> dict[str, str] | None:
    """Paths of etcd, kube-apiserver and (optionally) kube-controller-manager, or None."""
    assets = _assets()
    found = {}
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        path = assets / name
        found[name] = str(path) if path.exists() else shutil.which(name)
    if not found["etcd"] or not found["kube-apiserver"]:
        return None
    return found


def why_missing() -> str:
    assets = _assets()
    return (
        f"envtest provider: no kube-apiserver/etcd in {assets} (set KUBEBUILDER_ASSETS, "
        "or install etcd-server and put kube-apiserver there)"
    )


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@dataclass
class ControlPlane:
    workdir: Path
    binaries: dict[str, str]
    # Audit log (JSON lines in workdir/audit.log, AUDIT_POLICY), written before each response returns.
    audit: bool = True

    def start(self) -> ControlPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.processes: list[subprocess.Popen] = []
        self._certificates()
        self._etcd()
        self._apiserver()
        self.admin_kubeconfig = self.write_kubeconfig("admin", ADMIN_TOKEN)
        if self.binaries.get("kube-controller-manager"):
            self._controller_manager()
        return self

    def stop(self) -> None:
        for process in reversed(getattr(self, "processes", [])):
            stop_group(process.pid)

    # ------------------------------------------------------------ faults

    def _process_of(self, binary: str) -> subprocess.Popen | None:
        return next((p for p in self.processes if p.args[0] == self.binaries.get(binary)), None)

    def stop_apiserver(self) -> None:
        """Stop the API server alone (etcd and the controller manager stay); its port goes quiet."""
        from playbooks.procs import tcp_ok

        stop_group(self._process_of("kube-apiserver").pid, grace=5)  # it drains watches for long; nothing to keep
        wait_until(lambda: not tcp_ok("127.0.0.1", self.port), 20, "kube-apiserver to stop listening")

    def start_apiserver(self) -> None:
        """Start the stopped API server again, as it was (same etcd, port, certificates, flags); wait for /readyz."""
        old = self._process_of("kube-apiserver")
        log = self.workdir / "kube-apiserver.log"
        process = start(list(old.args), dict(os.environ), log)
        self.processes[self.processes.index(old)] = process
        wait_until(self.ready, 90, "kube-apiserver", process, log)
        manager = self._process_of("kube-controller-manager")
        if manager is not None and manager.poll() is not None:  # it may give up while the API is away
            self.processes.remove(manager)
            self._controller_manager()

    def restart_apiserver(self, down_for: float = 0) -> None:
        self.stop_apiserver()
        time.sleep(down_for)
        self.start_apiserver()

    # ------------------------------------------------------------ pieces

    def _certificates(self) -> None:
        d = self.workdir
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(d / "serving.key"), "-out", str(d / "serving.crt"),
        )  # fmt: skip
        _openssl("genrsa", "-out", str(d / "sa.key"), "2048")
        (d / "tokens.csv").write_text(f"{ADMIN_TOKEN},admin,admin-uid,system:masters\n")

    def _etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        log = self.workdir / "etcd.log"
        process = start(
            [
                self.binaries["etcd"], "--name", "envtest", "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"envtest=http://127.0.0.1:{peer}",
            ],
            {**os.environ, "ETCD_UNSUPPORTED_ARCH": os.environ.get("ETCD_UNSUPPORTED_ARCH", "")},
            log,
        )  # fmt: skip
        self.processes.append(process)
        from playbooks.procs import tcp_ok

        wait_until(lambda: tcp_ok("127.0.0.1", client), 30, "etcd", process, log)

    def _apiserver(self) -> None:
        d = self.workdir
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        log = d / "kube-apiserver.log"
        self.audit_log = d / "audit.log"
        audit = []
        if self.audit:
            (d / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
            audit = [
                "--audit-policy-file", str(d / "audit-policy.yaml"),
                "--audit-log-path", str(self.audit_log), "--audit-log-mode", "blocking",
            ]  # fmt: skip
        process = start(
            [
                self.binaries["kube-apiserver"],
                "--etcd-servers", self.etcd_url,
                "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
                "--secure-port", str(self.port),
                "--tls-cert-file", str(d / "serving.crt"), "--tls-private-key-file", str(d / "serving.key"),
                "--client-ca-file", str(d / "serving.crt"),
                "--token-auth-file", str(d / "tokens.csv"),
                "--authorization-mode", "RBAC",
                "--service-account-issuer", "https://kubernetes.default.svc",
                "--service-account-key-file", str(d / "sa.key"),
                "--service-account-signing-key-file", str(d / "sa.key"),
                "--service-cluster-ip-range", "10.0.0.0/24",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--endpoint-reconciler-type", "none",
                *audit,
            ],
            dict(os.environ),
            log,
        )  # fmt: skip
        self.processes.append(process)

        wait_until(self.ready, 90, "kube-apiserver", process, log)

    def ready(self) -> bool:
        """Whether the API server answers /readyz with ok."""
        result = subprocess.run(
            ["kubectl", "--server", self.server, "--token", ADMIN_TOKEN,
             "--certificate-authority", str(self.workdir / "serving.crt"), "get", "--raw", "/readyz"],
            capture_output=True, timeout=10,
        )  # fmt: skip
        return result.returncode == 0

    def _controller_manager(self) -> None:
        d = self.workdir
        log = d / "kube-controller-manager.log"
        process = start(
            [
                self.binaries["kube-controller-manager"],
                "--kubeconfig", str(self.admin_kubeconfig),
                "--authentication-kubeconfig", str(self.admin_kubeconfig),
                "--authorization-kubeconfig", str(self.admin_kubeconfig),
                "--bind-address", "127.0.0.1", "--secure-port", "0",
                "--leader-elect=false",
                "--service-account-private-key-file", str(d / "sa.key"),
                "--root-ca-file", str(d / "serving.crt"),
                # No kubelet heartbeats: the node lifecycle controller would evict every pod.
                "--controllers", "*,-nodelifecycle,-nodeipam,-cloud-node-lifecycle,-service-lb-controller",
            ],
            dict(os.environ),
            log,
        )  # fmt: skip
        self.processes.append(process)
        time.sleep(0.5)
        if process.poll() is not None:
            raise RuntimeError(f"kube-controller-manager exited: {log.read_text()[-2000:]}")

    # ------------------------------------------------------------ credentials

    def write_kubeconfig(self, name: str, token: str, namespace: str | None = None, context: str | None = None) -> Path:
        context = context or f"envtest-{name}"
        ctx: dict = {"cluster": "envtest", "user": name}
        if namespace:
            ctx["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "envtest",
                    "cluster": {"server": self.server, "certificate-authority": str(self.workdir / "serving.crt")},
                }
            ],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": context, "context": ctx}],
            "current-context": context,
        }
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(self.admin_kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=60, check=check,
        )  # fmt: skip

    def api(self):
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.admin_kubeconfig), client_configuration=configuration)
        return client.ApiClient(configuration)


class FakeKubelet:
    """Plays the node: binds pending pods to it and reports them Running and Ready."""

    def __init__(self, plane: ControlPlane, node: str = "envtest-node", labels: dict[str, str] | None = None):
        self.plane, self.node = plane, node
        self.labels = labels or {}
        # Pods here stay Pending, to test what a stuck rollout looks like.
        self.ignored_namespaces: set[str] = set()
        self._stop = threading.Event()

    def start(self) -> FakeKubelet:
        from kubernetes import client

        self.core = client.CoreV1Api(self.plane.api())
        body = {
            "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node, **self.labels}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "FakeKubelet", "message": "envtest"}],
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            },
        }
        self.core.create_node(body)
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for pod in self.core.list_pod_for_all_namespaces(_request_timeout=5).items:
                    self._tend(pod)
            except Exception:  # the API may be restarting; keep playing the node
                pass
            self._stop.wait(0.3)

    def _bind(self, meta) -> None:
        """Schedule the pod to this node, as the scheduler would."""
        from kubernetes import client

        binding = client.V1Binding(
            metadata=client.V1ObjectMeta(name=meta.name),
            target=client.V1ObjectReference(kind="Node", name=self.node, api_version="v1"),
        )
        self.core.create_namespaced_binding(meta.namespace, binding, _preload_content=False)

    def _tend(self, pod) -> None:

        meta = pod.metadata
        if meta.namespace in self.ignored_namespaces and meta.deletion_timestamp is None:
            return
        if meta.deletion_timestamp is not None:
            self.core.delete_namespaced_pod(meta.name, meta.namespace, grace_period_seconds=0)
            return
        if not pod.spec.node_name:
            self._bind(meta)
            return
        if pod.status.phase in ("Succeeded", "Failed"):
            return
        owners = [o.kind for o in meta.owner_references or []]
        if "Job" in owners:
            self._complete(pod)
            return
        if pod.status.phase == "Running":
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = [
            {"type": kind, "status": "True", "lastTransitionTime": now}
            for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        statuses = [
            {
                "name": c.name,
                "image": c.image,
                "imageID": f"fake://{c.image}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod.spec.containers
        ]
        status = {
            "phase": "Running",
            "conditions": conditions,
            "containerStatuses": statuses,
            "podIP": "10.244.0.10",
            "hostIP": "127.0.0.1",
            "startTime": now,
        }
        self.core.patch_namespaced_pod_status(meta.name, meta.namespace, {"status": status})

    def _complete(self, pod) -> None:
        """A Job's pod: report it ran to completion (exit 0). What it would print is not known here."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        statuses = [
            {
                "name": c.name,
                "image": c.image,
                "imageID": f"fake://{c.image}",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}},
            }
            for c in pod.spec.containers
        ]
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
        ]
        status = {"phase": "Succeeded", "conditions": conditions, "containerStatuses": statuses, "startTime": now}
        self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})
