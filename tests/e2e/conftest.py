"""End-to-end fixtures: a real Kubernetes API per xdist worker, a fresh namespace per test,
and the tasks run as a user would run them (the CLI in a subprocess) in each mode.

Providers: envtest (real kube-apiserver + etcd from binaries) is found automatically;
`--provider existing --kubeconfig PATH` runs against a cluster you name.

Real pods: the tests that need running containers (`real_session`) run on the real-node lab,
found automatically from its kubeconfig (tests/e2e/lab.py), or on the cluster named by
`--provider existing|kind`; without one they skip with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import BUCKET, QUIET_ENV, S3Server, serve_s3
from tests.e2e import lab
from tests.e2e.controlplane import ControlPlane, FakeKubelet, find_binaries, why_missing
from tests.e2e.kind import (
    install_vcluster,
    kind_available,
    kind_cluster,
    release_kind_cluster,
    token_kubeconfig,
)

MODES = ["namespace", "vcluster"]
FAKE_NODE_LABEL = {"vcluster.loft.sh/fake-node": "true"}
# A chart with the dask-gateway chart's CRD, cluster role and pods, for clusters without a route to helm.dask.org.
STANDIN_CHART = Path(__file__).parent / "charts" / "dask-gateway"
CLI = str(Path(sys.executable).parent / "playbooks")
ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@dataclass
class Cluster:
    provider: str
    admin_kubeconfig: Path
    plane: ControlPlane | None = None
    kubelet: FakeKubelet | None = None

    @property
    def pods_run(self) -> bool:
        """Whether pods really run (kind, existing) or are only reported Ready (envtest)."""
        return self.provider != "envtest"

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(self.admin_kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=60, check=check,
        )  # fmt: skip


@pytest.fixture(scope="session")
def cluster(request, tmp_path_factory):
    provider = request.config.getoption("--provider")
    if provider in ("auto", "envtest"):
        binaries = find_binaries()
        if binaries is None:
            pytest.skip(why_missing() + "; or run with --provider existing --kubeconfig PATH")
        plane = ControlPlane(tmp_path_factory.mktemp("envtest"), binaries).start()
        kubelet = FakeKubelet(plane, labels=FAKE_NODE_LABEL).start()
        yield Cluster("envtest", plane.admin_kubeconfig, plane, kubelet)
        kubelet.stop()
        plane.stop()
    elif provider == "existing":
        kubeconfig = request.config.getoption("--kubeconfig")
        if not kubeconfig:
            pytest.skip("existing provider: pass --kubeconfig PATH")
        yield Cluster("existing", Path(kubeconfig))
    elif provider == "kind":
        reason = kind_available()
        if reason:
            pytest.skip(f"kind provider: {reason}; install Docker, kind and kubectl")
        worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
        yield Cluster("kind", kind_cluster(tmp_path_factory, worker, request.config.getoption("--keep-cluster")))
    else:
        pytest.skip(f"provider {provider}: unknown")


@pytest.fixture(scope="session")
def real_cluster(request):
    """A cluster whose pods really run: the lab, or the cluster --provider existing/kind names."""
    if request.config.getoption("--provider") in ("existing", "kind"):
        return request.getfixturevalue("cluster")
    kubeconfig, why = lab.find_lab()
    if kubeconfig is None:
        pytest.skip(f"real pods: {why}; or run with --provider existing --kubeconfig PATH")
    return Cluster("lab", kubeconfig)


@pytest.fixture(scope="session")
def lab_s3(real_cluster, tmp_path_factory):
    """The platform's object storage, outside the cluster: a real S3 server on an address pods reach.

    On the lab that is the bridge address. Elsewhere None: sessions then get a bucket from
    `storage.up` (MinIO) inside the cluster.
    """
    if real_cluster.provider != "lab":
        yield None
        return
    with serve_s3(lab.BRIDGE_ADDRESS, tmp_path_factory.mktemp("lab-moto")) as server:
        yield server


@pytest.fixture(scope="session")
def vcluster_target(cluster):
    """vCluster mode: on kind, a real vCluster per xdist worker; elsewhere the cluster itself (admin)."""
    if cluster.provider != "kind":
        return cluster
    name = f"vc-{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}"
    return Cluster("kind", install_vcluster(cluster.admin_kubeconfig, name, f"vcluster-{name}"))


def pytest_sessionfinish(session, exitstatus):
    release_kind_cluster(session.config)


@dataclass
class Session:
    """One simulated Datalab session: credentials of its mode, a namespace, an environment."""

    mode: str
    namespace: str
    kubeconfig: Path
    env: dict[str, str]
    cluster: Cluster
    tmp: Path
    outputs: list[str] = field(default_factory=list)
    s3: S3Server | None = None  # real_session: the object storage pods reach (None: storage.up's)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [CLI, *args], cwd=self.tmp, env={**self.env, **(env or {})},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        self.outputs.append(f"$ playbooks {' '.join(args)}\n{result.stdout}{result.stderr}")
        return result

    def labelled(self, selector: str = "app.kubernetes.io/managed-by=datalab-playbooks") -> list[str]:
        kinds = "deployments,services,secrets,configmaps,persistentvolumeclaims,jobs"
        out = self.cluster.kubectl("get", kinds, "-n", self.namespace, "-l", selector, "-o", "name")
        return sorted(out.stdout.split())

    def objects(self) -> dict[str, dict]:
        out = self.cluster.kubectl(
            "get", "deployments,services,secrets,configmaps,persistentvolumeclaims", "-n", self.namespace,
            "-l", "app.kubernetes.io/managed-by=datalab-playbooks", "-o", "json", "--show-managed-fields",
        )  # fmt: skip
        return {f"{i['kind']}/{i['metadata']['name']}": i for i in json.loads(out.stdout)["items"]}


# `edit` in {ns} and read on namespaces for the ServiceAccount `session` of {sa_ns}: the same
# namespace for a session's own credentials, the workshop namespace for a session pod.
NAMESPACE_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: session, namespace: {sa_ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: session-edit, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}}
subjects: [{{kind: ServiceAccount, name: session, namespace: {sa_ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {ns}-namespace-reader}}
rules: [{{apiGroups: [""], resources: [namespaces], verbs: [get, list, watch]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {ns}-namespace-reader}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {ns}-namespace-reader}}
subjects: [{{kind: ServiceAccount, name: session, namespace: {sa_ns}}}]
"""


