"""A Kubernetes to try the playbooks on, on this machine: a kind cluster, optionally a vCluster in it.

kind runs Kubernetes nodes as Docker containers (https://kind.sigs.k8s.io). `cluster.up`
creates one from a pinned node image, or reuses it, and writes its admin kubeconfig to a
file of its own (never ~/.kube/config). `--vcluster` installs the vcluster chart in it, as
a Datalab's vCluster mode has it, and writes a second kubeconfig with context my-vcluster.

How the host reaches the vCluster API: the chart's Service is a NodePort with a fixed node
port, and the kind config publishes that node port on the host's loopback (kind
extraPortMappings with the host port left to kind, read back with `docker port`). The
vCluster's serving certificate always names 127.0.0.1, so the exported kubeconfig
(`exportKubeConfig.server: https://127.0.0.1:<host port>`) verifies TLS against the
vCluster's CA, and nothing has to stay running for it to work, unlike a port-forward.

Every CLI is called through playbooks/runner.py: an argv list with an explicit environment
(the caller's, without KUBECONFIG and helm's and kind's cluster variables) and a deadline; the
cluster is always named by flags. A developer tool of a checkout (`invoke cluster.up`), not
part of the `playbooks` script.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml
from invoke import Collection

from playbooks.errors import PlaybookError, task
from playbooks.render import dump_yaml
from playbooks.runner import (
    Result,
    TimedOut,
    child_env,
    find_command,
    last_line,
    private_file,
    run_argv,
    write_private,
)

# kind v0.33.0 lists kindest/node:v1.36.4 among the images built for it (release notes:
# ...@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed; kind guarantees
# an image only for its own release and only by digest). Kubernetes 1.36 is the host version
# vCluster 0.37 is tested on (vCluster docs: Kubernetes compatibility matrix).
KIND_VERSION = "v0.33.0"
KIND_NODE_IMAGE = "kindest/node:v1.36.4"
VCLUSTER_CHART_VERSION = "0.37.1"
MANIFESTS = Path(__file__).resolve().parent / "manifests"

# cluster.up / cluster.down: a kind cluster on this machine, optionally a vCluster in it.
DEFAULTS: dict = {
    "name": "datalab-playbooks",
    "node_image": KIND_NODE_IMAGE,
    # The kind release the image was built for: another kind version gets a note.
    "kind_version": KIND_VERSION,
    # Admin kubeconfig, under the current directory unless absolute.
    "kubeconfig": ".playbooks/kind.kubeconfig",
    # kind create cluster --wait (seconds, control plane ready), and the whole creation.
    "wait": 120,
    "create_timeout": 900,
    "kind": "kind",
    "docker": "docker",
    "vcluster": {
        "name": "my-vcluster",
        "namespace": "vcluster-my-vcluster",
        "chart": "vcluster",
        "repo_url": "https://charts.loft.sh",
        "chart_version": VCLUSTER_CHART_VERSION,
        "context": "my-vcluster",
        "kubeconfig": ".playbooks/vcluster.kubeconfig",
        # NodePort of the vCluster API, published on 127.0.0.1 by the kind cluster.
        "node_port": 31443,
        # helm --wait --timeout (seconds).
        "timeout": 600,
    },
}

Printer = Callable[[str], None]
CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PREREQUISITES_HINT = "install Docker and kind, or use an existing cluster"
POLL_SECONDS = 2


def say(line: str) -> None:
    print(line, flush=True)


# ---------------------------------------------------------------- running


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without the variables that pick a cluster; plus extra."""
    return {**child_env(os.environ), **(extra or {})}


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    stdin: str | None = None,
    label: str | None = None,
    env: Mapping[str, str] | None = None,
    out: Printer = say,
) -> Result:
    """Run argv with a deadline. With a label, show its output lines as they come (long commands)."""
    command = find_command(argv[0], "install it or put it on PATH")
    show = (lambda line: out(f"{label}: {line.rstrip()}")) if label else None
    try:
        return run_argv(command, argv[1:], env if env is not None else tool_env(), timeout, stdin, lines=show)
    except TimedOut:
        raise PlaybookError(f"`{shlex.join(argv[:3])}` did not finish within {timeout:.0f}s") from None


