"""A real control plane (envtest binaries) with a fake kubelet, and a namespace-mode session on it.

The session's credentials are those the e2e suite gives a namespace-mode session
(tests/e2e/conftest.py): a ServiceAccount bound to the `edit` ClusterRole in its namespace,
plus read access to namespaces; its kubeconfig context names the namespace.
"""

from __future__ import annotations

import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _common import BIN, ROOT, base_env

from tests.e2e.conftest import FAKE_NODE_LABEL, Cluster, _session_credentials
from tests.e2e.controlplane import ControlPlane, FakeKubelet, find_binaries, why_missing

# The session's object store: a moto S3 server. `up` asks it for the bucket (HeadBucket)
# only when it changes something, so timed no-op runs never call it.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIABENCHMARK0000001",
    "AWS_SECRET_ACCESS_KEY": "bench-secret-0123456789abcdef",
    "AWS_REGION": "us-east-1",
}
BUCKET = "ws-bench"


class SlowKubelet(FakeKubelet):
    """A fake kubelet that reports a pod Ready only `delay` seconds after it first sees it bound."""

    def __init__(self, plane: ControlPlane, delay: float, **kwargs):
        super().__init__(plane, **kwargs)
        self.delay = delay
        self._bound_at: dict[str, float] = {}

    def _tend(self, pod) -> None:
        meta, status = pod.metadata, pod.status
        starting = (
            meta.deletion_timestamp is None
            and pod.spec.node_name
            and status.phase not in ("Running", "Succeeded", "Failed")
        )
        if starting:
            first = self._bound_at.setdefault(meta.uid, time.monotonic())
            if time.monotonic() - first < self.delay:
                return
        super()._tend(pod)


@dataclass
class Session:
    namespace: str
    kubeconfig: Path
    env: dict[str, str]
    cluster: Cluster


def _raise_on_sigterm(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


@contextmanager
def s3_store() -> Iterator[dict[str, str]]:
    """A real S3-protocol server (moto) on 127.0.0.1 holding the bucket; yields the session's AWS_* variables."""
    import boto3

    from playbooks.procs import free_port, http_ok, start, stop_group, wait_until

    endpoint = f"http://127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        log = Path(tmp) / "moto.log"
        process = start(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", endpoint.rsplit(":", 1)[1]], base_env(Path(tmp)), log
        )
        try:
            wait_until(lambda: http_ok(f"{endpoint}/moto-api/"), 60, "moto_server", process, log)
            credentials = {k.lower(): v for k, v in S3_CREDENTIALS.items() if k != "AWS_REGION"}
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials).create_bucket(
                Bucket=BUCKET
            )
            yield {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "WORKSHOP_NAMESPACE": BUCKET}
        finally:
            stop_group(process.pid)


@contextmanager
def envtest(delay: float = 0.0) -> Iterator[Cluster]:
    """Start etcd, kube-apiserver, kube-controller-manager and a fake kubelet; stop them all at the end."""
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit(why_missing())
    signal.signal(signal.SIGTERM, _raise_on_sigterm)  # so that `finally` stops the process groups
    with tempfile.TemporaryDirectory(prefix="bench-envtest-") as tmp:
        plane = ControlPlane(Path(tmp) / "plane", binaries)
        kubelet = None
        try:
            started = time.monotonic()
            plane.start()
            if delay:
                kubelet = SlowKubelet(plane, delay, labels=FAKE_NODE_LABEL).start()
            else:
                kubelet = FakeKubelet(plane, labels=FAKE_NODE_LABEL).start()
            print(f"envtest control plane up in {time.monotonic() - started:.1f}s at {plane.server}", flush=True)
            yield Cluster("envtest", plane.admin_kubeconfig, plane, kubelet)
        finally:
            if kubelet is not None:
                kubelet.stop()
            plane.stop()


def namespace_session(cluster: Cluster, prefix: str, s3_env: dict[str, str]) -> Session:
    """A fresh namespace with namespace-mode credentials, and the environment a session has."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=cluster.plane.workdir))
    kubeconfig = _session_credentials(cluster, namespace, "namespace", home)
    env = base_env(
        home,
        KUBECONFIG=str(kubeconfig),
        SESSION_NAMESPACE=namespace,
        PYTHONPATH=str(ROOT),
        **s3_env,
    )
    return Session(namespace, kubeconfig, env, cluster)


def invoke_argv(*args: str) -> list[str]:
    """`invoke` of this environment (run it with cwd=ROOT, where tasks.py is)."""
    return [str(BIN / "invoke"), *args]
