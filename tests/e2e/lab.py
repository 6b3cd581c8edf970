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
import threading
import time
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


CGROUP_ROOT = Path("/sys/fs/cgroup")


def memory_hierarchy(root: Path = CGROUP_ROOT) -> tuple[Path, int] | None:
    """Where the memory controller is mounted and its cgroup version: v1 (also on a hybrid host, where the unified
    hierarchy lacks the memory controller, as on the lab's node) or v2 (unified); None without one."""
    if (root / "memory" / "memory.usage_in_bytes").is_file():
        return root / "memory", 1
    controllers = root / "cgroup.controllers"
    if controllers.is_file() and "memory" in controllers.read_text().split():
        return root, 2
    return None


def read_memory(path: Path, version: int) -> tuple[int, int] | None:
    """A container cgroup's working set now and its own peak of usage (page cache included), in bytes.

    The working set is what the kubelet reports (cAdvisor's workingSetBytes) and what eviction and `kubectl top`
    count: usage minus the inactive file cache, which the kernel reclaims before it OOM-kills anything.
    v1: memory.usage_in_bytes - total_inactive_file of memory.stat; peak memory.max_usage_in_bytes.
    v2: memory.current - inactive_file of memory.stat; peak memory.peak (kernel 5.19+, else usage now).
    None once the cgroup is gone (the container ended).
    """
    try:
        stat = dict(line.split() for line in (path / "memory.stat").read_text().splitlines())
        if version == 1:
            usage = int((path / "memory.usage_in_bytes").read_text())
            inactive = int(stat["total_inactive_file"])
            peak = int((path / "memory.max_usage_in_bytes").read_text())
        else:
            usage = int((path / "memory.current").read_text())
            inactive = int(stat["inactive_file"])
            peak = int((path / "memory.peak").read_text()) if (path / "memory.peak").is_file() else usage
    except (OSError, KeyError, ValueError):
        return None
    return max(usage - inactive, 0), max(peak, usage)


def read_limit(path: Path, version: int) -> int:
    """A cgroup's memory limit in bytes, 0 for none."""
    try:
        text = (path / ("memory.limit_in_bytes" if version == 1 else "memory.max")).read_text().strip()
    except OSError:
        return 0
    return 0 if text == "max" or int(text) >= 2**62 else int(text)


@dataclass
class ContainerMemory:
    pod: str
    container: str
    working_set: int  # bytes: the largest working set (usage - inactive file) of the samples
    peak: int  # bytes: the cgroup's own peak of usage, page cache included (v1 max_usage_in_bytes)
    limit: int  # bytes; 0 when the container has no limit
    samples: int

    @property
    def ratio(self) -> float:
        return self.working_set / self.limit if self.limit else 0.0

    @property
    def peak_ratio(self) -> float:
        return self.peak / self.limit if self.limit else 0.0

    def row(self) -> str:
        mib = 2**20
        limit = f"{self.limit // mib}Mi" if self.limit else "none"
        return (
            f"{self.pod}/{self.container}: working set {self.working_set // mib}Mi of {limit} ({self.ratio:.0%}); "
            f"with page cache {self.peak // mib}Mi ({self.peak_ratio:.0%}); {self.samples} samples"
        )


def _pod_cgroup(base: Path, uid: str) -> Path | None:
    for folder in (base / f"pod{uid}", base / "besteffort" / f"pod{uid}", base / "burstable" / f"pod{uid}"):
        if folder.is_dir():
            return folder
    return None


def _pod_uids(base: Path) -> set[str]:
    """The uids of the pods that have a cgroup on the node now (cgroupfs driver: kubepods[/QoS]/pod<uid>)."""
    uids = set()
    for folder in (base, base / "besteffort", base / "burstable"):
        try:
            uids.update(entry.name[3:] for entry in os.scandir(folder) if entry.name.startswith("pod"))
        except OSError:
            pass
    return uids


