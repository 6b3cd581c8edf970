"""Dask Gateway: the dask/dask-gateway Helm chart, simple auth, reached through its Traefik service.

vCluster mode only: the chart installs CRDs and cluster roles. Local mode: the same tasks run
`dask-gateway-server` with a local-process backend on this machine (gateway_local).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shlex
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml
from invoke import Collection

from playbooks import local, preflight
from playbooks.chart_files import chart_digest
from playbooks.deploy import config_hash, kubectl_for, resolve_target
from playbooks.endpoint import check_service, in_cluster_host
from playbooks.errors import PlaybookError, task
from playbooks.gateway_check import run_check
from playbooks.helm import Helm, merge_values, redact_values, values_file
from playbooks.kube import Kubectl
from playbooks.render import label_selector, managed_selector, manifests_dir, plain, render
from playbooks.report import Report, require_passed
from playbooks.services import gateway_local
from playbooks.target import DNS_LABEL, Target, validate_namespace

SERVICE = "gateway"
CHART = "dask-gateway"
# The password Secret is rendered from manifests/gateway-auth/ (manifests/gateway/ holds Helm values).
AUTH = "gateway-auth"
PASSWORD_ENV = "DATALAB_GATEWAY_PASSWORD"
DIGEST_ANNOTATION = "datalab-playbooks/password-digest"
CRD_RESOURCE = "customresourcedefinitions.apiextensions.k8s.io"
# A release installed from a local chart records the digest of the chart's files in its
# description (helm upgrade --description): helm keeps it with that revision only, and any
# later upgrade or rollback without it (by hand, or from the repository) replaces it.
CHART_FILES = re.compile(r"datalab-playbooks: .*chart files sha256:([0-9a-f]{64})")
DASKCLUSTERS = "daskclusters.gateway.dask.org"

TARGET_HELP = {
    "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
    "mode": "namespace, vcluster or local; overrides detection.",
}
RELEASE_HELP = {"release": "Helm release name (default: gateway.release, dask-gateway)."}
CHART_HELP = {
    "chart": "Chart: dask/dask-gateway (default), a local chart directory, or an oci:// reference (no repository added).",
}


# ---------------------------------------------------------------- names, as the chart's _helpers.tpl makes them


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


def _release(c, name: str | None) -> str:
    return validate_release(name or c.config.gateway.release)


def _seconds(value, option: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0
    if seconds <= 0:
        raise PlaybookError(f"invalid {option} {value!r}: give a number of seconds, e.g. {option} 600")
    return seconds


# ---------------------------------------------------------------- the chart


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


# ---------------------------------------------------------------- the password


def read_password(kubectl: Kubectl, release: str) -> str | None:
    result = kubectl.run("get", f"secret/{secret_name(release)}", "-o", "json", "--ignore-not-found", timeout=20)
    if not result.stdout.strip():
        return None
    encoded = (json.loads(result.stdout).get("data") or {}).get("password") or ""
    return base64.b64decode(encoded).decode() or None


def password_docs(release: str, namespace: str, password: str) -> list[dict]:
    encoded = base64.b64encode(password.encode()).decode()
    return render(AUTH, release, namespace, {"secret_name": secret_name(release), "password": encoded})


def choose_password(kubectl: Kubectl, release: str) -> str:
    """The release's password: reused from its Secret, or generated (store_password keeps it)."""
    password = read_password(kubectl, release)
    if password is None:
        password = secrets.token_urlsafe(32)
        kubectl.out(
            f"{release}: {'would generate' if kubectl.dry_run else 'generated'} a password in Secret {secret_name(release)}"
        )
    return password


def store_password(kubectl: Kubectl, release: str, password: str) -> None:
    kubectl.apply(password_docs(release, kubectl.target.namespace, password))


# ---------------------------------------------------------------- up


def require_vcluster(target: Target) -> None:
    if target.local:
        raise PlaybookError(
            "Dask Gateway needs a Kubernetes cluster in vCluster mode (its chart installs CRDs and cluster roles) "
            "and local mode has none: use the vCluster kubeconfig (KUBECONFIG=/opt/kubeconfig/config)"
        )
    if target.mode != "vcluster":
        raise PlaybookError(
            f"Dask Gateway needs vCluster mode: its chart installs CRDs and cluster roles, which namespace mode "
            f"(namespace {target.namespace}) may not create; use the vCluster kubeconfig "
            "(KUBECONFIG=/opt/kubeconfig/config) or a session in vCluster mode"
        )


