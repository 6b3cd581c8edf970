"""Target detection on realistic inputs: Datalab kubeconfigs, environment, access-review answers."""

import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from playbooks.apierrors import api_error
from playbooks.errors import PlaybookError
from playbooks.helm import Helm
from playbooks.kube import Kubectl, Result
from playbooks.kubeconfig import KubeSource, locate_kubeconfig
from playbooks.probe import Probes, _answer, probe
from playbooks.procs import free_port
from playbooks.target import (
    NAMESPACED_NEEDS,
    Target,
    access_checks,
    choose_namespace,
    decide_mode,
    rule_allows,
)

# What a Datalab writes for namespace mode: a token, the session namespace in the context.
NAMESPACE_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [
        {
            "name": "cluster",
            "cluster": {
                "server": "https://kubernetes.default.svc",
                "certificate-authority": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            },
        }
    ],
    "contexts": [
        {"name": "session", "context": {"cluster": "cluster", "user": "session", "namespace": "ws-frank-s001"}}
    ],
    "current-context": "session",
    "users": [{"name": "session", "user": {"token": "eyJhbGciOi.fake.token"}}],
}

# What the platform mounts at /opt/kubeconfig/config in vCluster mode.
VCLUSTER_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [
        {"name": "my-vcluster", "cluster": {"server": "https://ws-frank-s001-vc.ws-frank-s001.svc.cluster.local:443"}}
    ],
    "contexts": [{"name": "my-vcluster", "context": {"cluster": "my-vcluster", "user": "my-vcluster"}}],
    "current-context": "my-vcluster",
    "users": [{"name": "my-vcluster", "user": {"client-certificate-data": "LS0t", "client-key-data": "LS0t"}}],
}

# SelfSubjectRulesReview answer for a ServiceAccount bound to `edit` in its namespace.
EDIT_RULES = (
    {
        "verbs": ["create", "delete", "deletecollection", "patch", "update"],
        "apiGroups": [""],
        "resources": ["pods", "pods/portforward", "services", "secrets", "configmaps", "persistentvolumeclaims"],
    },
    {
        "verbs": ["get", "list", "watch"],
        "apiGroups": [""],
        "resources": ["pods", "pods/log", "services", "secrets", "configmaps", "persistentvolumeclaims", "events"],
    },
    {
        "verbs": ["create", "delete", "deletecollection", "patch", "update", "get", "list", "watch"],
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets"],
    },
    {
        "verbs": ["create", "delete", "patch", "update", "get", "list", "watch"],
        "apiGroups": ["batch"],
        "resources": ["jobs"],
    },
    {
        "verbs": ["create", "delete", "deletecollection", "patch", "update", "get", "list", "watch"],
        "apiGroups": ["networking.k8s.io"],
        "resources": ["ingresses", "networkpolicies"],
    },
    {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["namespaces"]},
    {
        "verbs": ["create"],
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    },
)
ADMIN_RULES = ({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},)


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_kubeconfig_from_env_first(tmp_path):
    env_file = write(tmp_path / "vc" / "config", VCLUSTER_KUBECONFIG)
    write(tmp_path / "home" / ".kube" / "config", NAMESPACE_KUBECONFIG)
    source = locate_kubeconfig(
        {"KUBECONFIG": str(env_file)}, home=tmp_path / "home", service_account_dir=tmp_path / "sa"
    )
    assert source.context == "my-vcluster"
    assert source.server.endswith("-vc.ws-frank-s001.svc.cluster.local:443")
    assert source.context_namespace is None


def test_kubeconfig_from_home_when_no_env(tmp_path):
    write(tmp_path / "home" / ".kube" / "config", NAMESPACE_KUBECONFIG)
    source = locate_kubeconfig({}, home=tmp_path / "home", service_account_dir=tmp_path / "sa")
    assert (source.context, source.context_namespace) == ("session", "ws-frank-s001")


