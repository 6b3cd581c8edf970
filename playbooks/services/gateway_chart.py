"""Dask Gateway's chart: names as its helpers make them, where the chart comes from, the values we set,
and the watched `helm upgrade --install`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from playbooks.chart_files import chart_digest
from playbooks.deploy import config_hash
from playbooks.errors import PlaybookError
from playbooks.helm import Helm, redact_values, values_file
from playbooks.kube import Kubectl
from playbooks.render import label_selector, manifests_dir, plain
from playbooks.target import DNS_LABEL

SERVICE = "gateway"
CHART = "dask-gateway"
PASSWORD_ENV = "DATALAB_GATEWAY_PASSWORD"
DIGEST_ANNOTATION = "datalab-playbooks/password-digest"
# A release installed from a local chart records the digest of the chart's files in its
# description (helm upgrade --description): helm keeps it with that revision only, and any
# later upgrade or rollback without it (by hand, or from the repository) replaces it.
CHART_FILES = re.compile(r"datalab-playbooks: .*chart files sha256:([0-9a-f]{64})")


# A release installed from a local chart records the digest of the chart's files in its
# description (helm upgrade --description): helm keeps it with that revision only, and any
# later upgrade or rollback without it (by hand, or from the repository) replaces it.


def _dns(name: str) -> str:
    return name[:63].rstrip("-")


def fullname(release: str) -> str:
    return _dns(release if CHART in release else f"{release}-{CHART}")


def traefik_service(release: str) -> str:
    return _dns(f"traefik-{fullname(release)}")


def secret_name(release: str) -> str:
    return f"{release}-password"


def release_selector(release: str) -> str:
    """The chart's own match labels: every pod of the release."""
    return label_selector({"app.kubernetes.io/name": CHART, "app.kubernetes.io/instance": release})


def validate_release(name: str) -> str:
    # Helm caps release names at 53 characters.
    if len(name) > 53 or not DNS_LABEL.match(name):
        raise PlaybookError(
            f"invalid release name {name!r}: use a DNS label of at most 53 characters such as 'dask-gateway'"
        )
    return name


@dataclass(frozen=True)
class ChartSource:
    kind: str  # "repo", "local" or "oci"
    ref: str
    version: str | None
    repo: tuple[str, str] | None = None  # (name, URL) of the repository to add when absent

    def argv(self) -> list[str]:
        return [self.ref, "--version", self.version] if self.version else [self.ref]

    def describe(self) -> str:
        if self.kind == "local":
            return f"local chart {self.ref} (version {local_chart_version(Path(self.ref))})"
        return f"{self.ref} {self.version}"


def chart_description(source: ChartSource, digest: str) -> str:
    """The release description that records a local chart's files (read back by recorded_digest)."""
    name = Path(source.ref).name
    return f"datalab-playbooks: local chart {name} {local_chart_version(Path(source.ref))}, chart files sha256:{digest}"


def recorded_digest(description: str) -> str | None:
    match = CHART_FILES.search(description or "")
    return match[1] if match else None


def last_description(helm: Helm, release: str) -> str:
    """The description of the release's latest revision (`helm history --max 1`)."""
    result = helm.run("history", release, "--max", "1", "-o", "json", timeout=30)
    entries = json.loads(result.stdout or "[]")
    return str(max(entries, key=lambda e: int(e.get("revision", 0))).get("description", "")) if entries else ""


def local_digest(source: ChartSource) -> str | None:
    """The digest of a local chart's files (None for a repository or OCI chart)."""
    if source.kind != "local":
        return None
    try:
        return chart_digest(Path(source.ref))
    except OSError as error:
        raise PlaybookError(
            f"cannot read the chart {source.ref}: {error.strerror or error} ({error.filename})"
        ) from None


def local_chart_version(path: Path) -> str:
    if path.is_dir():
        meta = yaml.safe_load((path / "Chart.yaml").read_text()) or {}
        return str(meta.get("version", "?"))
    return path.name.removesuffix(".tgz").rpartition("-")[2] or "?"