def helm_for(c, target: Target, dry_run: bool = False) -> Helm:
    return Helm(target, binary=c.config.tools.helm, dry_run=dry_run, out=lambda line: print(line, flush=True))


def check_tools(helm: Helm, kubectl: Kubectl) -> None:
    """helm and kubectl are there and new enough; both are reported at once."""

    def helm_shortfalls() -> list[str]:
        helm.version()
        return []

    preflight.require([helm_shortfalls, partial(preflight.kubectl_shortfalls, kubectl.binary, kubectl.command())])


def apply_crds(kubectl: Kubectl, docs: list[dict]) -> None:
    """Apply the chart's CRDs server-side before every install or upgrade.

    helm creates CRDs only when they are absent and never upgrades them: an upgrade, or an
    install over CRDs left by `down` without --purge, would otherwise keep old ones.
    """
    names = [doc["metadata"]["name"] for doc in docs]
    if kubectl.dry_run:
        kubectl.show_apply(note=f"  # the chart's {len(docs)} CRDs: {', '.join(names)}")
        return
    changed = kubectl.apply(docs, timeout=180)
    kubectl.out(f"CRDs: {'updated' if changed else 'unchanged'} ({', '.join(names)})")


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


@task(
    help={
        **CHART_HELP,
        **RELEASE_HELP,
        "timeout": "Seconds helm waits for the release to be ready (default: gateway.timeout; local mode: local.start_timeout).",
        "dry-run": "Print the helm and kubectl commands and the values (password redacted); change nothing.",
        "port": "Local mode: the gateway's address (API and dashboards) on 127.0.0.1 (default: a free port).",
        "proxy-port": "Local mode: the scheduler proxy (gateway://) on 127.0.0.1 (default: a free port).",
        **TARGET_HELP,
    }
)
def up(c, chart=None, release=None, timeout=None, namespace=None, mode=None, dry_run=False, port=None, proxy_port=None):
    """Install or upgrade Dask Gateway (vCluster mode; or local processes) and wait until it is ready."""
    cfg = c.config.gateway
    name = _release(c, release)
    source = chart_source(chart or cfg.chart, cfg)
    seconds = _seconds(timeout if timeout is not None else cfg.timeout, "--timeout")
    if namespace:
        validate_namespace(namespace)
    target = resolve_target(c, namespace, mode)
    if target.local:
        local.refuse_dry_run(dry_run, "`up` only starts processes")
        gateway_local.up(c, port, proxy_port, seconds if timeout is not None else None)
        return
    require_vcluster(target)
    helm, kubectl = helm_for(c, target, dry_run), kubectl_for(c, target, dry_run)
    check_tools(helm, kubectl)
    prepare_chart(helm, source)
    existing = helm.release(name)
    password = choose_password(kubectl, name)
    extra = overrides(c, name, password)
    # The files as they are now: should they change while helm reads them, the next up upgrades again.
    digest = local_digest(source)
    # A new password changes the values (its digest is an annotation): unchanged means stored.
    same = unchanged(helm, name, existing, source, merge_values(file_values(), extra), digest)
    if same:
        files = f" from the same chart files (sha256:{digest[:12]}…)" if digest else ""
        shown = " (a dry run still shows what an upgrade would run)" if dry_run else ""
        helm.out(f"{name}: release {existing['chart']} already deployed{files} with these values; no change{shown}")
    if not same or dry_run:
        # Reading the chart first: a chart version that does not exist stops before any write.
        crds = helm.show_crds(source.argv())
        store_password(kubectl, name, password)
        apply_crds(kubectl, crds)
        install(helm, kubectl, name, source, extra, seconds, chart_description(source, digest) if digest else None)
    if not dry_run:
        print_access(c, target, kubectl, name)


# ---------------------------------------------------------------- down


def installed_crds(kubectl: Kubectl) -> list[str]:
    """CRDs that `gateway.up` applied (its field manager is among their managers): the chart's."""
    result = kubectl.run("get", CRD_RESOURCE, "-o", "json", "--show-managed-fields", timeout=30)
    return [
        f"customresourcedefinition.apiextensions.k8s.io/{item['metadata']['name']}"
        for item in json.loads(result.stdout or "{}").get("items", [])
        if any(m.get("manager") == kubectl.field_manager for m in item["metadata"].get("managedFields") or [])
    ]


