"""Stand-ins for helm and kubectl that record every call and answer from a state file.

Run as `python fake_cli.py helm|kubectl ARGS...`; FAKE_CLI_DIR names a folder with
state.json (the fake cluster and helm config, updated by writes) and calls.jsonl (one line
per call: tool, argv, stdin, and the mode and text of every --values file at call time).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import stat
import sys
import time
from pathlib import Path

FOLDER = Path(os.environ["FAKE_CLI_DIR"])
STATE = FOLDER / "state.json"

CRDS = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: daskclusters.gateway.dask.org
spec:
  group: gateway.dask.org
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ingressroutes.traefik.io
spec:
  group: traefik.io
"""


def load() -> dict:
    return json.loads(STATE.read_text()) if STATE.exists() else {}


def save(state: dict) -> None:
    STATE.write_text(json.dumps(state))


def record(tool: str, argv: list[str], stdin: str | None) -> None:
    files = {}
    for flag, value in itertools.pairwise(argv):
        if flag in ("--values", "-f") and value != "-" and os.path.exists(value):
            files[value] = {"mode": oct(stat.S_IMODE(os.stat(value).st_mode)), "text": Path(value).read_text()}
    line = {"tool": tool, "argv": argv, "stdin": stdin, "files": files, "time": time.time()}
    with open(FOLDER / "calls.jsonl", "a") as out:
        out.write(json.dumps(line) + "\n")


def strip_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in flags:
            skip = True
        else:
            out.append(item)
    return out


def helm(argv: list[str], state: dict) -> int:
    args = strip_flags(argv, ("--kubeconfig", "--kube-context", "--namespace"))
    if args[:2] == ["version", "--short"]:
        print(state.get("helm_version", "v4.1.4+g05fa379"))
    elif args[:2] == ["repo", "list"]:
        print(json.dumps([{"name": n, "url": u} for n, u in state.get("repos", {}).items()]))
    elif args[:2] == ["repo", "add"]:
        state.setdefault("repos", {})[args[2]] = args[3]
        print(f'"{args[2]}" has been added to your repositories')
    elif args[:2] == ["repo", "update"]:
        print("Update Complete.")
    elif args[:2] == ["search", "repo"]:
        print(json.dumps([{"name": args[2], "version": args[4]}] if state.get("indexed", True) else []))
    elif args[0] == "list":
        print(json.dumps([state["release"]] if state.get("release") else []))
    elif args[:2] == ["get", "values"]:
        print(json.dumps(state.get("values", {})))
    elif args[:2] == ["show", "crds"]:
        print(CRDS)
    elif args[0] == "upgrade":
        time.sleep(float(state.get("upgrade_seconds", 0)))
        if state.get("upgrade_error"):
            print(f"Error: {state['upgrade_error']}", file=sys.stderr)
            return 1
        state["release"] = {"name": args[2], "status": "deployed", "chart": "dask-gateway-2026.3.0", "revision": "1"}
        print("Release has been upgraded. Happy Helming!")
    elif args[0] == "uninstall":
        state.pop("release", None)
        print(f'release "{args[1]}" uninstalled')
    else:
        print(f"Error: fake helm does not know {args}", file=sys.stderr)
        return 1
    return 0


def kubectl(argv: list[str], state: dict, stdin: str | None) -> int:
    args = strip_flags(argv, ("--kubeconfig", "--context", "--namespace"))
    secret = state.get("secret")
    if args[:2] == ["version", "--client"]:
        print(json.dumps({"clientVersion": {"major": "1", "minor": "35", "gitVersion": "v1.35.0"}}))
    elif args[0] == "get" and args[1].startswith("secret/"):
        if secret:
            encoded = base64.b64encode(secret.encode()).decode()
            print(json.dumps({"kind": "Secret", "data": {"password": encoded}}))
    elif args[0] == "get" and args[1] == "secrets":
        if secret:
            print("secret/dask-gateway-password")
    elif args[0] == "get" and args[1].startswith("service/"):
        if state.get("release"):
            print(json.dumps({"kind": "Service", "spec": {"ports": [{"name": "web", "port": 80}]}}))
    elif args[0] == "get" and args[1] == "services":
        items = []
        if state.get("release"):
            labels = {"app.kubernetes.io/name": "dask-gateway", "app.kubernetes.io/instance": state["release"]["name"]}
            items = [{"kind": "Service", "metadata": {"name": "traefik-dask-gateway", "labels": labels}}]
        print(json.dumps({"kind": "List", "items": items}))
    elif args[0] == "get" and args[1] == "customresourcedefinitions.apiextensions.k8s.io":
        if "json" in args:
            managed = [{"manager": "datalab-playbooks", "operation": "Apply"}]
            items = [
                {"kind": "CustomResourceDefinition", "metadata": {"name": n, "managedFields": managed}}
                for n in state.get("crds", [])
            ]
            print(json.dumps({"kind": "List", "items": items}))
        else:
            for name in state.get("crds", []):
                print(f"customresourcedefinition.apiextensions.k8s.io/{name}")
    elif args[0] == "get" and args[1] == "pods":
        ready = "True" if state.get("release") else "False"
        pod = {
            "kind": "Pod",
            "metadata": {"name": "api-dask-gateway-1"},
            "status": {
                "phase": "Running" if ready == "True" else "Pending",
                "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": []
                if ready == "True"
                else [{"state": {"waiting": {"reason": "ContainerCreating"}}}],
            },
        }
        print(json.dumps({"kind": "List", "items": [pod]}))
    elif args[0] == "get":
        print(json.dumps({"kind": "List", "items": []}) if "json" in args else "")
    elif args[0] == "diff":
        return int(state.get("diff_exit", 1))
    elif args[0] == "apply":
        if "kind: Secret" in (stdin or ""):
            import yaml

            doc = next(d for d in yaml.safe_load_all(stdin) if d and d["kind"] == "Secret")
            state["secret"] = base64.b64decode(doc["data"]["password"]).decode()
        print("applied")
    elif args[0] == "delete":
        if any(a.startswith("secret/") for a in args):
            state.pop("secret", None)
        print("deleted")
    elif args[0] == "port-forward":
        # Stands for a forward to the service: points at the real local gateway of the test.
        print(f"Forwarding from 127.0.0.1:{state['forward_port']} -> 8000", flush=True)
        time.sleep(300)
    else:
        print(f"{args[0]}: (fake evidence)")
    return 0


def main() -> int:
    tool, argv = sys.argv[1], sys.argv[2:]
    # A port-forward's stdin stays open (kubectl never reads it): reading would block.
    reads = sys.stdin is not None and not sys.stdin.isatty() and "port-forward" not in argv
    stdin = sys.stdin.read() if reads else None
    record(tool, argv, stdin or None)
    state = load()
    code = helm(argv, state) if tool == "helm" else kubectl(argv, state, stdin)
    save(state)
    return code


if __name__ == "__main__":
    sys.exit(main())