def test_kubeconfig_list_merges_first_wins(tmp_path):
    a = write(tmp_path / "a", {**NAMESPACE_KUBECONFIG, "current-context": None})
    b = write(tmp_path / "b", VCLUSTER_KUBECONFIG)
    source = locate_kubeconfig({"KUBECONFIG": f"{a}:{b}"}, home=tmp_path, service_account_dir=tmp_path / "sa")
    assert source.context == "my-vcluster"


def service_account(folder: Path, token: str = "t", namespace: str = "ws-frank") -> Path:
    """A mounted service account as a pod has it: token, ca.crt and namespace files."""
    folder.mkdir(parents=True)
    (folder / "token").write_text(token)
    (folder / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (folder / "namespace").write_text(namespace + "\n")
    return folder


def test_in_cluster_service_account_last(tmp_path):
    sa = service_account(tmp_path / "sa")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "XDG_RUNTIME_DIR": str(tmp_path)}
    source = locate_kubeconfig(env, home=tmp_path / "nohome", service_account_dir=sa)
    assert source.kubeconfig == str(tmp_path / f"datalab-playbooks-{os.getuid()}" / "in-cluster.kubeconfig")
    assert source.service_account == str(sa)
    assert source.server == "https://10.96.0.1:443"
    assert source.in_cluster_namespace == "ws-frank"
    assert choose_namespace(None, {}, source) == ("ws-frank", "service account")


def test_in_cluster_kubeconfig_points_at_the_token_file_and_holds_no_token(tmp_path):
    """kubectl reads its in-cluster config only without override flags: the playbooks write a kubeconfig."""
    token = "eyJhbGciOiJSUzI1NiJ9.planted-service-account-token.sig"
    sa = service_account(tmp_path / "sa", token=token, namespace="ws-frank")
    env = {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }
    (tmp_path / "run").mkdir()
    source = locate_kubeconfig(env, home=tmp_path / "nohome", service_account_dir=sa)
    path = Path(source.kubeconfig)
    text = path.read_text()
    assert token not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.parent == tmp_path / "run" / f"datalab-playbooks-{os.getuid()}"
    config = yaml.safe_load(text)
    assert config["users"][0]["user"] == {"tokenFile": str(sa / "token")}
    assert config["clusters"][0]["cluster"] == {
        "server": "https://10.96.0.1:443",
        "certificate-authority": str(sa / "ca.crt"),
    }
    context = config["contexts"][0]["context"]
    assert context["namespace"] == "ws-frank" and config["current-context"] == config["contexts"][0]["name"]
    # kubectl pins it by flag like any other kubeconfig; a second run leaves the file alone.
    target = Target("namespace", "ws-frank", "service account", source)
    assert target.kubectl_flags() == ["--kubeconfig", str(path), "--namespace", "ws-frank"]
    before = path.stat().st_mtime_ns
    assert locate_kubeconfig(env, home=tmp_path / "nohome", service_account_dir=sa) == source
    assert path.stat().st_mtime_ns == before
    # A file loosened by someone is written again, 0600.
    path.chmod(0o644)
    locate_kubeconfig(env, home=tmp_path / "nohome", service_account_dir=sa)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_in_cluster_folder_from_the_environment_knob(tmp_path):
    sa = service_account(tmp_path / "mounted")
    env = {
        "KUBERNETES_SERVICE_HOST": "fd00::1",
        "KUBERNETES_SERVICE_PORT": "6443",
        "XDG_RUNTIME_DIR": str(tmp_path),
        "DATALAB_PLAYBOOKS_SERVICE_ACCOUNT_DIR": str(sa),
    }
    source = locate_kubeconfig(env, home=tmp_path / "nohome")
    assert source.server == "https://[fd00::1]:6443" and source.service_account == str(sa)
    assert yaml.safe_load(Path(source.kubeconfig).read_text())["users"][0]["user"]["tokenFile"] == str(sa / "token")