def delete_clusters(kubectl: Kubectl, release: str, timeout: float) -> None:
    """Stop the release's Dask clusters while its controller still runs to clean them up."""
    args = ["delete", DASKCLUSTERS, "-l", f"gateway.dask.org/instance={fullname(release)}",
            "--ignore-not-found", "--wait=true", f"--timeout={int(timeout)}s"]  # fmt: skip
    if kubectl.dry_run:
        kubectl.show(*args)
        return
    result = kubectl.run(*args, timeout=timeout + 15, check=False)
    if not result.ok and "doesn't have a resource type" not in result.stderr:
        raise kubectl.failure(tuple(args), result)
    if result.stdout.strip():
        kubectl.out(f"{release}: {result.stdout.strip()}")


@task(
    help={
        **RELEASE_HELP,
        "purge": "Also delete the chart's CRDs (DaskCluster and Traefik's, cluster-wide).",
        **CHART_HELP,
        "timeout": "Seconds each deletion may wait (default: gateway.timeout).",
        "dry-run": "Print what would be deleted; change nothing.",
        **TARGET_HELP,
    }
)
def down(c, release=None, purge=False, chart=None, timeout=None, namespace=None, mode=None, dry_run=False):
    """Uninstall Dask Gateway and its password Secret; keeps the CRDs unless --purge (local mode: stop it)."""
    cfg = c.config.gateway
    name = _release(c, release)
    chart_source(chart or cfg.chart, cfg)  # validated, though down needs no chart
    seconds = _seconds(timeout if timeout is not None else cfg.timeout, "--timeout")
    target = resolve_target(c, namespace, mode)
    if target.local:
        local.refuse_dry_run(dry_run, "`down` stops processes at once")
        gateway_local.down(c, purge)
        return
    helm, kubectl = helm_for(c, target, dry_run), kubectl_for(c, target, dry_run)
    helm.version()
    existing = helm.release(name)
    doomed = kubectl.names(["secrets"], managed_selector(AUTH, name))
    # The CRDs are found in the cluster by their group: no chart download (and no network) for a down.
    crds = installed_crds(kubectl) if purge and target.mode == "vcluster" else []
    if not (existing or doomed or crds):
        print(f"{name}: nothing installed in namespace {target.namespace}")
        return
    if existing:
        delete_clusters(kubectl, name, seconds)
        args = helm.uninstall_argv(name, seconds)
        if dry_run:
            helm.show(*args)
        else:
            helm.run(*args, timeout=seconds + 60)
            print(f"{name}: uninstalled release ({existing.get('chart')})")
    kubectl.delete(doomed + crds, timeout=seconds)
    if not dry_run:
        for item in doomed + crds:
            print(f"{name}: deleted {item}")
    if purge and target.mode != "vcluster":
        print(f"{name}: CRDs are cluster-scoped; namespace mode cannot delete them")
    elif not purge:
        print(f"{name}: kept the chart's CRDs (cluster-wide; pass --purge to delete them)")


# ---------------------------------------------------------------- status and access


def traefik_ports(kubectl: Kubectl, release: str) -> tuple[int, int] | None:
    """(web port, scheduler TCP port) of the release's Traefik service; None if it is absent."""
    result = kubectl.run("get", f"service/{traefik_service(release)}", "-o", "json", "--ignore-not-found", timeout=20)
    if not result.stdout.strip():
        return None
    ports = {p.get("name"): p["port"] for p in json.loads(result.stdout)["spec"]["ports"]}
    return ports["web"], ports.get("tcp", ports["web"])


def print_access(c, target: Target, kubectl: Kubectl, release: str) -> None:
    ports = traefik_ports(kubectl, release)
    if ports is None:
        print(f"{release}: no service {traefik_service(release)} (is traefik.installTraefik off?)")
        return
    web, tcp = ports
    service = traefik_service(release)
    host = in_cluster_host(service, target.namespace)
    forward = f"8000:{web}" if tcp == web else f"8000:{web} 8786:{tcp}"
    local_tcp = 8000 if tcp == web else 8786
    flags = shlex.join(target.kubectl_flags())
    print(f"{release}: address          http://{host}:{web}")
    print(f"{release}: proxy address    gateway://{host}:{tcp}")
    print(f"{release}: port-forward     kubectl {flags} port-forward service/{service} {forward}")
    print(
        f'{release}: then             Gateway("http://localhost:8000", proxy_address="gateway://localhost:{local_tcp}", '
        f'auth=BasicAuth("<any user name>", password))'
    )


