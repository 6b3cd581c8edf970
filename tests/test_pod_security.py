"""Security defaults of everything the playbooks create in a cluster: every pod meets the Pod
Security Standard "restricted" with a read-only root filesystem, no service is reachable from
outside the cluster, and the optional NetworkPolicy admits only the namespace's own pods."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from playbooks import registry
from playbooks.errors import PlaybookError
from playbooks.helm import merge_values
from playbooks.render import kinds, load_templates, manifests_dir, render, to_yaml
from playbooks.s3 import S3Settings
from playbooks.services import dask, gateway, mlflow, storage_cluster
from tests.conftest import QUIET_ENV
from tests.manifests import VERSIONS, FakeContext, config, target, validate_all

ROOT = Path(__file__).resolve().parent.parent
S3 = S3Settings(
    access_key="AKIAEXAMPLEKEY", secret_key="example-secret-value", endpoint_url="http://minio:9000", region="eu-west-1"
)
CREDS = storage_cluster.generate_credentials()

# Pods that do not meet "restricted", and why. None of the images needs an exception: each
# runs as uid 1000 with a read-only root filesystem. These three pods come from the
# dask/dask-gateway chart 2026.3.0, whose templates (gateway/, controller/, traefik/
# deployment.yaml) read no securityContext value: Traefik's container gets only
# runAsUser/runAsGroup 1000, the API and controller pods nothing (their image's USER is
# uid 1000). No setting of ours can reach them; README (Security) says so.
CHART_POD_EXCEPTIONS = {
    "api-dask-gateway": "chart 2026.3.0 offers no securityContext for the API pod",
    "controller-dask-gateway": "chart 2026.3.0 offers no securityContext for the controller pod",
    "traefik-dask-gateway": "chart 2026.3.0 hard-codes runAsUser/runAsGroup 1000 and nothing else for Traefik",
}

# ---------------------------------------------------------------- the restricted rules (Kubernetes 1.30 docs,
# "Pod Security Standards": the baseline controls, then the restricted ones)

RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec.get("containers", []), *spec.get("ephemeralContainers", [])]


def restricted_violations(spec: dict) -> list[str]:
    """Every way a pod spec breaks the Pod Security Standard "restricted" (empty: it complies)."""
    found = []
    pod_sc = spec.get("securityContext") or {}
    containers = _containers(spec)
    # Baseline.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(f"{field} is set")
    for volume in spec.get("volumes", []):
        kind = next(k for k in volume if k != "name")
        if kind not in RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']} is of type {kind}")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']} is not a safe one")
    for where, sc in [("pod", pod_sc)] + [(c["name"], c.get("securityContext") or {}) for c in containers]:
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{where}: hostProcess")
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.append(f"{where}: seLinuxOptions {selinux}")
        if (sc.get("appArmorProfile") or {}).get("type", "RuntimeDefault") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: appArmorProfile {sc['appArmorProfile']}")
        if sc.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser 0")
    # Restricted, pod level or every container.
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    for container in containers:
        name, sc = container["name"], container.get("securityContext") or {}
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount {sc['procMount']}")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{name}: hostPort {port['hostPort']}")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        if (sc.get("seccompProfile") or {}).get("type", pod_seccomp) not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile is not RuntimeDefault or Localhost")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities {capabilities['add']}")
    return found


# ---------------------------------------------------------------- every pod the playbooks can create


def merge_json_objects(a: dict, b: dict) -> dict:
    """dask_gateway_server 2026.3.0, backends/kubernetes/utils.py: how the controller applies
    extraPodConfig / extraContainerConfig (mappings merged, b wins; lists appended). Copied:
    importing it needs kubernetes_asyncio, which the smoke client does not install."""
    out = dict(a)
    for key, value in b.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = merge_json_objects(out[key], value)
        elif isinstance(out.get(key), list) and isinstance(value, list):
            out[key] = out[key] + value
        else:
            out[key] = value
    return out


def gateway_cluster_pod(values: dict, role: str) -> dict:
    """The pod spec the gateway's controller makes for a Dask cluster's scheduler or worker
    (KubeController.make_pod of dask_gateway_server 2026.3.0), from the chart values."""
    backend = values["gateway"]["backend"]
    settings = backend[role]
    container = {
        "name": f"dask-{role}",
        "image": f"{backend['image']['name']}:{backend['image']['tag']}",
        "args": ["dask", role],
        "env": [{"name": "DASK_GATEWAY_API_TOKEN", "value": "/etc/dask-credentials/api-token"}],
        "resources": {
            "requests": {"cpu": f"{settings['cores']['request']:.3f}", "memory": str(settings["memory"]["request"])},
            "limits": {"cpu": f"{settings['cores']['limit']:.3f}", "memory": str(settings["memory"]["limit"])},
        },
        "volumeMounts": [{"name": "dask-credentials", "mountPath": "/etc/dask-credentials/", "readOnly": True}],
        "ports": [
            {"name": "scheduler", "containerPort": 8786},
            {"name": "dashboard", "containerPort": 8787},
            {"name": "api", "containerPort": 8788},
        ],
    }
    container = merge_json_objects(container, settings.get("extraContainerConfig") or {})
    spec = {
        "containers": [container],
        "volumes": [{"name": "dask-credentials", "secret": {"secretName": "dask-credentials-abc123"}}],
        "restartPolicy": "OnFailure" if role == "worker" else "Never",
        "automountServiceAccountToken": False,
    }
    return merge_json_objects(spec, settings.get("extraPodConfig") or {})


def gateway_values(overrides=None) -> dict:
    return merge_values(
        gateway.file_values(), gateway.overrides(FakeContext(config(overrides)), "dask-gateway", "a-password")
    )


def manifests(overrides=None, mode="namespace") -> list[dict]:
    """Every object the registered services apply (`up`, `storage.up`, `dask.smoke --in-cluster`), with this configuration."""
    c, where = FakeContext(config(overrides)), target(mode)
    return [doc for service in registry.services() if service.cluster for doc in service.cluster.sample_docs(c, where)]


WORKLOADS = ("Deployment", "StatefulSet", "Job")


def pods(overrides=None, mode="namespace") -> dict[str, dict]:
    """Pod specs by name: the rendered workloads, and the Dask Gateway's cluster pods."""
    found = {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
        for doc in manifests(overrides, mode)
        if doc["kind"] in WORKLOADS
    }
    values = gateway_values(overrides)
    for role in ("scheduler", "worker"):
        found[f"dask-gateway-{role}"] = gateway_cluster_pod(values, role)
    return found


