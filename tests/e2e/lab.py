"""The real node: a single-node Kubernetes with containerd, found from its kit's kubeconfig.

The kit (`shared/lab/` beside the checkout, README there) keeps everything under LAB_DIR
(default ~/k8s-lab): `kubeconfig` (admin), `bin/` (kube-apiserver and friends, which envtest
reuses). A lab that is built but not running (after a reboot, or in CI once the session that
started it has ended) must cost one line and a second, never a long time-out: the API port is
tried with a short TCP connect before kubectl is asked anything.

Pods reach the host at the bridge address (cni0, 10.244.0.1) and nothing outside the pod
range, so the S3 server that stands for the platform's object storage listens there: outside
the cluster, as a Datalab's storage is, yet reachable by pods.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

BRIDGE_ADDRESS = "10.244.0.1"
START_HINT = "start it: cd shared/lab && ./up.sh && ./node-up.sh (README there)"


def lab_dir() -> Path:
    return Path(os.environ.get("LAB_DIR") or Path.home() / "k8s-lab")


def lab_bin() -> Path:
    return lab_dir() / "bin"


def _server(kubeconfig: Path) -> tuple[str, int]:
    config = yaml.safe_load(kubeconfig.read_text()) or {}
    server = (config.get("clusters") or [{}])[0].get("cluster", {}).get("server", "")
    parsed = urlparse(server)
    return parsed.hostname or "127.0.0.1", parsed.port or 443


def _kubectl(kubeconfig: Path, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "--request-timeout=5s", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def find_lab() -> tuple[Path | None, str]:
    """The lab's admin kubeconfig when its API answers and its node is Ready; else None and why, in one line."""
    kubeconfig = lab_dir() / "kubeconfig"
    if not kubeconfig.is_file():
        return None, f"no real node: no lab kubeconfig at {kubeconfig} (build the lab: shared/lab/README.md)"
    host, port = _server(kubeconfig)
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as error:
        return None, f"the lab is built but not running (API {host}:{port}: {error.strerror or error}); {START_HINT}"
    ready = _kubectl(kubeconfig, "get", "--raw", "/readyz")
    if ready.returncode != 0:
        return None, f"the lab's API at {host}:{port} is not ready ({ready.stderr.strip()[-120:]}); {START_HINT}"
    nodes = _kubectl(kubeconfig, "get", "nodes", "-o", "json")
    if nodes.returncode != 0:
        return None, f"the lab's API did not list nodes: {nodes.stderr.strip()[-120:]}"
    ready_nodes = [
        item["metadata"]["name"]
        for item in json.loads(nodes.stdout).get("items", [])
        for condition in item.get("status", {}).get("conditions", [])
        if condition["type"] == "Ready" and condition["status"] == "True"
    ]
    if not ready_nodes:
        return None, f"the lab's control plane runs but its node is not Ready; {START_HINT}"
    return kubeconfig, ""


def images_on_node() -> set[str]:
    """Every image name containerd holds for the kubelet (pods cannot pull: these are all they can run)."""
    command = ["ctr", "--address", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "ls", "-q"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(result.stdout.split())


def missing_images(wanted: list[str]) -> list[str]:
    have = images_on_node()
    full = {
        name: name if "/" in name.split(":")[0] and "." in name.split("/")[0] else f"docker.io/{name}"
        for name in wanted
    }
    for name, ref in list(full.items()):
        if ref.startswith("docker.io/") and ref.count("/") == 1:
            full[name] = ref.replace("docker.io/", "docker.io/library/")
    return [name for name, ref in full.items() if ref not in have]


@dataclass
class ContainerMemory:
    pod: str
    container: str
    peak: int  # bytes: the cgroup's max_usage_in_bytes (page cache included)
    limit: int  # bytes; 0 when the container has no limit

    @property
    def ratio(self) -> float:
        return self.peak / self.limit if self.limit else 0.0

    def row(self) -> str:
        mib = 2**20
        limit = f"{self.limit // mib}Mi" if self.limit else "none"
        return f"{self.pod}/{self.container}: peak {self.peak // mib}Mi of {limit} ({self.ratio:.0%})"


def _pod_cgroup(uid: str) -> Path | None:
    base = Path("/sys/fs/cgroup/memory/kubepods")
    for folder in (base / f"pod{uid}", base / "besteffort" / f"pod{uid}", base / "burstable" / f"pod{uid}"):
        if folder.is_dir():
            return folder
    return None


def container_memory(pods: list[dict]) -> list[ContainerMemory]:
    """Peak memory of every running container of the pods (JSON from kubectl), read from the node's cgroups."""
    found = []
    for pod in pods:
        folder = _pod_cgroup(pod["metadata"]["uid"])
        if folder is None:
            continue
        limits = {
            c["name"]: (c.get("resources") or {}).get("limits", {}).get("memory") for c in pod["spec"]["containers"]
        }
        for status in pod.get("status", {}).get("containerStatuses") or []:
            cid = (status.get("containerID") or "").removeprefix("containerd://")
            path = folder / cid
            if not cid or not path.is_dir():
                continue
            peak = int((path / "memory.max_usage_in_bytes").read_text())
            limit = int((path / "memory.limit_in_bytes").read_text())
            found.append(
                ContainerMemory(
                    pod["metadata"]["name"],
                    status["name"],
                    peak,
                    0 if limit >= 2**62 or not limits.get(status["name"]) else limit,
                )
            )
    return found