def chart_source(chart: str, cfg) -> ChartSource:
    """Where the chart comes from: the pinned repository chart, a local chart, or an OCI reference."""
    usage = f"pass {cfg.repo_name}/{CHART}, a chart directory or an oci:// reference"
    version = str(cfg.chart_version)
    if chart.startswith("oci://"):
        if len(chart) <= len("oci://") or chart.endswith("/"):
            raise PlaybookError(f"invalid OCI reference {chart!r}: {usage}, e.g. oci://registry.example/charts/{CHART}")
        return ChartSource("oci", chart, version)
    path = Path(chart).expanduser()
    if path.exists() or chart.startswith((".", "/", "~")):
        if path.is_dir() and (path / "Chart.yaml").is_file():
            return ChartSource("local", str(path.resolve()), None)
        if path.is_file() and path.name.endswith(".tgz"):
            return ChartSource("local", str(path.resolve()), None)
        raise PlaybookError(f"{chart} is not a chart directory (no Chart.yaml) nor a chart .tgz: {usage}")
    repo, _, name = chart.partition("/")
    if not repo or not name or "/" in name:
        raise PlaybookError(f"invalid chart {chart!r}: {usage}")
    known = (str(cfg.repo_name), str(cfg.repo_url)) if repo == cfg.repo_name else None
    return ChartSource("repo", chart, version, known)


def prepare_chart(helm: Helm, source: ChartSource) -> None:
    """Make a repository chart resolvable: add the repository if absent, refresh a stale index."""
    if source.kind != "repo":
        return
    name = source.ref.partition("/")[0]
    added = bool(source.repo) and helm.ensure_repo(*source.repo)
    if not source.repo and name not in helm.repos():
        raise PlaybookError(
            f"helm repository {name!r} is not configured: run `helm repo add {name} URL` or pass --chart"
        )
    if helm.dry_run and added:
        return  # the repository was only shown, not added: there is no index to search
    if not helm.has_chart_version(source.ref, str(source.version)):
        if not added:
            helm.out(f"{source.ref}: version {source.version} not in the cached index; updating repository {name}")
            helm.update_repo(name)
        if not helm.dry_run and not helm.has_chart_version(source.ref, str(source.version)):
            raise PlaybookError(
                f"chart {source.ref} has no version {source.version}: set gateway.chart_version to a published one "
                f"(helm search repo {source.ref} --versions)"
            )


def file_values() -> dict:
    return yaml.safe_load((manifests_dir() / SERVICE / "values.yaml").read_text()) or {}


def _image(ref: str) -> dict:
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        raise PlaybookError(f"image {ref!r} has no tag: pin it, e.g. ghcr.io/dask/dask-gateway:2026.3.0")
    # The chart leaves pullPolicy empty (the API server's default, by tag); explicit, so that
    # nodes that cannot pull use what they have whatever the tag. (The chart's Traefik
    # container takes gateway.image.pullPolicy; traefik.image.pullPolicy is unused.)
    return {"name": name, "tag": tag, "pullPolicy": "IfNotPresent"}


# The writable /tmp of each Dask cluster pod (the root filesystem is read-only): Python's
# temporary files, and the worker's local directory for spilling (dask's default is /tmp).
# HOME stays the image's /home/dask: its packages live in ~/.local (a user install).
BACKEND_TMP_SIZE = {"scheduler": "256Mi", "worker": "1Gi"}