ALL_PODS = [
    "mlflow",
    "dask-scheduler",
    "dask-worker",
    "dask-smoke",
    "storage",
    "storage-bucket",
    "postgres",
    "dask-gateway-scheduler",
    "dask-gateway-worker",
]

# Where each program writes, from its image and its configuration (README: Security):
# temporary files and HOME in /tmp, MLflow's database, MinIO's objects, mc's configuration.
WRITES = {
    "mlflow": ["/tmp", "/mlflow/db"],
    "scheduler": ["/tmp"],
    "worker": ["/tmp"],  # HOME, and dask's local directory for spilling (tempfile's default)
    "check": ["/tmp"],
    "minio": ["/tmp/.minio", "/data"],
    "mc": ["/tmp/mc"],
    "postgres": ["/tmp", "/var/lib/postgresql/data/pgdata"],  # the unix socket in /tmp; the database
    "dask-scheduler": ["/tmp"],
    "dask-worker": ["/tmp"],
}


def test_every_pod_is_found():
    assert sorted(pods()) == sorted(ALL_PODS)
    assert not set(CHART_POD_EXCEPTIONS) & set(pods())


def assert_restricted(spec: dict) -> None:
    """Pod Security "restricted", no service account token, and a read-only root in every container."""
    assert restricted_violations(spec) == []
    assert spec["automountServiceAccountToken"] is False
    for container in _containers(spec):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, container["name"]


@pytest.mark.parametrize("mode", ["namespace", "vcluster"])
@pytest.mark.parametrize("name", sorted(pods()))  # every registered service's pods
def test_pod_meets_the_restricted_standard_with_a_read_only_root(name, mode):
    assert_restricted(pods(mode=mode)[name])


@pytest.mark.parametrize("name", ["dask-gateway-scheduler", "dask-gateway-worker"])
def test_gateway_cluster_pods_are_valid_pods(name):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dask-x"}, "spec": pods()[name]}
    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


@pytest.mark.parametrize("name", ALL_PODS)
def test_each_program_writes_only_to_its_volumes(name):
    spec = pods()[name]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in _containers(spec):
        writable = [
            m["mountPath"].rstrip("/")
            for m in container["volumeMounts"]
            if not m.get("readOnly") and {"emptyDir", "persistentVolumeClaim"} & volumes[m["name"]].keys()
        ]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        paths = [*WRITES[container["name"]], *(env[k] for k in ("HOME", "MC_CONFIG_DIR") if k in env)]
        for path in paths:
            assert any(path == m or path.startswith(m + "/") for m in writable), (
                f"{container['name']} writes {path}; writable: {writable}"
            )


