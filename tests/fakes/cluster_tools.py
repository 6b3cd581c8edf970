"""Stand-ins for docker, kind and helm (the vcluster chart) that record every call and answer as
the real tools do (same output streams, same exit codes), from a small state file; kubectl is
the strict fake (tests/fakes/kubectl.py).

Run as `python cluster_tools.py TOOL ARGS...` (tests/test_cluster.py writes one wrapper script
per tool). FAKE_TOOLS_DIR names a folder with state.json (the fake world) and calls.jsonl (one
line per call: tool, argv, stdin, the text of any --values file, and the time). State keys:
docker_down (bool), clusters (names), host_port (int), vclusters (release -> values),
publish (bool: whether the node publishes the vCluster node port). Any call they do not know
exits 2 and names itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import yaml

from devtools.cluster import KIND_VERSION

DOCKER_DOWN = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"


def folder() -> Path:
    return Path(os.environ["FAKE_TOOLS_DIR"])


def load() -> dict:
    state = folder() / "state.json"
    return json.loads(state.read_text()) if state.exists() else {}


def save(state: dict) -> None:
    (folder() / "state.json").write_text(json.dumps(state))


def flag(argv: list[str], name: str) -> str | None:
    for i, item in enumerate(argv):
        if item == name and i + 1 < len(argv):
            return argv[i + 1]
        if item.startswith(name + "="):
            return item.split("=", 1)[1]
    return None


def record(tool: str, argv: list[str], stdin: str | None) -> None:
    values = flag(argv, "--values")
    files = {values: Path(values).read_text()} if values and os.path.exists(values) else {}
    with open(folder() / "calls.jsonl", "a") as out:
        line = {"tool": tool, "argv": argv, "stdin": stdin, "files": files, "time": time.time()}
        out.write(json.dumps(line) + "\n")


def fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def kind_kubeconfig(name: str) -> dict:
    key = f"kind-{name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": key, "cluster": {"server": "https://127.0.0.1:39211", "certificate-authority-data": "Q0E="}}
        ],
        "contexts": [{"name": key, "context": {"cluster": key, "user": key}}],
        "current-context": key,
        "users": [{"name": key, "user": {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}}],
        "preferences": {},
    }


def docker(argv: list[str], state: dict) -> int:
    if state.get("docker_down"):
        return fail(DOCKER_DOWN)
    if argv[:1] == ["info"]:
        print("29.1.2")
        return 0
    if argv[:1] == ["port"]:
        node, port = argv[1], argv[2]
        names = [f"{c}-control-plane" for c in state.get("clusters", [])]
        if node not in names:
            return fail(f"Error response from daemon: No such container: {node}")
        if not state.get("publish", True):
            return fail(f"Error: No public port '{port}' published for {node}")
        print(f"127.0.0.1:{state.get('host_port', 40123)}")
        return 0
    return fail(f"fake docker: unexpected {argv}", 2)


def kind(argv: list[str], state: dict, stdin: str | None) -> int:
    clusters = state.setdefault("clusters", [])
    name = flag(argv, "--name") or "kind"
    if argv[:1] == ["version"]:
        print(state.get("kind_version", f"kind {KIND_VERSION} go1.25.3 linux/amd64"))
        return 0
    if state.get("docker_down"):
        return fail(
            f'ERROR: failed to list clusters: command "docker ps -a" failed with error: exit status 1\n{DOCKER_DOWN}'
        )
    if argv[:2] == ["get", "clusters"]:
        if not clusters:
            return fail("No kind clusters found.", 0)
        print("\n".join(clusters))
        return 0
    if argv[:2] == ["get", "nodes"]:
        if name not in clusters:
            return fail(f'No kind nodes found for cluster "{name}".', 0)
        print(f"{name}-control-plane")
        return 0
    if argv[:2] == ["create", "cluster"]:
        if name in clusters:
            return fail(f'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "{name}"')
        image = flag(argv, "--image")
        config = yaml.safe_load(stdin) if flag(argv, "--config") == "-" else {}
        assert config.get("kind") == "Cluster", config
        for line in (f'Creating cluster "{name}" ...', f" ✓ Ensuring node image ({image}) 🖼", " ✓ Preparing nodes 📦",
                     " ✓ Writing configuration 📜", " ✓ Starting control-plane 🕹️", " ✓ Installing CNI 🔌",
                     " ✓ Installing StorageClass 💾", " ✓ Waiting ≤ 2m0s for control-plane = Ready ⏳",
                     f'Set kubectl context to "kind-{name}"'):  # fmt: skip
            print(line, file=sys.stderr)
        clusters.append(name)
        write_kubeconfig(flag(argv, "--kubeconfig"), name)
        return 0
    if argv[:2] == ["export", "kubeconfig"]:
        if name not in clusters:
            return fail(
                f"ERROR: could not locate any control plane nodes for cluster named '{name}'. Use the --name option to select a different cluster"
            )
        write_kubeconfig(flag(argv, "--kubeconfig"), name)
        print(f'Set kubectl context to "kind-{name}"', file=sys.stderr)
        return 0
    if argv[:2] == ["delete", "cluster"]:
        print(f'Deleting cluster "{name}" ...', file=sys.stderr)
        if name in clusters:
            clusters.remove(name)
            print(f'Deleted nodes: ["{name}-control-plane"]', file=sys.stderr)
        path = flag(argv, "--kubeconfig")
        if path and os.path.exists(path):  # kind leaves the file, without its entries
            Path(path).write_text(
                yaml.safe_dump(
                    {"apiVersion": "v1", "kind": "Config", "clusters": None, "contexts": None, "users": None}
                )
            )
        state.pop("vclusters", None)
        return 0
    return fail(f"fake kind: unexpected {argv}", 2)


def write_kubeconfig(path: str | None, name: str) -> None:
    target = Path(path or Path.home() / ".kube" / "config")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(kind_kubeconfig(name)))
    target.chmod(0o600)


def helm(argv: list[str], state: dict) -> int:
    if argv[:2] == ["upgrade", "--install"]:
        release = argv[2]
        values = yaml.safe_load(Path(flag(argv, "--values")).read_text())
        fresh = release not in state.setdefault("vclusters", {})
        state["vclusters"][release] = {"namespace": flag(argv, "--namespace"), "values": values}
        if fresh:
            print(f'Release "{release}" does not exist. Installing it now.')
        print(f"NAME: {release}\nNAMESPACE: {flag(argv, '--namespace')}\nSTATUS: deployed")
        return 0
    return fail(f"fake helm: unexpected {argv}", 2)


def vcluster_kubeconfig(values: dict) -> dict:
    """What the vCluster writes to Secret vc-<name>: localhost:8443 unless exportKubeConfig says otherwise.

    The tests script `kubectl get secret vc-<name>` to answer it (see tests/test_cluster.py)."""
    export = values.get("exportKubeConfig") or {}
    context = export.get("context") or "Default"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {
                    "server": export.get("server") or "https://localhost:8443",
                    "certificate-authority-data": "VkNB",
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
        "users": [{"name": context, "user": {"client-certificate-data": "VkNFUlQ=", "client-key-data": "VktFWQ=="}}],
    }


def main() -> int:
    tool, argv = sys.argv[1], sys.argv[2:]
    # Only `--config -` reads stdin, as kind does: reading it otherwise could wait for ever.
    stdin = sys.stdin.read() if tool == "kind" and flag(argv, "--config") == "-" else None
    record(tool, argv, stdin or None)
    state = load()
    if tool == "docker":
        code = docker(argv, state)
    elif tool == "kind":
        code = kind(argv, state, stdin)
    else:
        code = helm(argv, state)
    save(state)
    return code


if __name__ == "__main__":
    sys.exit(main())