def test_a_private_folder_of_someone_else_is_refused(tmp_path):
    sa = service_account(tmp_path / "sa")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / f"datalab-playbooks-{os.getuid()}").symlink_to(elsewhere)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "XDG_RUNTIME_DIR": str(tmp_path)}
    with pytest.raises(
        PlaybookError, match=r"is not a folder of this user .* remove it, or set XDG_RUNTIME_DIR or TMPDIR"
    ):
        locate_kubeconfig(env, home=tmp_path / "nohome", service_account_dir=sa)
    assert list(elsewhere.iterdir()) == []


def test_nothing_configured_names_the_fix(tmp_path):
    with pytest.raises(PlaybookError, match="KUBECONFIG"):
        locate_kubeconfig({}, home=tmp_path, service_account_dir=tmp_path / "sa")


def test_missing_kubeconfig_file_is_an_error_not_a_fallback(tmp_path):
    write(tmp_path / "home" / ".kube" / "config", NAMESPACE_KUBECONFIG)
    with pytest.raises(PlaybookError, match="does not exist"):
        locate_kubeconfig({"KUBECONFIG": str(tmp_path / "nope")}, home=tmp_path / "home", service_account_dir=tmp_path)


def test_unknown_context_lists_the_known(tmp_path):
    path = write(tmp_path / "c", NAMESPACE_KUBECONFIG)
    with pytest.raises(PlaybookError, match=r"known: session"):
        locate_kubeconfig({"KUBECONFIG": str(path)}, context="other", home=tmp_path, service_account_dir=tmp_path)


def test_malformed_kubeconfig(tmp_path):
    path = tmp_path / "c"
    path.write_text("clusters: [unclosed\n")
    with pytest.raises(PlaybookError, match="cannot read kubeconfig"):
        locate_kubeconfig({"KUBECONFIG": str(path)}, home=tmp_path, service_account_dir=tmp_path)


SOURCE = KubeSource("k", "session", "https://kubernetes.default.svc", "ctx-ns", "sa-ns")


@pytest.mark.parametrize(
    ("flag", "env", "source", "expected"),
    [
        ("flag-ns", {"SESSION_NAMESPACE": "session-ns"}, SOURCE, ("flag-ns", "--namespace")),
        (None, {"SESSION_NAMESPACE": "session-ns"}, SOURCE, ("session-ns", "SESSION_NAMESPACE")),
        (None, {}, SOURCE, ("ctx-ns", "context session")),
        (None, {}, KubeSource(None, None, "s", None, "sa-ns"), ("sa-ns", "service account")),
        (None, {}, KubeSource("k", "c", "s", None), ("default", "default")),
    ],
)
def test_namespace_order(flag, env, source, expected):
    assert choose_namespace(flag, env, source) == expected


@pytest.mark.parametrize("bad", ["Ws-Frank", "ws_frank", "-ws", "a" * 64, "ws.frank"])
def test_invalid_namespace(bad):
    with pytest.raises(PlaybookError, match="invalid namespace"):
        choose_namespace(bad, {}, SOURCE)


def test_namespace_mode_from_a_datalab_session():
    source = KubeSource("~/.kube/config", "session", "https://kubernetes.default.svc", "ws-frank-s001")
    mode, evidence = decide_mode(Probes(can_create_crds=False, rules=EDIT_RULES, fake_nodes=None), source, {})
    assert mode == "namespace"
    assert any("may not create CustomResourceDefinitions" in e for e in evidence)
    assert any("listing nodes is forbidden" in e for e in evidence)


def test_vcluster_mode_from_a_datalab_session():
    source = KubeSource(
        "/opt/kubeconfig/config", "my-vcluster", "https://ws-frank-s001-vc.ws-frank-s001.svc.cluster.local:443", None
    )
    env = {"KUBECONFIG": "/opt/kubeconfig/config"}
    mode, evidence = decide_mode(Probes(can_create_crds=True, rules=ADMIN_RULES, fake_nodes=True), source, env)
    assert mode == "vcluster"
    shape = next(e for e in evidence if e.startswith("vCluster kubeconfig shape"))
    assert "context my-vcluster" in shape and "vCluster service" in shape and "/opt/kubeconfig/config" in shape
    assert any("vcluster.loft.sh/fake-node=true (virtual nodes)" in e for e in evidence)