def test_the_gateway_images_keep_their_home():
    # Their packages are a user install under /home/dask/.local: HOME=/tmp would hide them.
    for name in ("dask-gateway-scheduler", "dask-gateway-worker"):
        container = pods()[name]["containers"][0]
        assert "HOME" not in {e["name"] for e in container["env"]}
        assert pods()[name]["securityContext"]["runAsUser"] == 1000  # the images' user `dask`


def test_the_read_only_root_can_be_turned_off_and_the_rest_stays_restricted():
    loose = pods({"security": {"container": {"readOnlyRootFilesystem": False}}})
    for name, spec in loose.items():
        assert restricted_violations(spec) == [], name
        assert all(c["securityContext"]["readOnlyRootFilesystem"] is False for c in _containers(spec)), name


def test_the_security_settings_reach_every_pod():
    # One setting changed in configuration shows up in every pod, so the checker sees it everywhere.
    escalating = pods({"security": {"container": {"allowPrivilegeEscalation": True}}})
    for name, spec in escalating.items():
        assert any("allowPrivilegeEscalation" in v for v in restricted_violations(spec)), name
    rooted = pods({"security": {"pod": {"runAsUser": 0}}})
    for name, spec in rooted.items():
        assert "pod: runAsUser 0" in restricted_violations(spec), name


BREAKS = {
    "hostNetwork": lambda s: s.update(hostNetwork=True),
    "hostPID": lambda s: s.update(hostPID=True),
    "hostPath": lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
    "privileged": lambda s: s["containers"][0]["securityContext"].update(privileged=True),
    "hostPort": lambda s: s["containers"][0].setdefault("ports", []).append({"containerPort": 80, "hostPort": 80}),
    "escalation unset": lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
    "root user in a container": lambda s: s["containers"][0]["securityContext"].update(runAsUser=0),
    "runAsNonRoot false in a container": lambda s: s["containers"][0]["securityContext"].update(runAsNonRoot=False),
    "runAsNonRoot unset": lambda s: s["securityContext"].pop("runAsNonRoot"),
    "seccomp unset": lambda s: s["securityContext"].pop("seccompProfile"),
    "seccomp Unconfined in a container": lambda s: s["containers"][0]["securityContext"].update(
        seccompProfile={"type": "Unconfined"}
    ),
    "capabilities kept": lambda s: s["containers"][0]["securityContext"].update(capabilities={"drop": ["NET_RAW"]}),
    "capability added": lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
    "init container unrestricted": lambda s: s.setdefault("initContainers", []).append(
        {"name": "init", "image": "busybox"}
    ),
    "unsafe sysctl": lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
    "procMount": lambda s: s["containers"][0]["securityContext"].update(procMount="Unmasked"),
}


@pytest.mark.parametrize("break_it", BREAKS.values(), ids=BREAKS.keys())
def test_the_checker_catches_each_violation(break_it):
    spec = copy.deepcopy(pods()["mlflow"])
    break_it(spec)
    assert restricted_violations(spec)