@task(
    help={
        **RELEASE_HELP,
        "show-password": "Also print the gateway password (it is never printed otherwise).",
        **TARGET_HELP,
    }
)
def status(c, release=None, show_password=False, namespace=None, mode=None):
    """Show the Dask Gateway release, its pods, and how to connect."""
    name = _release(c, release)
    target = resolve_target(c, namespace, mode)
    if target.local:
        gateway_local.status(c, show_password)
        return
    helm, kubectl = helm_for(c, target), kubectl_for(c, target)
    helm.version()
    entry = helm.release(name)
    if entry is None:
        print(f"{name}: not installed in namespace {target.namespace}")
        return
    print(f"{name}: release {entry.get('status')}, chart {entry.get('chart')}, revision {entry.get('revision')}")
    print(f"{name}: {pods_line(kubectl.get_json('pods', release_selector(name)))}")
    print_access(c, target, kubectl, name)
    password = read_password(kubectl, name)
    if password is None:
        print(f"{name}: no password Secret {secret_name(name)}: run `invoke gateway.up` to create it")
    elif show_password:
        print(f"{name}: password         {password}")
    else:
        print(f"{name}: password         in Secret {secret_name(name)} (pass --show-password to print it)")


# ---------------------------------------------------------------- smoke


def deployed_releases(kubectl: Kubectl) -> list[str]:
    """Gateway releases in the namespace, found by the chart's labels on their services."""
    state = kubectl.get_json("services", f"app.kubernetes.io/name={CHART}")
    found = {item["metadata"].get("labels", {}).get("app.kubernetes.io/instance") for item in state.get("items", [])}
    return sorted(r for r in found if r)


def smoke_reports(c, target: Target, kubectl: Kubectl | None, name: str | None = None) -> list[Report]:
    """Smoke-check every gateway release in the namespace (or the one named); [] when there is none."""
    if target.local:
        return gateway_local.smoke_reports(c)
    releases = [name] if name else deployed_releases(kubectl)
    reports = []
    for release in releases:
        ports = traefik_ports(kubectl, release)
        if ports is None:
            if name:
                raise PlaybookError(
                    f"gateway {release!r} is not installed in namespace {target.namespace}: run `invoke gateway.up`"
                )
            continue
        password = read_password(kubectl, release)
        if password is None:
            raise PlaybookError(
                f"gateway {release!r} has no password Secret {secret_name(release)}: run `invoke gateway.up`"
            )
        service = traefik_service(release)
        web, tcp = ports

        def check(endpoint, scheduler=None, release=release, password=password) -> Report:
            print(f"{release}: checking {endpoint.url()} via {endpoint.how}", flush=True)
            scheduler = scheduler or endpoint
            return run_check(endpoint.url(), f"gateway://{scheduler.host}:{scheduler.port}", password,
                             float(c.config.gateway.smoke_timeout), service=release)  # fmt: skip

        report = check_service(kubectl, service, [web] if tcp == web else [web, tcp], check)
        print(report.render(), flush=True)
        reports.append(report)
    return reports


@task(help={**RELEASE_HELP, **TARGET_HELP})
def smoke(c, release=None, namespace=None, mode=None):
    """Prove Dask Gateway works: start a cluster through Traefik, scale to 2 workers, compute, shut down."""
    name = validate_release(release) if release else None
    target = resolve_target(c, namespace, mode)
    reports = smoke_reports(c, target, None if target.local else kubectl_for(c, target), name)
    if not reports:
        where = "running on this machine" if target.local else f"installed in namespace {target.namespace}"
        raise PlaybookError(f"Dask Gateway is not {where}: run `invoke gateway.up`")
    require_passed(reports)


@task(help={"lines": "How many lines from the end (default: 50).", **RELEASE_HELP, **TARGET_HELP})
def logs(c, lines=50, release=None, namespace=None, mode=None):
    """Show the Dask Gateway logs (local mode: the server's log file; cluster modes: the release's pods)."""
    name = _release(c, release)
    target = resolve_target(c, namespace, mode)
    if target.local:
        print(gateway_local.logs(c, int(lines)) or "gateway: no log yet")
        return
    kubectl = kubectl_for(c, target)
    result = kubectl.run("logs", "-l", release_selector(name), "--all-containers", "--prefix", f"--tail={int(lines)}")
    print(result.stdout.rstrip() or f"{name}: no log yet")


ns = Collection(SERVICE, up, down, status, smoke, logs)