class MemorySampler:
    """The peak working set of every container of some pods, sampled from the node's cgroups in a thread.

    The working set has no kernel peak counter (max_usage_in_bytes counts page cache, which fills up to the limit
    without any memory pressure), so it is read every `interval` seconds while the pods run and the largest value
    kept per container; a peak shorter than the interval can be missed. `list_pods()` returns the pods (kubectl
    JSON items) to follow: it is called every `refresh` seconds, and at once (at most once a second) when a pod
    cgroup appears that is not known yet, so that a new pod is sampled from its first seconds. Use as a context
    manager (or start() and stop()); `rows()` after it.
    """

    def __init__(self, list_pods, interval: float = 0.5, refresh: float = 10.0, root: Path = CGROUP_ROOT):
        hierarchy = memory_hierarchy(root)
        if hierarchy is None:
            raise RuntimeError(f"no memory cgroup controller under {root}")
        mount, self.version = hierarchy
        self.kubepods = mount / "kubepods"
        self.list_pods, self.interval, self.refresh = list_pods, interval, refresh
        self.pods: dict[str, dict] = {}  # uid -> the latest JSON seen of each pod ever listed
        self.foreign: set[str] = set()  # uids of pod cgroups that list_pods() did not return
        self.peaks: dict[tuple[str, str], list[int]] = {}  # (uid, container id) -> [working set, peak, limit, samples]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self.error: BaseException | None = None
        self.failed_lists = 0

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _list(self) -> None:
        pods = self.list_pods()
        with self._lock:
            for pod in pods:
                self.pods[pod["metadata"]["uid"]] = pod

    def sample(self) -> None:
        """Read every container cgroup of the known pods once."""
        with self._lock:
            uids = list(self.pods)
        for uid in uids:
            folder = _pod_cgroup(self.kubepods, uid)
            if folder is None:
                continue
            try:
                containers = [entry.path for entry in os.scandir(folder) if entry.is_dir()]
            except OSError:
                continue
            for path in containers:
                read = read_memory(Path(path), self.version)
                if read is None:
                    continue
                working_set, peak = read
                limit = read_limit(Path(path), self.version)
                with self._lock:
                    seen = self.peaks.setdefault((uid, Path(path).name), [0, 0, 0, 0])
                    seen[0], seen[1], seen[2] = max(seen[0], working_set), max(seen[1], peak), limit
                    seen[3] += 1

    def _run(self) -> None:
        listed = 0.0
        try:
            while True:
                now = time.monotonic()
                new = _pod_uids(self.kubepods) - set(self.pods) - self.foreign
                if now - listed >= self.refresh or (new and now - listed >= 1.0):
                    listed = now
                    try:
                        self._list()
                    except Exception:  # a passing API hiccup: the next listing catches up
                        self.failed_lists += 1
                    else:
                        self.foreign |= new - set(self.pods)
                self.sample()
                if self._stop.wait(self.interval):
                    return
        except BaseException as error:  # rows() raises it: a dead sampler must not pass for a quiet pod
            self.error = error

    def rows(self) -> list[ContainerMemory]:
        """One row per container of the pods (all the containers one name had, if it restarted), by pod name."""
        if self.error is not None:
            raise RuntimeError(f"the memory sampler stopped: {self.error!r}") from self.error
        self._list()
        self.sample()
        found: dict[tuple[str, str], ContainerMemory] = {}
        with self._lock:
            for uid, pod in self.pods.items():
                limits = {
                    c["name"]: (c.get("resources") or {}).get("limits", {}).get("memory")
                    for c in pod["spec"]["containers"]
                }
                for status in pod.get("status", {}).get("containerStatuses") or []:
                    ids = [
                        status.get("containerID"),
                        ((status.get("lastState") or {}).get("terminated") or {}).get("containerID"),
                    ]
                    for cid in {(i or "").split("://")[-1] for i in ids} - {""}:
                        if (uid, cid) not in self.peaks:
                            continue
                        working_set, peak, limit, samples = self.peaks[(uid, cid)]
                        key = (pod["metadata"]["name"], status["name"])
                        row = found.setdefault(key, ContainerMemory(*key, 0, 0, 0, 0))
                        row.working_set, row.peak = max(row.working_set, working_set), max(row.peak, peak)
                        row.limit = limit if limits.get(status["name"]) else 0
                        row.samples += samples
        return sorted(found.values(), key=lambda row: (row.pod, row.container))