# ---------------------------------------------------------------- prerequisites


def docker_problem(docker: str) -> str | None:
    """None when the Docker engine answers, else why not."""
    if shutil.which(docker) is None:
        return f"{docker} is not on PATH"
    try:
        result = run([docker, "info", "--format", "{{.ServerVersion}}"], timeout=30)
    except PlaybookError as error:
        return f"Docker is not answering ({error})"
    if not result.ok:
        return f"Docker is not answering ({last_line(result.stderr or result.stdout)})"
    return None


def require_kind_and_docker(kind: str, docker: str) -> None:
    problems = [] if shutil.which(kind) else [f"{kind} is not on PATH"]
    reason = docker_problem(docker)
    if reason:
        problems.append(reason)
    if problems:
        raise PlaybookError(f"{'; '.join(problems)}: {PREREQUISITES_HINT}")


def require_tools(**tools: str) -> None:
    """Each named binary on PATH (helm, kubectl), before anything is created."""
    missing = [f"{binary} ({what})" for what, binary in tools.items() if shutil.which(binary) is None]
    if missing:
        raise PlaybookError(
            f"not on PATH: {', '.join(missing)}; install them (scripts/setup.sh adds both) "
            "or set tools.helm / tools.kubectl"
        )


def validate_cluster_name(name: str) -> str:
    if len(name) > 50 or not CLUSTER_NAME.match(name):
        raise PlaybookError(
            f"invalid cluster name {name!r}: use at most 50 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def local_path(value: str) -> Path:
    """A configured path; a relative one is under the current directory."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


# ---------------------------------------------------------------- kind


def kind_context(name: str) -> str:
    """The context kind writes for a cluster (documented: kind-<name>)."""
    return f"kind-{name}"


def kind_clusters(kind: str) -> list[str]:
    """Names listed by `kind get clusters` ("No kind clusters found." goes to stderr)."""
    result = run([kind, "get", "clusters"], timeout=60)
    if not result.ok:
        raise PlaybookError(
            f"kind get clusters failed ({last_line(result.stderr or result.stdout)}): is Docker running?"
        )
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def kind_version(kind: str) -> str | None:
    result = run([kind, "version"], timeout=20)
    match = re.search(r"v\d+\.\d+\.\d+", result.stdout)
    return match.group(0) if result.ok and match else None


def kind_config(node_ports: Sequence[int]) -> dict:
    """devtools/manifests/kind.yaml with a loopback port mapping per vCluster node port."""
    config = yaml.safe_load((MANIFESTS / "kind.yaml").read_text())
    config["nodes"][0]["extraPortMappings"] = [
        {"containerPort": int(port), "listenAddress": "127.0.0.1", "protocol": "TCP"} for port in node_ports
    ]
    return config


def create_argv(kind: str, name: str, image: str, kubeconfig: Path, wait: float) -> list[str]:
    """`kind create cluster`; the config travels on stdin (`--config -`)."""
    return [
        kind, "create", "cluster", "--name", name, "--image", image,
        "--kubeconfig", str(kubeconfig), "--wait", f"{int(wait)}s", "--config", "-",
    ]  # fmt: skip


def ensure_kind_cluster(
    kind: str,
    name: str,
    image: str,
    kubeconfig: Path,
    node_ports: Sequence[int],
    wait: float = 120,
    timeout: float = 900,
    expected_kind: str | None = None,
    out: Printer = say,
) -> bool:
    """Create the kind cluster, or reuse it and export its kubeconfig again; whether it was created."""
    kubeconfig.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if name in kind_clusters(kind):
        result = run([kind, "export", "kubeconfig", "--name", name, "--kubeconfig", str(kubeconfig)], timeout=60)
        if not result.ok:
            raise PlaybookError(f"kind export kubeconfig failed: {last_line(result.stderr or result.stdout)}")
        return False
    if expected_kind:
        found = kind_version(kind)
        if found and not found.startswith(expected_kind.rsplit(".", 1)[0] + "."):
            out(
                f"kind cluster {name}: note: this is kind {found}; {image} was picked from the images "
                f"built for kind {expected_kind} (set cluster.node_image if creation fails)"
            )
    config = yaml.safe_dump(kind_config(node_ports), sort_keys=False)
    try:
        result = run(create_argv(kind, name, image, kubeconfig, wait), timeout=timeout, stdin=config, label="kind")
    except PlaybookError as error:
        raise PlaybookError(f"{error}; `invoke cluster.down` removes what is left") from None
    if not result.ok:
        raise PlaybookError(
            f"kind create cluster failed: {last_line(result.stdout)} (its output is above); "
            "`invoke cluster.down` removes what is left"
        )
    return True


def delete_kind_cluster(kind: str, name: str, kubeconfig: Path, timeout: float = 300) -> None:
    argv = [kind, "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)]
    result = run(argv, timeout=timeout, label="kind")
    if not result.ok:
        raise PlaybookError(f"kind delete cluster failed: {last_line(result.stdout)}")


def published_port(kind: str, docker: str, name: str, node_port: int) -> int:
    """The host port (on 127.0.0.1) where the kind node publishes a node port."""
    nodes = run([kind, "get", "nodes", "--name", name], timeout=60).stdout.split()
    node = next((n for n in nodes if n.endswith("-control-plane")), nodes[0] if nodes else None)
    if node is None:
        raise PlaybookError(f"kind cluster {name} has no nodes: run `invoke cluster.down`, then `cluster.up` again")
    result = run([docker, "port", node, f"{node_port}/tcp"], timeout=30)
    bindings = [line.strip() for line in result.stdout.splitlines() if re.search(r":\d+$", line.strip())]
    chosen = next((b for b in bindings if b.startswith("127.0.0.1:")), bindings[0] if bindings else None)
    if not result.ok or chosen is None:
        raise PlaybookError(
            f"kind cluster {name} does not publish node port {node_port} on this host (it was created "
            "without cluster.up's port mapping): run `invoke cluster.down`, then `invoke cluster.up --vcluster`"
        )
    return int(chosen.rsplit(":", 1)[1])


# ---------------------------------------------------------------- vCluster


def vcluster_values(node_port: int, server: str, context: str) -> dict:
    """devtools/manifests/vcluster-values.yaml with the node port and the exported kubeconfig's server and context."""
    values = yaml.safe_load((MANIFESTS / "vcluster-values.yaml").read_text())
    values["controlPlane"]["service"]["httpsNodePort"] = int(node_port)
    values["exportKubeConfig"] = {**(values.get("exportKubeConfig") or {}), "server": server, "context": context}
    return values


def helm_argv(
    helm: str, admin_kubeconfig: Path, kube_context: str, release: str, namespace: str,
    chart: str, repo: str, version: str, values: Path, timeout: float,
) -> list[str]:  # fmt: skip
    return [
        helm, "upgrade", "--install", release, chart, "--repo", repo, "--version", str(version),
        "--namespace", namespace, "--create-namespace", "--values", str(values),
        "--wait", "--timeout", f"{int(timeout)}s",
        "--kubeconfig", str(admin_kubeconfig), "--kube-context", kube_context,
    ]  # fmt: skip


def install_vcluster(
    helm: str,
    kubectl: str,
    admin_kubeconfig: Path,
    kube_context: str,
    release: str,
    namespace: str,
    chart: str,
    repo: str,
    version: str,
    values: dict,
    timeout: float,
    env: Mapping[str, str] | None = None,
    out: Printer = say,
) -> None:
    """helm upgrade --install the vcluster chart and wait for it; on failure show the pods and events."""
    with private_file(dump_yaml(values), "vcluster-values.yaml", prefix="playbooks-vcluster-") as path:
        argv = helm_argv(helm, admin_kubeconfig, kube_context, release, namespace, chart, repo, version, path, timeout)
        result = run(argv, timeout=timeout + 60, label="helm", env=env, out=out)
    if not result.ok:
        evidence = run(
            [kubectl, "--kubeconfig", str(admin_kubeconfig), "--context", kube_context,
             "get", "pods,events", "-n", namespace, "-o", "wide"],
            timeout=30,
        )  # fmt: skip
        out(f"--- kubectl get pods,events -n {namespace}")
        out("\n".join((evidence.stdout or evidence.stderr).splitlines()[-40:]) or "(nothing)")
        raise PlaybookError(f"helm upgrade --install {release} failed: {last_line(result.stdout)} (evidence above)")


def point_kubeconfig(config: dict, server: str, context: str) -> dict:
    """The exported kubeconfig with every cluster entry at server and its current context named context."""
    config = copy.deepcopy(config)
    for entry in config.get("clusters") or []:
        entry.setdefault("cluster", {})["server"] = server
    current = config.get("current-context")
    for entry in config.get("contexts") or []:
        if entry.get("name") == current:
            entry["name"] = context
    config["current-context"] = context
    return config


def read_vcluster_kubeconfig(
    kubectl: str, admin_kubeconfig: Path, kube_context: str, name: str, namespace: str, timeout: float
) -> dict:
    """The kubeconfig the vCluster stores in Secret vc-<name> (key config) of its namespace."""
    argv = [
        kubectl, "--kubeconfig", str(admin_kubeconfig), "--context", kube_context,
        "get", "secret", f"vc-{name}", "-n", namespace, "-o", "jsonpath={.data.config}",
    ]  # fmt: skip
    deadline = time.monotonic() + timeout
    last = "(no answer)"
    while True:
        result = run(argv, timeout=30)
        if result.ok and result.stdout.strip():
            return yaml.safe_load(base64.b64decode(result.stdout.strip()))
        last = last_line(result.stderr) if not result.ok else "the Secret has no kubeconfig yet"
        if time.monotonic() >= deadline:
            raise PlaybookError(
                f"no kubeconfig in Secret vc-{name} of namespace {namespace} after {timeout:.0f}s ({last}): "
                f"see `kubectl -n {namespace} logs statefulset/{name}`"
            )
        time.sleep(POLL_SECONDS)


def wait_reachable(kubectl: str, kubeconfig: Path, server: str, timeout: float) -> None:
    """Until the API behind kubeconfig answers /readyz, or the deadline."""
    argv = [kubectl, "--kubeconfig", str(kubeconfig), "--request-timeout=5s", "get", "--raw", "/readyz"]
    deadline = time.monotonic() + timeout
    while True:
        result = run(argv, timeout=20)
        if result.ok:
            return
        if time.monotonic() >= deadline:
            raise PlaybookError(
                f"the vCluster API at {server} does not answer after {timeout:.0f}s "
                f"({last_line(result.stderr or result.stdout)})"
            )
        time.sleep(POLL_SECONDS)


def write_vcluster_kubeconfig(
    kubectl: str,
    admin_kubeconfig: Path,
    kube_context: str,
    name: str,
    namespace: str,
    server: str,
    context: str,
    path: Path,
    timeout: float = 120,
) -> Path:
    """Read the vCluster's kubeconfig, point it at server, write it (0600), check that it answers."""
    exported = read_vcluster_kubeconfig(kubectl, admin_kubeconfig, kube_context, name, namespace, timeout)
    write_private(path, yaml.safe_dump(point_kubeconfig(exported, server, context), sort_keys=False))
    wait_reachable(kubectl, path, server, timeout=60)
    return path


# ---------------------------------------------------------------- tasks


def _cluster_name(c, name: str | None) -> str:
    return validate_cluster_name(name or c.config.cluster.name)


@task(
    help={
        "vcluster": "Also install a vCluster in it (chart vcluster from charts.loft.sh) and write its kubeconfig.",
        "name": "Name of the kind cluster (default: datalab-playbooks).",
        "image": "kind node image (default: the pinned cluster.node_image).",
    }
)
def up(c, vcluster=False, name=None, image=None):
    """Create a local kind cluster (or reuse it) and write its kubeconfig; --vcluster adds a vCluster."""
    cfg = c.config.cluster
    name = _cluster_name(c, name)
    image = image or cfg.node_image
    require_kind_and_docker(cfg.kind, cfg.docker)
    if vcluster:
        require_tools(helm=c.config.tools.helm, kubectl=c.config.tools.kubectl)
    kubeconfig = local_path(cfg.kubeconfig)
    start = time.monotonic()
    created = ensure_kind_cluster(
        cfg.kind, name, image, kubeconfig, [int(cfg.vcluster.node_port)],
        wait=float(cfg.wait), timeout=float(cfg.create_timeout), expected_kind=cfg.kind_version,
    )  # fmt: skip
    if created:
        say(f"kind cluster {name}: created from {image} in {time.monotonic() - start:.0f}s")
    else:
        say(f"kind cluster {name}: already there, reused (kubeconfig exported again)")
    say(f"kind cluster {name}: admin kubeconfig {kubeconfig} (context {kind_context(name)})")
    say(f"use it:  export KUBECONFIG={shlex.quote(str(kubeconfig))}")
    if vcluster:
        _up_vcluster(c, name, kubeconfig)


def _up_vcluster(c, cluster: str, admin_kubeconfig: Path) -> None:
    vc = c.config.cluster.vcluster
    helm, kubectl = c.config.tools.helm, c.config.tools.kubectl
    host_port = published_port(c.config.cluster.kind, c.config.cluster.docker, cluster, int(vc.node_port))
    server = f"https://127.0.0.1:{host_port}"
    start = time.monotonic()
    install_vcluster(
        helm, kubectl, admin_kubeconfig, kind_context(cluster), vc.name, vc.namespace,
        vc.chart, vc.repo_url, vc.chart_version, vcluster_values(int(vc.node_port), server, vc.context),
        float(vc.timeout),
    )  # fmt: skip
    path = write_vcluster_kubeconfig(
        kubectl, admin_kubeconfig, kind_context(cluster), vc.name, vc.namespace, server, vc.context,
        local_path(vc.kubeconfig),
    )  # fmt: skip
    say(
        f"vcluster {vc.name}: ready in namespace {vc.namespace} (chart {vc.chart} {vc.chart_version}) "
        f"after {time.monotonic() - start:.0f}s"
    )
    say(f"vcluster {vc.name}: kubeconfig {path} (context {vc.context}, API {server}, node port {vc.node_port})")
    say(f"use the vCluster:  export KUBECONFIG={shlex.quote(str(path))}")


@task(help={"name": "Name of the kind cluster (default: datalab-playbooks)."})
def down(c, name=None):
    """Delete the kind cluster cluster.up made (its vCluster with it) and the kubeconfig files it wrote."""
    cfg = c.config.cluster
    name = _cluster_name(c, name)
    kubeconfig = local_path(cfg.kubeconfig)
    if shutil.which(cfg.kind) is None:
        say(f"kind cluster {name}: {cfg.kind} is not on PATH, so there is no kind cluster to delete")
    elif name in kind_clusters(cfg.kind):
        delete_kind_cluster(cfg.kind, name, kubeconfig)
        say(f"kind cluster {name}: deleted")
    else:
        say(f"kind cluster {name}: not found, nothing to delete")
    removed = False
    for value in (cfg.kubeconfig, cfg.vcluster.kubeconfig):
        path = local_path(value)
        if path.exists():
            path.unlink()
            say(f"removed {path}")
            removed = True
        if not Path(value).expanduser().is_absolute():
            try:
                path.parent.rmdir()  # .playbooks/, only when empty: other tasks keep state there too
            except OSError:
                pass
    if not removed:
        say("no kubeconfig files of cluster.up to remove")


ns = Collection("cluster", up, down)
ns.configure({"cluster": DEFAULTS})
