"""Where the credentials come from, read without touching the API: KUBECONFIG (one file or a list),
~/.kube/config, or the in-cluster service account (for which a kubeconfig is written)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from playbooks import runner
from playbooks.errors import PlaybookError
from playbooks.runner import private_dir, write_private

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Test and advanced knob: where the service account's token, ca.crt and namespace are mounted.
SERVICE_ACCOUNT_DIR_ENV = "DATALAB_PLAYBOOKS_SERVICE_ACCOUNT_DIR"
IN_CLUSTER_KUBECONFIG = "in-cluster.kubeconfig"
IN_CLUSTER_CONTEXT = "in-cluster"


@dataclass(frozen=True)
class KubeSource:
    """Where the credentials come from, read without touching the API."""

    kubeconfig: str | None  # a file, or a list of files (a:b) as KUBECONFIG holds them
    context: str | None
    server: str
    context_namespace: str | None
    in_cluster_namespace: str | None = None
    # The service account's folder when its token is used (through a kubeconfig written for it).
    service_account: str | None = None

    @property
    def kubeconfig_list(self) -> bool:
        """Several files, which no --kubeconfig flag takes: they go to kubectl and helm as KUBECONFIG."""
        return runner.is_list(self.kubeconfig)

    def child_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment of a kubectl or helm child (runner.child_env): never the caller's cluster settings."""
        return runner.child_env(base, self.kubeconfig)

    def kubeconfig_flags(self, flag: str = "--kubeconfig") -> list[str]:
        return runner.kubeconfig_flags(self.kubeconfig, flag)


class NoKubernetes(PlaybookError):
    """No kubeconfig and no service account: local mode is the fallback."""


def _kubeconfig_files(value: str) -> list[Path]:
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


def _merged_kubeconfig(files: list[Path]) -> dict:
    """Merge kubeconfig files as kubectl does: the first file to set a value wins."""
    merged: dict = {"current-context": None, "contexts": {}, "clusters": {}}
    for path in files:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            continue
        except (OSError, yaml.YAMLError) as error:
            raise PlaybookError(f"cannot read kubeconfig {path}: {error}; fix or replace the file") from None
        if not isinstance(data, dict):
            raise PlaybookError(f"kubeconfig {path} is not a kubeconfig mapping; fix or replace the file")
        merged["current-context"] = merged["current-context"] or data.get("current-context")
        for key in ("contexts", "clusters"):
            for item in data.get(key) or []:
                if isinstance(item, dict) and item.get("name"):
                    merged[key].setdefault(item["name"], item.get(key[:-1]) or {})
    return merged


def locate_kubeconfig(
    env: Mapping[str, str],
    explicit: str | None = None,
    context: str | None = None,
    home: Path | None = None,
    service_account_dir: Path | None = None,
) -> KubeSource:
    """KUBECONFIG, then ~/.kube/config, then the in-cluster service account.

    For the service account a kubeconfig is written that points at its token file (see
    in_cluster_kubeconfig): kubectl reads its in-cluster configuration only when no flag
    overrides anything, and the playbooks always pass --namespace.
    """
    home = home or Path.home()
    if service_account_dir is None:
        service_account_dir = Path(env.get(SERVICE_ACCOUNT_DIR_ENV) or SERVICE_ACCOUNT_DIR)
    candidates = [
        ("--kubeconfig", explicit),
        ("KUBECONFIG", env.get("KUBECONFIG")),
        ("~/.kube/config", str(home / ".kube" / "config")),
    ]
    for origin, value in candidates:
        if not value:
            continue
        files = _kubeconfig_files(value)
        if not any(f.is_file() for f in files):
            if origin == "~/.kube/config":
                continue
            raise PlaybookError(f"{origin} points to {value}, which does not exist; fix the path or unset it")
        config = _merged_kubeconfig(files)
        name = context or config["current-context"]
        if not name:
            raise PlaybookError(f"kubeconfig {value} has no current context; pass --context NAME")
        if name not in config["contexts"]:
            known = ", ".join(sorted(config["contexts"])) or "none"
            raise PlaybookError(f"context {name!r} is not in kubeconfig {value} (known: {known}); pass --context NAME")
        ctx = config["contexts"][name]
        cluster = config["clusters"].get(ctx.get("cluster"), {})
        return KubeSource(
            kubeconfig=value,
            context=name,
            server=cluster.get("server") or "(no server in kubeconfig)",
            context_namespace=ctx.get("namespace"),
        )
    token = service_account_dir / "token"
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if host and token.is_file():
        ns_file = service_account_dir / "namespace"
        host = f"[{host}]" if ":" in host else host
        server = f"https://{host}:{port}"
        namespace = ns_file.read_text().strip() if ns_file.is_file() else None
        return KubeSource(
            kubeconfig=str(in_cluster_kubeconfig(service_account_dir, server, namespace, env)),
            context=None,
            server=server,
            context_namespace=None,
            in_cluster_namespace=namespace,
            service_account=str(service_account_dir),
        )
    raise NoKubernetes(
        "no Kubernetes configuration found (no KUBECONFIG, no ~/.kube/config, no service account): "
        "point KUBECONFIG at a kubeconfig, enable Kubernetes access for the session, or use --mode local"
    )


def in_cluster_kubeconfig(
    service_account_dir: Path, server: str, namespace: str | None, env: Mapping[str, str]
) -> Path:
    """A kubeconfig for the mounted service account, written 0600 into private_dir.

    It names the token *file* (kubectl rereads it, so a rotated token keeps working) and the
    CA file; it never holds a copy of the token. Written atomically, and only when it changes.
    """
    ca = service_account_dir / "ca.crt"
    cluster: dict = {"server": server}
    if ca.is_file():
        cluster["certificate-authority"] = str(ca)
    context: dict = {"cluster": IN_CLUSTER_CONTEXT, "user": "service-account"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": IN_CLUSTER_CONTEXT, "cluster": cluster}],
        "contexts": [{"name": IN_CLUSTER_CONTEXT, "context": context}],
        "current-context": IN_CLUSTER_CONTEXT,
        "users": [{"name": "service-account", "user": {"tokenFile": str(service_account_dir / "token")}}],
    }
    text = "# Written by datalab-playbooks for the in-cluster service account: the token stays in its file.\n"
    text += yaml.safe_dump(config, sort_keys=False)
    path = private_dir(env) / IN_CLUSTER_KUBECONFIG
    try:
        info = path.lstat()
        if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and path.read_text() == text:
            return path
    except OSError:
        pass
    try:
        write_private(path, text)
    except OSError as error:
        raise PlaybookError(
            f"cannot write the in-cluster kubeconfig to {path} ({error.strerror}): set XDG_RUNTIME_DIR or TMPDIR to a writable folder"
        ) from None
    return path
