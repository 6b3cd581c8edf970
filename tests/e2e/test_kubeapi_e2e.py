"""The in-process API client (playbooks.kubeapi) against a real API server, in both modes.

Each supported credential form answers detection with no kubectl at all (the kubectl named
does not exist: only the in-process client can have answered) and gives kubectl's answers;
an exec plugin falls back to kubectl. The server-side diff and the label lists agree with
kubectl's, and a failure reads exactly as kubectl's one-line error.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from playbooks import kubeapi
from playbooks.errors import PlaybookError
from playbooks.kube import Kubectl
from playbooks.kubeconfig import locate_kubeconfig
from playbooks.probe import probe
from playbooks.procs import free_port
from playbooks.target import decide_mode, detect

NO_KUBECTL = "/nonexistent/kubectl"
OFF = {kubeapi.DIRECT_ENV: "0"}


def session_parts(session) -> tuple[dict, dict]:
    """(cluster entry, user entry) of the session's kubeconfig: a token and a CA file."""
    config = yaml.safe_load(session.kubeconfig.read_text())
    return config["clusters"][0]["cluster"], config["users"][0]["user"]


def write_kubeconfig(folder: Path, cluster: dict, user: dict, namespace: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
        "current-context": "x",
    }
    path = folder / "config"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def client_certificate(session, folder: Path) -> tuple[Path, Path]:
    """A client certificate the API server trusts (signed by its --client-ca-file), with the session's rights."""
    plane = session.cluster.plane
    if plane is None:
        pytest.skip("a client certificate needs the envtest control plane's CA key")
    ns = session.namespace
    user, groups = (f"cert-{ns}", "") if session.mode == "namespace" else (f"cert-admin-{ns}", "/O=system:masters")
    if session.mode == "namespace":
        session.cluster.kubectl("create", "rolebinding", "cert-edit", "--clusterrole=edit", f"--user={user}", "-n", ns)
    folder.mkdir(parents=True, exist_ok=True)
    key, csr, cert = folder / "client.key", folder / "client.csr", folder / "client.crt"
    ca, ca_key = plane.workdir / "serving.crt", plane.workdir / "serving.key"
    for args in (
        ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={user}{groups}", "-keyout", key, "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "1", "-out", cert],
    ):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)
    key.chmod(0o600)
    return cert, key


def forms(session, tmp: Path) -> dict[str, Path]:
    """A kubeconfig for each credential form the direct client supports."""
    cluster, user = session_parts(session)
    ca = Path(cluster["certificate-authority"])
    ns = session.namespace
    token_file = tmp / "token-form" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(user["token"] + "\n")
    token_file.chmod(0o600)
    cert, key = client_certificate(session, tmp / "cert")
    server = cluster["server"]
    return {
        "token, certificate-authority file": write_kubeconfig(tmp / "token", cluster, {"token": user["token"]}, ns),
        # A relative tokenFile is relative to the kubeconfig's folder, as kubectl reads it.
        "tokenFile (relative), certificate-authority-data": write_kubeconfig(
            tmp / "token-form", {"server": server, "certificate-authority-data": b64(ca)}, {"tokenFile": "token"}, ns
        ),
        "client-certificate/key files, tls-server-name": write_kubeconfig(
            tmp / "cert-files",
            {"server": server, "certificate-authority": str(ca), "tls-server-name": "localhost"},
            {"client-certificate": str(cert), "client-key": str(key)},
            ns,
        ),
        "client-certificate/key data, insecure-skip-tls-verify": write_kubeconfig(
            tmp / "cert-data",
            {"server": server, "insecure-skip-tls-verify": True},
            {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            ns,
        ),
    }


def answers(probes) -> tuple:
    """What detection reads from its answers; the server lists the rules in no fixed order."""
    rules = sorted(json.dumps(rule, sort_keys=True) for rule in probes.rules)
    return probes.can_create_crds, rules, probes.fake_nodes, probes.rules_incomplete


def source_of(kubeconfig: Path, tmp: Path):
    return locate_kubeconfig({"KUBECONFIG": str(kubeconfig)}, home=tmp, service_account_dir=tmp / "no-sa")


def test_every_credential_form_is_answered_in_process_as_kubectl_answers(session, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != kubeapi.DIRECT_ENV}
    for form, kubeconfig in forms(session, tmp_path).items():
        source = source_of(kubeconfig, tmp_path)
        assert kubeapi.client_for(source, env) is not None, form
        # No kubectl exists under that name: the answers can only have come in-process.
        direct = probe(source, session.namespace, 10, kubectl=NO_KUBECTL, env=env)
        by_kubectl = probe(source, session.namespace, 10, env={**env, **OFF})
        assert answers(direct) == answers(by_kubectl), form
        assert decide_mode(direct, source, {})[0] == session.mode, form


def test_an_exec_plugin_goes_through_kubectl(session, tmp_path):
    cluster, user = session_parts(session)
    plugin = tmp_path / "credential-plugin"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": user["token"]},
    }
    plugin.write_text(f"#!{sys.executable}\nimport json\nprint(json.dumps({credential!r}))\n")
    plugin.chmod(0o700)
    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
                          "interactiveMode": "Never"}}  # fmt: skip
    source = source_of(write_kubeconfig(tmp_path / "exec", cluster, exec_user, session.namespace), tmp_path)
    assert kubeapi.client_for(source, os.environ) is None
    found = probe(source, session.namespace, 10, env=os.environ)
    assert decide_mode(found, source, {})[0] == session.mode
    with pytest.raises(PlaybookError, match=r"^/nonexistent/kubectl not found"):
        probe(source, session.namespace, 10, kubectl=NO_KUBECTL, env=os.environ)


