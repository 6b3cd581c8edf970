"""The optional NetworkPolicy against a real API server: none by default, one per service when
asked, refused before any write without the right to create one, and removed by `down`."""

import json

import pytest

from tests.e2e.kind import token_kubeconfig

POLICIES = "networkpolicies.networking.k8s.io"
MANAGED = "app.kubernetes.io/managed-by=datalab-playbooks"

# Everything `dask.up` / `down` need in a namespace, but no NetworkPolicies: a platform that forbids them.
NO_POLICY_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: no-policies, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: no-policies, namespace: {ns}}}
rules:
  - {{apiGroups: [""], resources: [services, secrets, configmaps, persistentvolumeclaims, pods, pods/log, pods/portforward, events], verbs: ["*"]}}
  - {{apiGroups: [apps], resources: [deployments, replicasets], verbs: ["*"]}}
  - {{apiGroups: [batch], resources: [jobs], verbs: ["*"]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: no-policies, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: no-policies}}
subjects: [{{kind: ServiceAccount, name: no-policies, namespace: {ns}}}]
"""


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def policies(session) -> dict[str, dict]:
    out = session.cluster.kubectl("get", POLICIES, "-n", session.namespace, "-l", MANAGED, "-o", "json")
    return {item["metadata"]["name"]: item for item in json.loads(out.stdout)["items"]}


def pods_selected(session, selector: dict) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in selector.items())
    out = session.cluster.kubectl("get", "pods", "-n", session.namespace, "-l", labels, "-o", "name")
    return out.stdout.split()


def test_off_by_default_one_per_service_with_the_flag_and_down_removes_it(session):
    ok(session.run("up", "--only", "mlflow,dask"))
    assert policies(session) == {}

    on = ok(session.run("up", "--only", "mlflow,dask", "--network-policy"))
    assert "mlflow: applied changes" in on.stdout and "dask: applied changes" in on.stdout
    found = policies(session)
    assert set(found) == {"mlflow-ingress", "dask-ingress"}
    for service in ("mlflow", "dask"):
        spec = found[f"{service}-ingress"]["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        assert spec["ingress"] == [{"from": [{"podSelector": {}}]}], "only pods of this namespace"
        selector = spec["podSelector"]["matchLabels"]
        assert selector == {"app.kubernetes.io/name": service, "app.kubernetes.io/instance": service}
        selected = pods_selected(session, selector)
        assert selected and all(service in pod for pod in selected), selected

    # The flag and the configuration ask for the same thing: nothing left to change.
    again = ok(session.run("up", "--only", "mlflow,dask", "--network-policy"))
    assert "mlflow: no change" in again.stdout and "dask: no change" in again.stdout
    assert "dask: no change" in ok(session.run("dask.up", env={"INVOKE_SECURITY_NETWORK_POLICY": "1"})).stdout

    # down finds the policies by their labels, though this run does not ask for them.
    down = ok(session.run("down", "--purge"))
    assert f"deleted networkpolicy.{POLICIES.partition('.')[2]}/mlflow-ingress" in down.stdout
    assert f"deleted networkpolicy.{POLICIES.partition('.')[2]}/dask-ingress" in down.stdout
    assert policies(session) == {}
    assert session.labelled() == []


def test_storage_gets_one_from_configuration_and_keeps_its_data_without_it(session):
    env = {"INVOKE_SECURITY_NETWORK_POLICY": "1"}
    ok(session.run("storage.up", "--bucket", "ws-store", env=env))
    assert set(policies(session)) == {"storage-ingress"}
    ok(session.run("storage.down"))
    assert policies(session) == {}
    assert session.labelled() == ["persistentvolumeclaim/storage-data", "secret/storage-credentials"]
    ok(session.run("storage.down", "--purge"))


def test_without_the_right_the_flag_is_refused_before_any_write_and_the_rest_works(session, tmp_path):
    if session.mode != "namespace":
        pytest.skip("vCluster mode runs as admin")
    cluster, ns = session.cluster, session.namespace
    cluster.kubectl("apply", "-f", "-", stdin=NO_POLICY_RBAC.format(ns=ns))
    token = cluster.kubectl("create", "token", "no-policies", "-n", ns, "--duration=1h").stdout.strip()
    if cluster.plane is not None:
        kubeconfig = cluster.plane.write_kubeconfig(f"no-policies-{ns}", token, namespace=ns, context="session")
    else:
        kubeconfig = token_kubeconfig(cluster.admin_kubeconfig, tmp_path / "no-policies.kubeconfig", token, ns)
    env = {"KUBECONFIG": str(kubeconfig)}

    refused = session.run("up", "--only", "dask", "--network-policy", env=env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.count("\n") == 1 and "create networkpolicies.networking.k8s.io" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert session.labelled() == [] and policies(session) == {}

    ok(session.run("up", "--only", "dask", env=env))
    # `down` does not look for NetworkPolicies it may not list, and removes the rest.
    ok(session.run("down", "--only", "dask", env=env))
    assert session.labelled() == []
