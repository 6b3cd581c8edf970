"""A KUBECONFIG that lists several files (a:b), as kubectl allows: detection, then kubectl and helm.

No --kubeconfig flag takes a list: `--kubeconfig a:b` made every command after detection fail.
The list reaches kubectl and helm as their KUBECONFIG (playbooks/runner.py, child_env).
"""

from __future__ import annotations

import os

import pytest
import yaml

from playbooks.helm import Helm
from playbooks.kube import Kubectl
from playbooks.target import detect
from tests.conftest import tool

# A second file that names a context nobody uses: it must merge, not win.
OTHER = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "elsewhere", "cluster": {"server": "https://127.0.0.1:9"}}],
    "contexts": [{"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "nobody"}}],
    "users": [{"name": "nobody", "user": {"token": "not-a-token"}}],
}


@pytest.fixture
def listed(session, tmp_path, monkeypatch):
    other = tmp_path / "other.kubeconfig"
    other.write_text(yaml.safe_dump(OTHER))
    # The caller's own KUBECONFIG must not be what the children use.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "not-this-one"))
    return f"{session.kubeconfig}{os.pathsep}{other}"


def test_kubectl_and_helm_work_after_detection_with_a_kubeconfig_list(session, listed):
    namespace = session.namespace if session.mode == "vcluster" else None
    found = detect(namespace=namespace, env={**session.env, "KUBECONFIG": listed})
    assert (found.mode, found.namespace) == (session.mode, session.namespace), found.evidence
    assert found.source.kubeconfig == listed
    assert "--kubeconfig" not in found.kubectl_flags()

    kubectl = Kubectl(found, binary=tool("kubectl"))
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed"}, "data": {"a": "b"}}
    assert kubectl.apply([config]) is True
    assert [item["data"] for item in kubectl.live([config])] == [{"a": "b"}]
    assert kubectl.not_ready() is None

    helm = Helm(found, binary=tool("helm"))
    assert "--kubeconfig" not in helm.flags()
    assert helm.release("not-installed") is None


def test_the_status_task_works_with_a_kubeconfig_list(session, listed):
    result = session.run("status", env={"KUBECONFIG": listed})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"namespace {session.namespace}" in result.stdout + result.stderr
