"""The tasks run from inside a session pod, as a Datalab runs them.

A pod in a "workshop" namespace runs as the session's service account, which may edit the
session namespace (SESSION_NAMESPACE, with the `medium` quota) and read namespaces, with the
project installed without extras. It runs `target`, `up`, `smoke`, `status` and `down`
twice over: with only the mounted service account (no kubeconfig), then with a kubeconfig
that points at the token *file*.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e import lab
from tests.e2e.conftest import MEDIUM_QUOTA, NAMESPACE_RBAC

# Real pods start in tens of seconds on a busy 2-core node: far beyond the suite's default timeout.
pytestmark = pytest.mark.timeout(1800)
SESSION_IMAGE = "datalab-playbooks/session:core"  # scripts/lab-images.sh builds it from pyproject's dependencies
ROOT = Path(__file__).resolve().parents[2]

SESSION_POD = """
apiVersion: v1
kind: Pod
metadata: {{name: session, namespace: {ws}}}
spec:
  serviceAccountName: session
  enableServiceLinks: false
  terminationGracePeriodSeconds: 1
  containers:
    - name: vscode
      image: {image}
      imagePullPolicy: IfNotPresent
      command: [sleep, infinity]
      envFrom: [{{secretRef: {{name: workspace-s3}}}}]
      env:
        - {{name: SESSION_NAMESPACE, value: {ns}}}
        - {{name: WORKSHOP_NAMESPACE, value: {bucket}}}
        - {{name: HOME, value: /tmp/home}}
        - {{name: PATH, value: "/opt/venv/bin:/tools:/usr/bin:/bin"}}
        - {{name: MLFLOW_DISABLE_TELEMETRY, value: "true"}}
        - {{name: DO_NOT_TRACK, value: "true"}}
      volumeMounts: [{{name: tools, mountPath: /tools, readOnly: true}}]
  volumes:
    - {{name: tools, hostPath: {{path: {tools}, type: Directory}}}}
"""

TOKEN_FILE_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: in-cluster, cluster: {server: "https://kubernetes.default.svc", certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt}}]
users: [{name: session, user: {tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token}}]
contexts: [{name: session, context: {cluster: in-cluster, user: session}}]
current-context: session
"""


def tools_folder(tmp: Path) -> Path:
    """kubectl and the project's wheel, for the pod to mount (no registry to pull from)."""
    tools = tmp / "tools"
    tools.mkdir()
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tools), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    kubectl = lab.lab_bin() / "kubectl"
    shutil.copy(kubectl if kubectl.exists() else shutil.which("kubectl"), tools / "kubectl")
    tools.chmod(0o755)
    return tools


def test_tasks_run_from_a_session_pod(real_cluster, lab_s3, tmp_path):
    if real_cluster.provider != "lab":
        pytest.skip("real pods: the session pod mounts files of this machine, so it runs on the lab only")
    missing = lab.missing_images(
        [SESSION_IMAGE, "ghcr.io/mlflow/mlflow:v3.17.2-full", "ghcr.io/dask/dask:2026.8.0-py3.11"]
    )
    if missing:
        pytest.skip(f"real pods: the lab's node lacks {', '.join(missing)}: run scripts/lab-images.sh")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    suffix = f"{worker}-{uuid.uuid4().hex[:5]}"
    ws, ns = f"rp-ws-{suffix}", f"rp-se-{suffix}"
    kubectl = real_cluster.kubectl
    outputs: list[str] = []

    def in_pod(*args: str, kubeconfig: bool = False, timeout: float = 900) -> subprocess.CompletedProcess:
        env = ["env", "KUBECONFIG=/tmp/home/token-file.kubeconfig"] if kubeconfig else []
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(real_cluster.admin_kubeconfig), "exec", "-n", ws, "session", "--",
             *env, "playbooks", *args],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        outputs.append(f"$ playbooks {' '.join(args)} (kubeconfig: {kubeconfig})\n{result.stdout}{result.stderr}")
        return result

    try:
        for name in (ws, ns):
            kubectl("create", "namespace", name)
        kubectl("apply", "-f", "-", stdin=NAMESPACE_RBAC.format(ns=ns, sa_ns=ws) + "---" + MEDIUM_QUOTA.format(ns=ns))
        kubectl(
            "create",
            "secret",
            "generic",
            "workspace-s3",
            "-n",
            ws,
            *(f"--from-literal={k}={v}" for k, v in lab_s3.env().items()),
        )
        tools = tools_folder(tmp_path)
        pod = SESSION_POD.format(ws=ws, ns=ns, bucket=lab_s3.bucket, image=SESSION_IMAGE, tools=tools)
        kubectl("apply", "-f", "-", stdin=pod)
        ready = kubectl("wait", "-n", ws, "--for=condition=Ready", "pod/session", "--timeout=180s", check=False)
        assert ready.returncode == 0, ready.stderr + kubectl("describe", "pod", "-n", ws, "session", check=False).stdout
        install = kubectl("exec", "-i", "-n", ws, "session", "--", "sh", "-c",
                          "pip install --quiet --no-deps /tools/*.whl && mkdir -p /tmp/home && cat > /tmp/home/token-file.kubeconfig",
                          stdin=TOKEN_FILE_KUBECONFIG, check=False)  # fmt: skip
        assert install.returncode == 0, install.stderr

        # Only the mounted service account: no kubeconfig anywhere.
        target = in_pod("target")
        assert target.returncode == 0, target.stdout + target.stderr
        assert f"namespace mode, namespace {ns}" in target.stdout and "SESSION_NAMESPACE" in target.stdout
        up = in_pod("up")
        assert up.returncode == 0, up.stdout + up.stderr
        smoke = in_pod("smoke")
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        assert "via in-cluster DNS" in smoke.stdout and "array" in smoke.stdout
        status = in_pod("status")
        assert status.returncode == 0 and "mlflow" in status.stdout, status.stdout + status.stderr

        # A kubeconfig that points at the token file.
        again = in_pod("target", kubeconfig=True)
        assert again.returncode == 0 and f"namespace mode, namespace {ns}" in again.stdout, again.stdout + again.stderr
        assert in_pod("up", kubeconfig=True).returncode == 0
        assert in_pod("smoke", kubeconfig=True).returncode == 0
        down = in_pod("down", "--purge", kubeconfig=True)
        assert down.returncode == 0, down.stdout + down.stderr
        left = kubectl(
            "get",
            "all,pvc,secrets,configmaps",
            "-n",
            ns,
            "-l",
            "app.kubernetes.io/managed-by=datalab-playbooks",
            "-o",
            "name",
        )
        assert left.stdout.split() == []
    except BaseException:
        print("\n".join(outputs))
        raise
    finally:
        kubectl("delete", "namespace", ws, ns, "--wait=false", check=False)
        kubectl("delete", "clusterrole,clusterrolebinding", f"{ns}-namespace-reader", check=False)
