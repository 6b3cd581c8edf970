"""Bad input: one line that names the fix, exit code 1, no traceback, nothing applied.

These cases fail before any API call, so they run everywhere; the ones that need an API
server (Forbidden, expired token, missing kubectl) are in tests/e2e/test_bad_input_e2e.py.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from playbooks.procs import free_port
from tests.conftest import QUIET_ENV

CLI = str(Path(sys.executable).parent / "playbooks")
# An unreachable cluster: these inputs must be refused before the API is even asked.
CLUSTER = {"KUBECONFIG": "@unreachable"}
CREDS = {**CLUSTER, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example-secret"}


def run(args, env, tmp_path):
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **QUIET_ENV}
    return subprocess.run([CLI, *args], env={**base, **env}, cwd=tmp_path, capture_output=True, text=True, timeout=60)


def unreachable_kubeconfig(tmp_path: Path) -> str:
    path = tmp_path / "unreachable.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{free_port()}", "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


CASES = [
    ("no bucket", ["mlflow.up"], {**CREDS}, "no bucket given: pass --bucket"),
    ("bucket with capitals", ["mlflow.up", "--bucket", "WS_Frank"], CREDS, "invalid bucket name 'WS_Frank'"),
    ("bucket too short", ["mlflow.up", "--bucket", "ab"], CREDS, "must be 3 to 63 characters"),
    ("bucket like an IP", ["mlflow.up", "--bucket", "192.168.1.1"], CREDS, "must not look like an IP"),
    ("bad default bucket", ["mlflow.up"], {**CREDS, "WORKSHOP_NAMESPACE": "Bad..Name"}, "invalid bucket name"),
    ("no credentials, no store", ["mlflow.up", "--storage", "env", "--bucket", "ws-frank"], CLUSTER, "no S3 credentials: export AWS_ACCESS_KEY_ID"),
    ("unknown storage", ["mlflow.up", "--storage", "nfs"], CREDS, "unknown --storage 'nfs'"),
    ("half credentials", ["mlflow.up", "--bucket", "ws-frank"], {**CLUSTER, "AWS_ACCESS_KEY_ID": "k"}, "export AWS_SECRET_ACCESS_KEY too"),
    ("endpoint with bucket", ["mlflow.up", "--bucket", "ws-frank"], {**CREDS, "AWS_ENDPOINT_URL": "http://s3:9000/ws-frank"}, "is not an endpoint"),
    ("invalid namespace", ["mlflow.up", "--bucket", "ws-frank", "--namespace", "Bad_NS"], CREDS, "invalid namespace 'Bad_NS'"),
    ("invalid name", ["mlflow.up", "--bucket", "ws-frank", "--name", "My.Server"], CREDS, "invalid service name"),
    ("bad prefix", ["mlflow.up", "--bucket", "ws-frank", "--prefix", "a b"], CREDS, "invalid artifact prefix"),
    ("local: unknown storage", ["mlflow.up", "--storage", "nfs"], {}, "unknown --storage 'nfs'"),
    ("local: storage not up", ["mlflow.up", "--storage", "local-s3"], {}, "run `invoke storage.up` first"),
    ("local: dry-run", ["mlflow.up", "--dry-run"], {}, "--dry-run is for the cluster modes"),
    ("local: storage in cluster", ["storage.up"], {"KUBECONFIG": "@unreachable", "INVOKE_TARGET_MODE": "namespace"}, "cannot reach the Kubernetes API"),
    ("missing kubeconfig file", ["target"], {"KUBECONFIG": "/nonexistent/config"}, "KUBECONFIG points to /nonexistent/config, which does not exist"),
    ("unknown mode", ["target", "--mode", "cluster"], {}, "unknown mode 'cluster'"),
    ("mode local with a cluster", ["target", "--mode", "kind"], CLUSTER, "unknown mode 'kind'"),
    ("unknown context", ["target"], {"INVOKE_TARGET_CONTEXT": "nope", "KUBECONFIG": "@unreachable"}, "context 'nope' is not in kubeconfig"),
    ("unreachable API", ["mlflow.up", "--bucket", "ws-frank"], {**CREDS, "KUBECONFIG": "@unreachable"}, "cannot reach the Kubernetes API at https://127.0.0.1:"),
    ("unreachable API, status", ["mlflow.status"], {"KUBECONFIG": "@unreachable"}, "cannot reach the Kubernetes API"),
]


@pytest.mark.parametrize(("case", "args", "env", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, args, env, message, tmp_path):
    env = {k: (unreachable_kubeconfig(tmp_path) if v == "@unreachable" else v) for k, v in env.items()}
    result = run(args, env, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
