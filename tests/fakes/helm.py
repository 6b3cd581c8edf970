"""A helm stand-in for the gateway tests: records every call and answers from a small state.

The state (FakeHelm.state) is the helm configuration and the release: repos (name -> url),
release (what `helm list` shows), values (`helm get values`), indexed (whether `helm search`
finds the version), helm_version, upgrade_seconds and upgrade_error. An upgrade records the
release, as helm would; any call it does not know exits 2 and names itself on stderr.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import stat
import sys
import time
from pathlib import Path

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


class FakeHelm:
    """The test side; `path` is the executable."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = str(folder / "helm")
        Path(self.path).write_text(
            f"#!/bin/sh\nFAKE_HELM_DIR={shlex.quote(str(folder))} "
            f'exec {shlex.quote(sys.executable)} {shlex.quote(__file__)} "$@"\n'
        )
        os.chmod(self.path, 0o755)

    def state(self, **values) -> None:
        (self.folder / "state.json").write_text(json.dumps(values))

    def read_state(self) -> dict:
        return json.loads((self.folder / "state.json").read_text())

    def calls(self) -> list[dict]:
        log = self.folder / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def argvs(self) -> list[list[str]]:
        return [call["argv"] for call in self.calls()]


# ---------------------------------------------------------------- the executable side


def _record(folder: Path, argv: list[str]) -> None:
    files = {}
    for flag, value in itertools.pairwise(argv):
        if flag in ("--values", "-f") and value != "-" and os.path.exists(value):
            files[value] = {"mode": oct(stat.S_IMODE(os.stat(value).st_mode)), "text": Path(value).read_text()}
    line = {"argv": argv, "files": files, "time": time.time()}
    with open(folder / "calls.jsonl", "a") as out:
        out.write(json.dumps(line) + "\n")


def _strip(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in flags:
            skip = True
        else:
            out.append(item)
    return out


def _chart(args: list[str]) -> str:
    """name-version of the chart an upgrade installs, as `helm list` shows it."""
    chart = args[3]
    if os.path.isdir(chart):
        import yaml

        meta = yaml.safe_load((Path(chart) / "Chart.yaml").read_text())
        return f"{meta['name']}-{meta['version']}"
    return f"{chart.rsplit('/', 1)[-1]}-{args[args.index('--version') + 1]}"


def helm(argv: list[str], state: dict) -> int:
    args = _strip(argv, ("--kubeconfig", "--kube-context", "--namespace"))
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
    elif args[:2] == ["upgrade", "--install"]:
        time.sleep(float(state.get("upgrade_seconds", 0)))
        if state.get("upgrade_error"):
            print(f"Error: {state['upgrade_error']}", file=sys.stderr)
            return 1
        state["release"] = {"name": args[2], "status": "deployed", "chart": _chart(args), "revision": "1"}
        print("Release has been upgraded. Happy Helming!")
    elif args[0] == "uninstall":
        state.pop("release", None)
        print(f'release "{args[1]}" uninstalled')
    else:
        print(f"fake helm: unexpected call: helm {shlex.join(argv)}", file=sys.stderr)
        return 2
    return 0


def main() -> int:
    folder = Path(os.environ["FAKE_HELM_DIR"])
    argv = sys.argv[1:]
    path = folder / "state.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    _record(folder, argv)
    code = helm(argv, state)
    path.write_text(json.dumps(state))
    return code


if __name__ == "__main__":
    sys.exit(main())