def docs_of(name: str, value: str, labels: dict[str, str]) -> list[dict]:
    meta = {"name": name, "labels": labels}
    pod_labels = {"app.kubernetes.io/instance": name}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"value": value}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": pod_labels},
                "template": {
                    "metadata": {"labels": {**pod_labels, **labels}},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}]},
                },
            },
        },
    ]


@pytest.fixture
def pair(session, monkeypatch):
    """(direct, by kubectl): two Kubectl on the session's target; the first has no kubectl binary at all."""
    for key, value in session.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(kubeapi.DIRECT_ENV, raising=False)
    target = detect(namespace=session.namespace, kubeconfig=str(session.kubeconfig), env=session.env)
    direct = Kubectl(target, binary=NO_KUBECTL, out=lambda line: None)
    assert direct.api is not None
    by_kubectl = Kubectl(target, out=lambda line: None)
    by_kubectl.__dict__["api"] = None
    return direct, by_kubectl


def test_the_server_side_diff_judges_as_kubectl_diff(pair, session):
    direct, by_kubectl = pair
    labels = {"app.kubernetes.io/managed-by": "datalab-playbooks", "app.kubernetes.io/name": "kubeapi-test"}
    docs = docs_of("kubeapi-diff", "one", labels)

    def both(docs: list[dict]) -> tuple[bool, bool]:
        return direct.differs(docs), by_kubectl.differs(docs)

    assert both(docs) == (True, True)  # nothing there yet
    by_kubectl.apply_now(docs)
    assert both(docs) == (False, False)  # the no-op
    assert both(docs_of("kubeapi-diff", "two", labels)) == (True, True)  # a changed value
    fewer = {k: v for k, v in labels.items() if k != "app.kubernetes.io/name"}
    assert both(docs_of("kubeapi-diff", "one", fewer)) == (True, True)  # a field this manager drops
    session.cluster.kubectl("scale", "deployment/kubeapi-diff", "--replicas=2", "-n", session.namespace)
    assert both(docs) == (True, True)  # another manager changed a field this one applies
    by_kubectl.apply_now(docs)
    assert both(docs) == (False, False)

    # The lists a readiness poll reads: the same objects, each with its kind (pods come and go after
    # the scale above, so they are compared by kind only).
    kinds, selector = "deployments.apps,configmaps,pods", "app.kubernetes.io/name=kubeapi-test"
    listed = [direct.get_json(kinds, selector), by_kubectl.get_json(kinds, selector)]
    names = [[(i["kind"], i["metadata"]["name"]) for i in state["items"] if i["kind"] != "Pod"] for state in listed]
    assert names[0] == names[1] == [("Deployment", "kubeapi-diff"), ("ConfigMap", "kubeapi-diff")], names
    assert [i["apiVersion"] for i in listed[0]["items"]][:2] == ["apps/v1", "v1"]
    pods = [(i["apiVersion"], i["kind"]) for i in listed[0]["items"][2:]]
    assert pods and set(pods) == {("v1", "Pod")}, pods


def test_a_failed_dry_run_reads_as_kubectl_diff_says_it(pair, session):
    """An invalid object: the in-process dry run is refused, kubectl runs and its error is the one raised."""
    _, by_kubectl = pair
    direct = Kubectl(by_kubectl.target, out=lambda line: None)  # the real kubectl behind the direct client
    assert direct.api is not None
    bad = docs_of("kubeapi-bad", "one", {"app.kubernetes.io/name": "kubeapi-test"})
    bad[1]["spec"]["replicas"] = -1
    errors = []
    for kubectl in (direct, by_kubectl):
        with pytest.raises(PlaybookError) as raised:
            kubectl.differs(bad)
        errors.append(str(raised.value))
    assert errors[0] == errors[1] and "replicas" in errors[0], errors


def error_of(source, namespace: str, env: dict) -> str:
    with pytest.raises(PlaybookError) as raised:
        probe(source, namespace, 5, env=env)
    return str(raised.value)


def test_errors_read_exactly_as_kubectl_errors(session, tmp_path):
    """A closed port, an unknown CA, an unknown token: the same one line with and without the direct client."""
    cluster, user = session_parts(session)
    ns = session.namespace
    stranger = tmp_path / "stranger.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=stranger",
         "-keyout", str(tmp_path / "stranger.key"), "-out", str(stranger)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    cases = {
        "closed port": ({**cluster, "server": f"https://127.0.0.1:{free_port()}"}, {"token": user["token"]}),
        "unknown CA": ({"server": cluster["server"], "certificate-authority": str(stranger)}, {"token": user["token"]}),
        "unknown token": (cluster, {"token": "not-a-valid-token"}),
    }
    env = {k: v for k, v in os.environ.items() if k != kubeapi.DIRECT_ENV}
    for name, (entry, credentials) in cases.items():
        source = source_of(write_kubeconfig(tmp_path / name.replace(" ", "-"), entry, credentials, ns), tmp_path)
        assert kubeapi.client_for(source, env) is not None, name
        direct, by_kubectl = error_of(source, ns, env), error_of(source, ns, {**env, **OFF})
        assert direct == by_kubectl, name
        assert "not-a-valid-token" not in direct and user["token"] not in direct