def test_allowed_variants_pass_the_checker():
    spec = copy.deepcopy(pods()["dask-worker"])
    container = spec["containers"][0]
    container["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    container["securityContext"]["seccompProfile"] = {"type": "Localhost", "localhostProfile": "dask.json"}
    spec["securityContext"].pop("runAsNonRoot")
    container["securityContext"]["runAsNonRoot"] = True
    assert restricted_violations(spec) == []


def test_chart_pod_exceptions_are_documented():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Security") :]
    section = section[: section.index("\n## ", 1)]
    for name in CHART_POD_EXCEPTIONS:
        assert f"`{name}`" in section, name
    assert "securityContext" in section


# ---------------------------------------------------------------- nothing listens outside the cluster


def test_every_service_is_cluster_internal_and_no_pod_takes_a_host_port():
    docs = manifests()
    services = [d for d in docs if d["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"mlflow", "dask-scheduler", "storage", "postgres"}
    for service in services:
        assert service["spec"]["type"] == "ClusterIP", service["metadata"]["name"]
        assert not {"externalIPs", "loadBalancerIP", "externalName"} & service["spec"].keys()
        assert all("nodePort" not in port for port in service["spec"]["ports"])
    values = gateway_values()
    # The chart's own API Service is ClusterIP in its template; Traefik's follows this value.
    assert values["traefik"]["service"]["type"] == "ClusterIP"
    text = to_yaml(docs) + yaml.safe_dump(values)
    for word in ("NodePort", "LoadBalancer", "nodePort", "hostPort", "hostNetwork", "externalIPs"):
        assert word not in text


def test_no_manifest_file_opens_a_port_on_a_node():
    # manifests/cluster/ is the local kind cluster of `cluster.up`: its vCluster API is a
    # NodePort that kind publishes on 127.0.0.1 only. Nothing else may name one.
    for path in manifests_dir().glob("*/*.yaml"):
        if path.parent.name == "cluster":
            continue
        text = path.read_text()
        for word in ("NodePort", "LoadBalancer", "nodePort", "hostPort", "hostNetwork", "hostPath"):
            assert word not in text, f"{path.name}: {word}"


def test_no_service_is_open_without_credentials_by_default():
    docs = manifests()
    args = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")["spec"]["template"][
        "spec"
    ]["containers"][0]["args"]
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert "*" not in hosts and "0.0.0.0" not in hosts
    gw = gateway_values()["gateway"]
    assert gw["auth"]["type"] == "simple" and "datalab-10-password" in gw["extraConfig"]
    assert "raise ValueError" in gw["extraConfig"]["datalab-10-password"]  # an empty password stops the server
    minio = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "storage")["spec"][
        "template"
    ]["spec"]["containers"][0]
    env = {e["name"]: e for e in minio["env"]}
    assert env["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "storage-credentials"
    assert storage_cluster.generate_credentials() != CREDS


# ---------------------------------------------------------------- the optional NetworkPolicy

SERVICES = {"mlflow": "mlflow", "dask": "dask", "storage": "storage"}


def plans(overrides=None) -> dict[str, list[dict]]:
    c, where = FakeContext(config(overrides)), target("namespace")
    return {
        "mlflow": mlflow.build_plan(c, where, S3, "ws-frank", "--bucket", "mlflow", "mlflow").docs,
        "dask": dask.build_plan(c, where, "dask", 2, dask.worker_resources(c)).docs,
        "storage": storage_cluster.build_plan(c, where, "storage", "ws-frank", CREDS).docs,
    }


def test_no_network_policy_by_default():
    for service, docs in plans().items():
        assert "NetworkPolicy" not in {d["kind"] for d in docs}, service
        assert "networkpolicies.networking.k8s.io" not in kinds(docs), "the access preflight must not ask for it"
    assert not any("x-when" in d for d in manifests())


def test_network_policy_admits_only_the_namespace_to_the_services_pods():
    on = plans({"security": {"network_policy": True}})
    all_pods = [d for docs in on.values() for d in docs if d["kind"] == "Deployment"]
    for service, docs in on.items():
        validate_all(docs)
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        assert len(policies) == 1, service
        policy = policies[0]
        assert docs[0] is policy, "applied before the pods it protects"
        assert "x-when" not in policy
        assert policy["metadata"]["name"] == f"{service}-ingress"
        assert policy["metadata"]["labels"]["app.kubernetes.io/name"] == service
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        assert spec["ingress"] == [
            {"from": [{"podSelector": {}}]}
        ]  # no namespaceSelector, no ipBlock: this namespace only
        wanted = spec["podSelector"]["matchLabels"]
        for deployment in all_pods:
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            selected = wanted.items() <= labels.items()
            assert selected == (deployment in docs), (service, deployment["metadata"]["name"])
        assert "networkpolicies.networking.k8s.io" in kinds(docs), "the access preflight asks for it"


def test_down_looks_for_the_policy_even_when_the_setting_is_off():
    for service in SERVICES:
        assert "networkpolicies.networking.k8s.io" in kinds(list(load_templates(service)))


def test_network_policy_setting_must_be_a_boolean():
    with pytest.raises(PlaybookError, match=r"security\.network_policy must be true or false"):
        plans({"security": {"network_policy": "sometimes"}})


def test_optional_template_needs_its_parameter():
    with pytest.raises(PlaybookError, match="need parameter 'network_policy'"):
        render("mlflow", "mlflow", "ns", {"image": "x"})


def test_the_flag_is_refused_in_local_mode_before_anything_starts(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **QUIET_ENV}
    cli = str(Path(sys.executable).parent / "playbooks")
    result = subprocess.run(
        [cli, "up", "--network-policy"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert (
        result.stderr
        == "error: --network-policy is for the cluster modes; local mode's servers listen on 127.0.0.1 only\n"
    )
    assert not (tmp_path / ".playbooks").exists()
