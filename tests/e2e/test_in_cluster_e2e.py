"""A session pod with only its mounted service account: no KUBECONFIG, no ~/.kube/config.

kubectl uses its in-cluster configuration only when no override flag is given; the playbooks
always pass --namespace (and the probes --request-timeout), with which kubectl falls back to
localhost:8080. So the playbooks write a kubeconfig that names the token *file*. Here the
"pod" is this machine: a ServiceAccount token from the real API server in a temporary
`serviceaccount` folder (token, ca.crt, namespace), KUBERNETES_SERVICE_HOST/PORT pointing at
the API server, and DATALAB_PLAYBOOKS_SERVICE_ACCOUNT_DIR naming the folder (a pod has it at
/var/run/secrets/kubernetes.io/serviceaccount, which a test cannot write).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlparse

from tests.conftest import QUIET_ENV
from tests.e2e.conftest import CLI, NAMESPACE_RBAC, ROOT


def api_address(cluster) -> tuple[str, str, bytes]:
    """Host, port and CA certificate of the API server, from the admin kubeconfig."""
    view = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    entry = view["clusters"][0]["cluster"]
    url = urlparse(entry["server"])
    if entry.get("certificate-authority-data"):
        ca = base64.b64decode(entry["certificate-authority-data"])
    else:
        ca = Path(entry["certificate-authority"]).read_bytes()
    return url.hostname, str(url.port or 443), ca


def test_a_session_pod_with_only_its_service_account_detects_namespace_mode_and_deploys(cluster, tmp_path):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    ns = f"pb-{worker}-sa-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    try:
        cluster.kubectl("apply", "-f", "-", stdin=NAMESPACE_RBAC.format(ns=ns, sa_ns=ns))
        token = cluster.kubectl("create", "token", "session", "-n", ns, "--duration=1h").stdout.strip()
        host, port, ca = api_address(cluster)
        mounted = tmp_path / "serviceaccount"
        mounted.mkdir()
        (mounted / "token").write_text(token)
        (mounted / "ca.crt").write_bytes(ca)
        (mounted / "namespace").write_text(ns)
        home, temporary = tmp_path / "home", tmp_path / "tmp"
        home.mkdir()
        temporary.mkdir()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),  # empty: no ~/.kube/config
            "TMPDIR": str(temporary),  # no XDG_RUNTIME_DIR in a pod: the kubeconfig goes here
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "DATALAB_PLAYBOOKS_SERVICE_ACCOUNT_DIR": str(mounted),
            **QUIET_ENV,
            "PYTHONPATH": str(ROOT),
        }
        outputs = []

        def run(*args: str) -> subprocess.CompletedProcess:
            result = subprocess.run([CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
            outputs.append(result.stdout + result.stderr)
            return result

        target = run("target")
        assert target.returncode == 0, target.stdout + target.stderr
        written = temporary / f"datalab-playbooks-{os.getuid()}" / "in-cluster.kubeconfig"
        assert "mode:       namespace" in target.stdout
        assert f"namespace:  {ns} (from service account)" in target.stdout
        assert f"api server: https://{host}:{port}" in target.stdout
        assert f"kubeconfig: {written} (written for the in-cluster service account in {mounted})" in target.stdout
        assert "yes create deployments.apps in " + ns in target.stdout

        assert stat.S_IMODE(written.stat().st_mode) == 0o600
        assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700
        text = written.read_text()
        assert token not in text and f"tokenFile: {mounted / 'token'}" in text

        # Every kubectl call after detection pins that kubeconfig (they pass --namespace).
        status = run("dask.status")
        assert status.returncode == 0 and f"dask: not deployed in namespace {ns}" in status.stdout, (
            status.stdout + status.stderr
        )
        up = run("dask.up", "--workers", "1")
        assert up.returncode == 0, up.stdout + up.stderr
        ready = cluster.kubectl("get", "deployment/dask-worker", "-n", ns, "-o", "jsonpath={.status.readyReplicas}")
        assert ready.stdout == "1"
        down = run("dask.down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert not any(token in output for output in outputs), "the token reached the output"
        assert list(home.iterdir()) in ([], [home / ".kube"]), "nothing but kubectl's cache in HOME"
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "clusterrole,clusterrolebinding", f"{ns}-namespace-reader", check=False)