def test_plain_admin_cluster_is_vcluster_mode_with_a_note():
    source = KubeSource("k", "kind-kind", "https://127.0.0.1:6443", None)
    mode, evidence = decide_mode(Probes(can_create_crds=True, fake_nodes=False), source, {})
    assert mode == "vcluster"
    assert any("without vCluster signals" in e for e in evidence)


def test_mode_override_is_checked_against_rights():
    source = KubeSource("k", "session", "https://x", None)
    namespace_probes = Probes(can_create_crds=False, fake_nodes=None)
    with pytest.raises(PlaybookError, match="needs rights to create CRDs"):
        decide_mode(namespace_probes, source, {}, override="vcluster")
    mode, evidence = decide_mode(Probes(can_create_crds=True, fake_nodes=True), source, {}, override="namespace")
    assert mode == "namespace" and evidence[0].startswith("--mode namespace overrides")
    with pytest.raises(PlaybookError, match="unknown mode"):
        decide_mode(namespace_probes, source, {}, override="cluster")


def test_rules_are_evaluated_as_rbac_does():
    assert rule_allows(EDIT_RULES, "create", "deployments", "apps")
    assert rule_allows(EDIT_RULES, "create", "pods/portforward", "")
    assert not rule_allows(EDIT_RULES, "create", "deployments", "")  # wrong group
    assert not rule_allows(EDIT_RULES, "create", "customresourcedefinitions", "apiextensions.k8s.io")
    assert rule_allows(ADMIN_RULES, "create", "anything", "any.group")


def test_access_checks_cover_every_need():
    checks = access_checks(Probes(can_create_crds=False, rules=EDIT_RULES), "ns1")
    assert len(checks) == 1 + len(NAMESPACED_NEEDS)
    assert checks[0].allowed is False and checks[0].namespace is None
    assert all(c.allowed for c in checks[1:]), [c.describe() for c in checks if not c.allowed]


# ---------------------------------------------------------------- kubectl's answers

# kubectl's stderr, captured from real calls (kubectl v1.32, envtest kube-apiserver) of the
# three probes: an expired token, a ServiceAccount without system:basic-user, a closed port,
# an unknown host, an unknown CA, a server that never answers (two ways), a bad request,
# a context that is not there.
SOURCE_API = KubeSource("/home/u/.kube/config", "session", "https://127.0.0.1:41503", None)
KUBECTL_STDERR = [
    ("error: You must be logged in to the server (Unauthorized)\n",
     "the API server https://127.0.0.1:41503 rejected the credentials while checking access (401 Unauthorized): "
     "the token is missing or expired; refresh the kubeconfig"),
    ('Error from server (Forbidden): selfsubjectaccessreviews.authorization.k8s.io is forbidden: User "system:serviceaccount:ns1:session" '
     'cannot create resource "selfsubjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope\n',
     "forbidden while checking access on https://127.0.0.1:41503 (403): ask for the missing permission or use other credentials"),
    ("The connection to the server 127.0.0.1:9 was refused - did you specify the right host or port?\n",
     "cannot reach the Kubernetes API at https://127.0.0.1:41503 (connection refused): check KUBECONFIG and the context, "
     "or that the cluster is running"),
    ("Unable to connect to the server: dial tcp: lookup no-such-host.invalid on 10.255.255.53:53: no such host\n",
     "cannot reach the Kubernetes API at https://127.0.0.1:41503 (dial tcp: lookup no-such-host.invalid on 10.255.255.53:53: no such host)"),
    ("Unable to connect to the server: tls: failed to verify certificate: x509: certificate signed by unknown authority\n",
     "(tls: failed to verify certificate: x509: certificate signed by unknown authority): check KUBECONFIG"),
    ("Unable to connect to the server: context deadline exceeded\n", "(context deadline exceeded): check KUBECONFIG"),
    ("Unable to connect to the server: net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)\n",
     "(net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)): check KUBECONFIG"),
    ("Error from server (BadRequest): no namespace on request\n",
     "the API server https://127.0.0.1:41503 answered BadRequest while checking access: no namespace on request"),
    ('error: context "nope" does not exist\n',
     'cannot use kubeconfig /home/u/.kube/config: context "nope" does not exist; fix it or pass --context'),
    ("", "kubectl failed while checking access on https://127.0.0.1:41503: (no message)"),
]  # fmt: skip