def _cluster_pods(role: str, cfg: dict, security) -> dict:
    """Scheduler or worker settings for the chart: cores, memory, the security contexts and /tmp.

    The controller merges extraPodConfig into the pod spec and extraContainerConfig into the
    container, appending lists (dask_gateway_server.backends.kubernetes.utils.merge_json_objects).
    """
    out = {key: value for key, value in cfg.items() if key in ("cores", "memory", "threads")}
    out["extraPodConfig"] = {
        "securityContext": plain(security.pod),
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": BACKEND_TMP_SIZE[role]}}],
    }
    out["extraContainerConfig"] = {
        "securityContext": plain(security.container),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return out


def overrides(c, release: str, password: str) -> dict:
    """What gateway.up sets over the values file: pinned images, resources, security, auth wiring."""
    cfg = c.config.gateway
    resources = plain(cfg.resources)
    server = _image(cfg.server_image)
    return {
        "gateway": {
            "image": server,
            "resources": resources["gateway"],
            # A new password (the Secret was recreated) must restart the API pod, which reads it at start.
            "annotations": {DIGEST_ANNOTATION: config_hash(password)},
            "env": [
                {"name": PASSWORD_ENV, "valueFrom": {"secretKeyRef": {"name": secret_name(release), "key": "password"}}}
            ],
            "backend": {
                "image": _image(cfg.backend_image),
                "scheduler": _cluster_pods("scheduler", plain(cfg.scheduler), c.config.security),
                "worker": _cluster_pods("worker", plain(cfg.worker), c.config.security),
            },
        },
        "controller": {"image": server, "resources": resources["controller"]},
        "traefik": {
            "image": _image(cfg.traefik_image),
            "resources": resources["traefik"],
            # A LoadBalancer with no controller to serve it makes --wait hang.
            "service": {"type": "ClusterIP"},
        },
    }


def pods_line(state: dict) -> str:
    pods = state.get("items", [])
    if not pods:
        return "no pods yet"
    ready = [p for p in pods if _ready(p)]
    waiting = [_pod_state(p) for p in pods if not _ready(p)]
    line = f"{len(ready)}/{len(pods)} pods ready"
    return f"{line}; {', '.join(waiting[:4])}" if waiting else line


def _ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_state(pod: dict) -> str:
    name, status = pod["metadata"]["name"], pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return f"{name} {waiting.get('reason', 'waiting')}"
    return f"{name} {status.get('phase', 'Unknown')}"


def install(
    helm: Helm,
    kubectl: Kubectl,
    release: str,
    source: ChartSource,
    extra: dict,
    timeout: float,
    description: str | None = None,
) -> None:
    """helm upgrade --install --wait, printing pod progress while helm waits and evidence if it fails.

    description: recorded with the new revision (a local chart's digest), if given.
    """
    base = manifests_dir() / SERVICE / "values.yaml"
    described = ["--description", description] if description else []
    if helm.dry_run:
        args = [*helm.upgrade_argv(release, source.argv(), [base, "OVERRIDES.yaml"], timeout), *described]
        helm.show(*args, note="  # OVERRIDES.yaml: a 0600 temporary file holding:")
        helm.out(yaml.safe_dump(redact_values(extra), sort_keys=False).rstrip())
        return
    selector = release_selector(release)
    with values_file(extra, "overrides.yaml") as path:
        args = [*helm.upgrade_argv(release, source.argv(), [base, path], timeout), *described]
        helm.out(f"{release}: helm upgrade --install {source.describe()} (waits up to {timeout:.0f}s)")
        result = helm.run_watched(args, timeout, lambda: pods_line(kubectl.get_json("pods", selector)), release)
    if not result.ok:
        kubectl.out(f"{release}: helm upgrade --install failed; evidence follows")
        kubectl.print_evidence(selector)
        raise PlaybookError(
            f"{helm.failure(args, result)} (see the evidence above); fix the cause and run gateway.up again"
        )
    kubectl.out(f"{release}: {pods_line(kubectl.get_json('pods', selector))}")


def unchanged(
    helm: Helm, release: str, existing: dict | None, source: ChartSource, values: dict, digest: str | None
) -> bool:
    """Whether the deployed release already has this chart and these values.

    A repository or OCI chart: the same chart version, and the latest revision was not made
    from a local chart. A local chart (digest: of its files): the digest its latest revision
    recorded.
    """
    if existing is None or existing.get("status") != "deployed":
        return False
    if source.kind != "local" and existing.get("chart") != f"{CHART}-{source.version}":
        return False
    if helm.user_values(release) != values:
        return False
    return recorded_digest(last_description(helm, release)) == digest
