"""The kind provider of the e2e suite: real nodes that run real pods, and real vClusters.

One kind cluster per test run, shared by every xdist worker. The first worker to take the
file lock (on `tmp_path_factory.getbasetemp().parent`, the folder all workers of a run
share, as pytest-xdist's how-to recommends) creates it, or reuses the one an earlier run
kept with --keep-cluster; the others wait on the lock, then reuse it. The controller
process deletes it at the end of the run (`release_kind_cluster`, called from
`pytest_sessionfinish`) unless --keep-cluster was given.

vCluster mode runs against a real vCluster per xdist worker (`install_vcluster`): the chart,
version and values of `invoke cluster.up --vcluster`, its API published on a node port of
its own. The kind config maps VCLUSTER_SLOTS node ports (from FIRST_NODE_PORT) to free
ports on the host's loopback, so at most that many workers (`-n`) can each have one.

Everything goes through devtools/cluster.py, the code `cluster.up` runs; only the names,
the node ports and the file locations differ.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

from devtools.cluster import DEFAULTS as CFG
from devtools.cluster import (
    delete_kind_cluster,
    docker_problem,
    ensure_kind_cluster,
    kind_context,
    published_port,
    tool_env,
    vcluster_values,
    write_private,
    write_vcluster_kubeconfig,
)
from devtools.cluster import install_vcluster as helm_install_vcluster

CLUSTER = "datalab-playbooks-e2e"
FIRST_NODE_PORT = 31400
VCLUSTER_SLOTS = int(os.environ.get("PLAYBOOKS_E2E_VCLUSTER_SLOTS", "16"))
CREATE_TIMEOUT = 900
ADMIN_KUBECONFIG = "kind-admin.kubeconfig"
# Written by the run that must delete the cluster at its end (absent with --keep-cluster).
OWNED = "kind-cluster-owned"


def kind_available() -> str | None:
    """None when kind, a running Docker engine and kubectl are here; else why not."""
    missing = [tool for tool in (CFG["kind"], "kubectl") if shutil.which(tool) is None]
    if missing:
        return f"not on PATH: {', '.join(missing)}"
    return docker_problem(CFG["docker"])


def shared_dir(tmp_path_factory, worker_id: str) -> Path:
    """The folder every process of this run shares: the controller's basetemp."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def kind_cluster(tmp_path_factory, worker_id: str, keep: bool) -> Path:
    """The admin kubeconfig of the run's kind cluster, created (or reused) once behind a file lock."""
    from filelock import FileLock

    root = shared_dir(tmp_path_factory, worker_id)
    kubeconfig = root / ADMIN_KUBECONFIG
    with FileLock(str(root / "kind-cluster.lock"), timeout=CREATE_TIMEOUT + 300):
        if kubeconfig.exists():  # another worker of this run got there first
            return kubeconfig
        node_ports = [FIRST_NODE_PORT + slot for slot in range(VCLUSTER_SLOTS)]
        created = ensure_kind_cluster(
            CFG["kind"], CLUSTER, CFG["node_image"], kubeconfig, node_ports,
            wait=float(CFG["wait"]), timeout=CREATE_TIMEOUT, expected_kind=CFG["kind_version"], out=print,
        )  # fmt: skip
        print(f"kind provider: cluster {CLUSTER} {'created' if created else 'reused'} ({kubeconfig})")
        if not keep:
            (root / OWNED).write_text(CLUSTER)
    return kubeconfig


def release_kind_cluster(config) -> None:
    """At the end of the run, in the controller (or only) process: delete the cluster this run owns.

    A run owns the cluster unless --keep-cluster was given (then no OWNED marker is written).
    """
    if hasattr(config, "workerinput"):  # xdist workers leave it to the controller
        return
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return
    root = factory.getbasetemp()
    owned = root / OWNED
    if not owned.exists():
        return
    delete_kind_cluster(CFG["kind"], owned.read_text().strip(), root / ADMIN_KUBECONFIG, timeout=300)
    owned.unlink()


def _slot() -> int:
    """This worker's vCluster slot: N for xdist worker gwN, 0 without xdist."""
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    slot = int(match.group(1)) if match else 0
    if slot >= VCLUSTER_SLOTS:
        raise RuntimeError(
            f"xdist worker {slot} has no vCluster node port: the kind cluster maps {VCLUSTER_SLOTS} "
            "(PLAYBOOKS_E2E_VCLUSTER_SLOTS, read when the cluster is created): run with fewer workers"
        )
    return slot


def install_vcluster(admin_kubeconfig: Path, name: str, namespace: str) -> Path:
    """Install (or upgrade in place) a real vCluster in the kind cluster; a kubeconfig that reaches it.

    The kubeconfig has the Datalab's shape: context my-vcluster, admin of the virtual cluster.
    """
    if shutil.which("helm") is None:
        raise RuntimeError("helm is not on PATH: the vCluster of the kind provider is installed with helm")
    vc = CFG["vcluster"]
    node_port = FIRST_NODE_PORT + _slot()
    host_port = published_port(CFG["kind"], CFG["docker"], CLUSTER, node_port)
    server = f"https://127.0.0.1:{host_port}"
    context = kind_context(CLUSTER)
    # A helm cache of its own per worker: parallel `--repo` downloads must not share files.
    helm_home = admin_kubeconfig.parent / f"helm-{name}"
    env = tool_env(
        {
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }
    )
    helm_install_vcluster(
        "helm", "kubectl", admin_kubeconfig, context, name, namespace,
        vc["chart"], vc["repo_url"], vc["chart_version"], vcluster_values(node_port, server, vc["context"]),
        float(vc["timeout"]), env=env, out=print,
    )  # fmt: skip
    path = admin_kubeconfig.parent / f"{name}.kubeconfig"
    return write_vcluster_kubeconfig("kubectl", admin_kubeconfig, context, name, namespace, server, vc["context"], path)


def token_kubeconfig(admin_kubeconfig: Path, path: Path, token: str, namespace: str, context: str = "session") -> Path:
    """A kubeconfig with the admin's server and CA and a ServiceAccount token: namespace-mode credentials."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    current = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == current["context"]["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster["cluster"]}],
        "users": [{"name": "session", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": "cluster", "user": "session", "namespace": namespace}}],
        "current-context": context,
    }
    write_private(path, yaml.safe_dump(config, sort_keys=False))
    return path