@pytest.mark.parametrize(("stderr", "message"), KUBECTL_STDERR, ids=[m[:40] for _, m in KUBECTL_STDERR])
def test_kubectl_complaints_become_one_line_that_names_the_fix(stderr, message):
    error = api_error(stderr, SOURCE_API, "checking access")
    assert message in str(error) and "\n" not in str(error)


def test_an_answer_that_is_not_json():
    with pytest.raises(PlaybookError, match="did not answer with JSON while listing nodes"):
        _answer(Result(0, "<html>hello</html>", ""), SOURCE_API, "listing nodes")


def test_missing_kubectl_names_the_setting(tmp_path):
    with pytest.raises(PlaybookError, match=r"^/nonexistent/kubectl not found: install kubectl or set tools.kubectl"):
        probe(SOURCE_API, "ns1", 2, kubectl="/nonexistent/kubectl", env={})


def kubeconfig_for(path: Path, server: str) -> Path:
    cluster = {"server": server, "insecure-skip-tls-verify": True}
    return write(path, {**NAMESPACE_KUBECONFIG, "clusters": [{"name": "cluster", "cluster": cluster}]})


needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl on PATH")


@needs_kubectl
def test_closed_port_is_unreachable_and_a_kubeconfig_list_reaches_kubectl(tmp_path):
    server = f"https://127.0.0.1:{free_port()}"
    first = kubeconfig_for(tmp_path / "a", server)
    other = write(tmp_path / "b", VCLUSTER_KUBECONFIG)
    listed = f"{first}{os.pathsep}{other}"
    source = locate_kubeconfig({"KUBECONFIG": listed}, home=tmp_path, service_account_dir=tmp_path / "sa")
    assert source.kubeconfig == listed
    with pytest.raises(PlaybookError) as raised:
        probe(source, "ns1", 5, env=os.environ)
    assert str(raised.value) == (
        f"cannot reach the Kubernetes API at {server} (connection refused): check KUBECONFIG and the context, "
        "or that the cluster is running"
    )