def _session_credentials(cluster: Cluster, namespace: str, mode: str, tmp: Path) -> Path:
    if mode == "vcluster":
        return cluster.admin_kubeconfig
    cluster.kubectl("apply", "-f", "-", stdin=NAMESPACE_RBAC.format(ns=namespace, sa_ns=namespace))
    token = cluster.kubectl("create", "token", "session", "-n", namespace, "--duration=2h").stdout.strip()
    if cluster.plane is not None:
        return cluster.plane.write_kubeconfig(f"session-{namespace}", token, namespace=namespace, context="session")
    return token_kubeconfig(cluster.admin_kubeconfig, tmp / "session.kubeconfig", token, namespace)


def new_session(cluster: Cluster, mode: str, namespace: str, tmp: Path, s3_server) -> Session:
    """Create the namespace and the mode's credentials; the environment a Datalab session has."""
    cluster.kubectl("create", "namespace", namespace)
    kubeconfig = _session_credentials(cluster, namespace, mode, tmp)
    home = tmp / "home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "KUBECONFIG": str(kubeconfig),
        "WORKSHOP_NAMESPACE": s3_server.bucket,
        **s3_server.env(),
        **QUIET_ENV,
        "PYTHONPATH": str(ROOT),
    }
    # The vCluster context sets no namespace: the tasks get it from configuration in tests.
    env["SESSION_NAMESPACE" if mode == "namespace" else "INVOKE_TARGET_NAMESPACE"] = namespace
    return Session(mode, namespace, kubeconfig, env, cluster, tmp)


@pytest.fixture(params=MODES)
def session(request, cluster, tmp_path, s3_server):
    """A fresh namespace per test, with credentials as a Datalab session of that mode has them."""
    mode = request.param
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    namespace = f"pb-{worker}-{uuid.uuid4().hex[:6]}"
    cluster = request.getfixturevalue("vcluster_target") if mode == "vcluster" else cluster
    session = new_session(cluster, mode, namespace, tmp_path, s3_server)
    if cluster.pods_run:
        # Pods cannot reach the test's S3 server on 127.0.0.1: give MLflow a bucket in the cluster.
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
            session.env.pop(key)
        store = session.run("storage.up", "--bucket", s3_server.bucket)
        assert store.returncode == 0, store.stdout + store.stderr
    yield session
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print("\n".join(session.outputs))
        print(cluster.kubectl("get", "all,events", "-n", namespace, check=False).stdout)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    if mode == "namespace":
        cluster.kubectl("delete", "clusterrole,clusterrolebinding", f"{namespace}-namespace-reader", check=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def all_services(session):
    """The session, able to install every service: helm on PATH and, in vCluster mode, the stand-in gateway chart."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{session.env['PATH']}"
    if session.mode == "vcluster":
        if not shutil.which("helm", path=path):
            pytest.skip("helm is not installed: run scripts/setup.sh")
        session.env["INVOKE_GATEWAY_CHART"] = str(STANDIN_CHART)
    session.env["PATH"] = path
    return session


# The Datalab `medium` budget (shared/docs/datalab.md), as a namespace-mode session has it.
MEDIUM_QUOTA = """
apiVersion: v1
kind: ResourceQuota
metadata: {{name: budget, namespace: {ns}}}
spec:
  hard: {{limits.cpu: "2", limits.memory: 2Gi, persistentvolumeclaims: "6", services: "10", secrets: "25"}}
"""


@pytest.fixture(params=MODES)
def real_session(request, real_cluster, tmp_path, lab_s3):
    """A Datalab-shaped session on a cluster whose pods run: namespace mode with the `medium` quota and
    an `edit` token, or vCluster mode with admin credentials; object storage outside the cluster."""
    mode = request.param
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    namespace = f"rp-{mode[:2]}-{worker}-{uuid.uuid4().hex[:5]}"
    s3 = lab_s3 or S3Server("http://unused.invalid", BUCKET)
    session = new_session(real_cluster, mode, namespace, tmp_path, s3)
    session.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{session.env['PATH']}"
    if mode == "namespace":
        real_cluster.kubectl("apply", "-f", "-", stdin=MEDIUM_QUOTA.format(ns=namespace))
    if lab_s3 is None:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
            session.env.pop(key)
        store = session.run("storage.up", "--bucket", BUCKET)
        assert store.returncode == 0, store.stdout + store.stderr
    session.s3 = lab_s3
    yield session
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print("\n".join(session.outputs))
        print(real_cluster.kubectl("get", "all,events,pvc", "-n", namespace, check=False).stdout)
    real_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    if mode == "namespace":
        real_cluster.kubectl("delete", "clusterrole,clusterrolebinding", f"{namespace}-namespace-reader", check=False)
