"""Target detection on realistic inputs: Datalab kubeconfigs, environment, access-review answers."""

from pathlib import Path

import pytest
import yaml

from playbooks.errors import PlaybookError
from playbooks.target import (
    NAMESPACED_NEEDS,
    KubeSource,
    Probes,
    access_checks,
    choose_namespace,
    decide_mode,
    locate_kubeconfig,
    rule_allows,
)

# What a Datalab writes for namespace mode: a token, the session namespace in the context.
NAMESPACE_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "cluster", "cluster": {"server": "https://kubernetes.default.svc", "certificate-authority": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"}}],
    "contexts": [{"name": "session", "context": {"cluster": "cluster", "user": "session", "namespace": "ws-frank-s001"}}],
    "current-context": "session",
    "users": [{"name": "session", "user": {"token": "eyJhbGciOi.fake.token"}}],
}

# What the platform mounts at /opt/kubeconfig/config in vCluster mode.
VCLUSTER_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "my-vcluster", "cluster": {"server": "https://ws-frank-s001-vc.ws-frank-s001.svc.cluster.local:443"}}],
    "contexts": [{"name": "my-vcluster", "context": {"cluster": "my-vcluster", "user": "my-vcluster"}}],
    "current-context": "my-vcluster",
    "users": [{"name": "my-vcluster", "user": {"client-certificate-data": "LS0t", "client-key-data": "LS0t"}}],
}

# SelfSubjectRulesReview answer for a ServiceAccount bound to `edit` in its namespace.
EDIT_RULES = (
    {"verbs": ["create", "delete", "deletecollection", "patch", "update"], "apiGroups": [""], "resources": ["pods", "pods/portforward", "services", "secrets", "configmaps", "persistentvolumeclaims"]},
    {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods", "pods/log", "services", "secrets", "configmaps", "persistentvolumeclaims", "events"]},
    {"verbs": ["create", "delete", "deletecollection", "patch", "update", "get", "list", "watch"], "apiGroups": ["apps"], "resources": ["deployments", "statefulsets"]},
    {"verbs": ["create", "delete", "patch", "update", "get", "list", "watch"], "apiGroups": ["batch"], "resources": ["jobs"]},
    {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["namespaces"]},
    {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
)
ADMIN_RULES = ({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},)


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_kubeconfig_from_env_first(tmp_path):
    env_file = write(tmp_path / "vc" / "config", VCLUSTER_KUBECONFIG)
    write(tmp_path / "home" / ".kube" / "config", NAMESPACE_KUBECONFIG)
    source = locate_kubeconfig({"KUBECONFIG": str(env_file)}, home=tmp_path / "home", service_account_dir=tmp_path / "sa")
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


def test_in_cluster_service_account_last(tmp_path):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    (sa / "namespace").write_text("ws-frank\n")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    source = locate_kubeconfig(env, home=tmp_path / "nohome", service_account_dir=sa)
    assert source.kubeconfig is None
    assert source.server == "https://10.96.0.1:443"
    assert source.in_cluster_namespace == "ws-frank"


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
    source = KubeSource("/opt/kubeconfig/config", "my-vcluster", "https://ws-frank-s001-vc.ws-frank-s001.svc.cluster.local:443", None)
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