@needs_kubectl
def test_a_server_that_never_answers_is_unreachable_after_the_timeout(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never says a word
        server = f"https://127.0.0.1:{silent.getsockname()[1]}"
        kubeconfig = kubeconfig_for(tmp_path / "config", server)
        source = locate_kubeconfig({"KUBECONFIG": str(kubeconfig)}, home=tmp_path, service_account_dir=tmp_path / "sa")
        started = time.monotonic()
        with pytest.raises(PlaybookError) as raised:
            probe(source, "ns1", 1, env=os.environ)
    assert str(raised.value).startswith(f"cannot reach the Kubernetes API at {server} ("), raised.value
    # kubectl gave up by itself after --request-timeout (gcloud's dispatcher adds a /version try
    # of its own), well before the backstop deadline (2 x timeout + 5 s) would have killed it.
    assert "no answer within" not in str(raised.value)
    assert time.monotonic() - started < 6


class Listener:
    """A TCP port that counts the connections it gets and answers no TLS: where kubectl really went."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # no TLS: kubectl gives up at once
            conn.close()

    def close(self):
        self.server.close()


@needs_kubectl
def test_kubectl_with_flags_reaches_the_service_account_api_through_the_written_kubeconfig(tmp_path, monkeypatch):
    """With --namespace/--request-timeout kubectl ignores its in-cluster config (it went to
    localhost:8080); through the written kubeconfig it goes to KUBERNETES_SERVICE_HOST:PORT."""
    listener = Listener()
    try:
        sa = service_account(tmp_path / "sa", token="planted-token-value")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", str(tmp_path / "ca.key"), "-out", str(sa / "ca.crt")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path / "home"),
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(listener.port),
            "XDG_RUNTIME_DIR": str(tmp_path),
        }
        source = locate_kubeconfig(env, home=tmp_path / "home", service_account_dir=sa)
        with pytest.raises(
            PlaybookError, match=f"cannot reach the Kubernetes API at https://127.0.0.1:{listener.port} "
        ):
            probe(source, "ws-frank", 5, env=env)
        assert listener.connections >= 3, "the three probes went elsewhere"
        seen = listener.connections
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.delenv("KUBECONFIG", raising=False)
        target = Target("namespace", "ws-frank", "service account", source)
        result = Kubectl(target).run("get", "--raw", "/version", "--request-timeout=5s", check=False, timeout=30)
        assert not result.ok and listener.connections > seen, result.stderr
        assert "localhost:8080" not in result.stderr
    finally:
        listener.close()


def test_a_kubeconfig_list_is_no_flag_but_the_child_environment(tmp_path):
    a = write(tmp_path / "a", {**NAMESPACE_KUBECONFIG, "current-context": None})
    b = write(tmp_path / "b", VCLUSTER_KUBECONFIG)
    listed = f"{a}{os.pathsep}{b}"
    source = locate_kubeconfig({"KUBECONFIG": listed}, home=tmp_path, service_account_dir=tmp_path / "sa")
    target = Target("vcluster", "default", "test", source)
    assert target.kubectl_flags() == ["--context", "my-vcluster", "--namespace", "default"]
    assert Helm(target).flags() == ["--kube-context", "my-vcluster", "--namespace", "default"]
    assert target.child_env({"KUBECONFIG": "/elsewhere", "PATH": "/bin"}) == {"KUBECONFIG": listed, "PATH": "/bin"}
    single = Target(
        "vcluster",
        "default",
        "test",
        locate_kubeconfig({"KUBECONFIG": str(b)}, home=tmp_path, service_account_dir=tmp_path / "sa"),
    )
    assert single.kubectl_flags()[:2] == ["--kubeconfig", str(b)]
    assert "KUBECONFIG" not in single.child_env({"KUBECONFIG": "/elsewhere"})


@needs_kubectl
def test_a_kubeconfig_list_reaches_kubectl_and_helm_after_detection(tmp_path, monkeypatch):
    """Every command after detection, not just the probes: `--kubeconfig a:b` made kubectl and helm fail."""
    from tests.conftest import tool

    server = f"https://127.0.0.1:{free_port()}"
    first = kubeconfig_for(tmp_path / "a", server)
    other = write(tmp_path / "b", VCLUSTER_KUBECONFIG)
    listed = f"{first}{os.pathsep}{other}"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/of-the-caller")
    target = Target(
        "namespace",
        "ws-frank-s001",
        "test",
        locate_kubeconfig({"KUBECONFIG": listed}, home=tmp_path, service_account_dir=tmp_path / "sa"),
    )
    kubectl = Kubectl(target)
    assert kubectl.run("config", "current-context").stdout.strip() == "session"
    view = kubectl.run("config", "view", "-o", "jsonpath={.contexts[*].name}").stdout.split()
    assert sorted(view) == ["my-vcluster", "session"]
    with pytest.raises(PlaybookError, match=f"cannot reach the Kubernetes API at {server}"):
        kubectl.run("get", "configmaps", "--request-timeout=5s", timeout=30)
    helm = Helm(target, binary=tool("helm"))
    if shutil.which(helm.binary) is None:
        pytest.skip("no helm: run scripts/setup.sh")
    with pytest.raises(PlaybookError) as raised:
        helm.run("list", timeout=30)
    assert f"127.0.0.1:{server.rpartition(':')[2]}" in str(raised.value), raised.value
