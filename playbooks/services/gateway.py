"""Dask Gateway: the dask/dask-gateway Helm chart, simple auth, reached through its Traefik service.

vCluster mode only: the chart installs CRDs and cluster roles. Local mode: the same tasks run
`dask-gateway-server` with a local-process backend on this machine (gateway_local).
The chart and its values are in gateway_chart, the Secret, CRDs and releases in gateway_cluster.
"""

from __future__ import annotations

import shlex
from functools import partial

from invoke import Collection

from playbooks import preflight, security
from playbooks.backends import ClusterBackend, LocalBackend, backend_for
from playbooks.defaults import DEFAULTS
from playbooks.endpoint import check_service, in_cluster_host
from playbooks.errors import PlaybookError, task
from playbooks.forwards import Want, forwarded
from playbooks.gateway_check import run_check
from playbooks.helm import Helm, merge_values
from playbooks.kube import Kubectl
from playbooks.parts import ClusterPart, LocalPart
from playbooks.registry import Service
from playbooks.render import managed_selector
from playbooks.report import Report, require_passed
from playbooks.services import gateway_local
from playbooks.services.gateway_chart import (
    DIGEST_ANNOTATION,
    ChartSource,
    chart_description,
    chart_source,
    file_values,
    install,
    last_description,
    local_digest,
    overrides,
    pods_line,
    prepare_chart,
    recorded_digest,
    release_selector,
    secret_name,
    traefik_service,
    unchanged,
    validate_release,
)
from playbooks.services.gateway_cluster import (
    AUTH,
    apply_crds,
    choose_password,
    delete_clusters,
    deployed_releases,
    installed_crds,
    password_docs,
    read_password,
    store_password,
    traefik_ports,
)
from playbooks.shellenv import IN_CLUSTER, EnvVar, preferred

SERVICE = "gateway"
__all__ = [  # what the tests and benchmarks read from here
    "DIGEST_ANNOTATION",
    "ChartSource",
    "chart_source",
    "file_values",
    "last_description",
    "local_digest",
    "overrides",
    "password_docs",
    "recorded_digest",
    "traefik_service",
    "validate_release",
]

TARGET_HELP = {
    "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
    "mode": "namespace, vcluster or local; overrides detection.",
}
RELEASE_HELP = {"release": "Helm release name (default: gateway.release, dask-gateway)."}
CHART_HELP = {
    "chart": "Chart: dask/dask-gateway (default), a local chart directory, or an oci:// reference (no repository added).",
}
NAMESPACE_MODE_REFUSAL = (
    "Dask Gateway needs vCluster mode: its chart installs CRDs and cluster roles, which namespace mode "
    "may not create; use the vCluster kubeconfig (KUBECONFIG=/opt/kubeconfig/config) or a session in vCluster mode"
)


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


def _timeout(c, timeout) -> float:
    return _seconds(timeout if timeout is not None else c.config.gateway.timeout, "--timeout")


def check_tools(helm: Helm, kubectl: Kubectl) -> None:
    """helm and kubectl are there and new enough; both are reported at once."""

    def helm_shortfalls() -> list[str]:
        helm.version()
        return []

    preflight.require([helm_shortfalls, partial(preflight.kubectl_shortfalls, kubectl.binary, kubectl.command())])


def forward_wants(release: str, web: int, tcp: int) -> list[Want]:
    """Traefik's web port (API, dashboards) and, when it has its own, the scheduler proxy port."""
    resource = f"service/{traefik_service(release)}"
    wants = [Want(SERVICE, release, resource, web, "gateway", "http", "/api/health")]
    if tcp != web:
        wants.append(Want(SERVICE, release, resource, tcp, "gateway_proxy", "gateway", None, "proxy"))
    return wants


def forwarded_addresses(backend: ClusterBackend, release: str, web: int, tcp: int) -> tuple[str, str, str]:
    """The local API and proxy addresses through `invoke forward`, and the comment that says so."""
    wants = forward_wants(release, web, tcp)
    local_web, comment = forwarded(backend, wants[0])
    local_tcp = forwarded(backend, wants[1])[0] if len(wants) > 1 else local_web
    return f"http://127.0.0.1:{local_web}", f"gateway://127.0.0.1:{local_tcp}", comment


def gateway_env(address: str, proxy: str, password_command: str, comment: str = "") -> list[EnvVar]:
    """The variables dask-gateway's client reads (gateway.address, .proxy-address, .auth): Gateway() needs no argument."""
    return [
        EnvVar("DASK_GATEWAY__ADDRESS", address, comment=comment),
        EnvVar("DASK_GATEWAY__PROXY_ADDRESS", proxy),
        EnvVar("DASK_GATEWAY__AUTH__TYPE", "basic"),
        EnvVar(
            "DASK_GATEWAY__AUTH__KWARGS__PASSWORD",
            command=password_command,
            comment="the password, read where it is kept",
        ),
    ]


class GatewayOnCluster(ClusterPart):
    def validate(self, c, chart=None, release=None, timeout=None, **_) -> None:
        _release(c, release)
        chart_source(chart or c.config.gateway.chart, c.config.gateway)
        _timeout(c, timeout)

    validate_down = validate

    def ensure(self, backend: ClusterBackend, chart=None, release=None, timeout=None, **_) -> None:
        """helm upgrade --install, unless the release already has this chart and these values."""
        c = backend.c
        name = _release(c, release)
        source = chart_source(chart or c.config.gateway.chart, c.config.gateway)
        seconds = _timeout(c, timeout)
        if security.network_policy(c):
            print("gateway: no NetworkPolicy (the dask-gateway chart has none; README: Security)", flush=True)
        helm, kubectl = backend.helm, backend.kubectl
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
            shown = " (a dry run still shows what an upgrade would run)" if backend.dry_run else ""
            helm.out(f"{name}: release {existing['chart']} already deployed{files} with these values; no change{shown}")
        if not same or backend.dry_run:
            # Reading the chart first: a chart version that does not exist stops before any write.
            crds = helm.show_crds(source.argv())
            store_password(kubectl, name, password)
            apply_crds(kubectl, crds)
            install(helm, kubectl, name, source, extra, seconds, chart_description(source, digest) if digest else None)
        if not backend.dry_run:
            self.access(backend, name)

    def access(self, backend: ClusterBackend, instance: str) -> None:
        ports = traefik_ports(backend.kubectl, instance)
        if ports is None:
            print(f"{instance}: no service {traefik_service(instance)} (is traefik.installTraefik off?)")
            return
        web, tcp = ports
        service = traefik_service(instance)
        host = in_cluster_host(service, backend.namespace)
        local_web, local_tcp, _ = forwarded_addresses(backend, instance, web, tcp)
        print(f"{instance}: address          http://{host}:{web}")
        print(f"{instance}: proxy address    gateway://{host}:{tcp}")
        print(f"{instance}: from outside     invoke forward (keeps {local_web} connected)")
        print(
            f'{instance}: then             Gateway("{local_web}", proxy_address="{local_tcp}", '
            f'auth=BasicAuth("<any user name>", password))'
        )
        print(f'{instance}: or               eval "$(playbooks env)"; Gateway()')

    def env(self, backend: ClusterBackend) -> list[EnvVar]:
        release = preferred(deployed_releases(backend.kubectl), backend.c.config.gateway.release)
        ports = traefik_ports(backend.kubectl, release) if release else None
        if ports is None:
            return []
        web, tcp = ports
        password = backend.kubectl_command("get", f"secret/{secret_name(release)}", "-o", "jsonpath={.data.password}")
        reading = f"{password} | base64 -d"
        if backend.reach == IN_CLUSTER:
            host = in_cluster_host(traefik_service(release), backend.namespace)
            return gateway_env(f"http://{host}:{web}", f"gateway://{host}:{tcp}", reading)
        address, proxy, comment = forwarded_addresses(backend, release, web, tcp)
        return gateway_env(address, proxy, reading, comment)

    def forwards(self, backend: ClusterBackend) -> list[Want]:
        found = []
        for release in deployed_releases(backend.kubectl):
            ports = traefik_ports(backend.kubectl, release)
            if ports:
                found += forward_wants(release, *ports)
        return found

    def rows(self, backend: ClusterBackend) -> list[tuple[str, ...]]:
        return [
            (SERVICE, release, "installed", f"http://{traefik_service(release)}.{backend.namespace}.svc")
            for release in deployed_releases(backend.kubectl)
        ]

    def down(
        self, backend: ClusterBackend, purge: bool, release=None, chart=None, timeout=None, explicit=False, **_
    ) -> None:
        """Uninstall the release; from the root `down` (not explicit), only when something is there to remove."""
        c, kubectl = backend.c, backend.kubectl
        if not explicit and not (deployed_releases(kubectl) or (purge and installed_crds(kubectl))):
            return
        name = _release(c, release)
        seconds = _timeout(c, timeout)
        helm = backend.helm
        helm.version()
        existing = helm.release(name)
        doomed = kubectl.names(["secrets"], managed_selector(AUTH, name))
        # The CRDs are found in the cluster by their group: no chart download (and no network) for a down.
        crds = installed_crds(kubectl) if purge and backend.mode == "vcluster" else []
        if not (existing or doomed or crds):
            print(f"{name}: nothing installed in namespace {backend.namespace}")
            return
        if existing:
            delete_clusters(kubectl, name, seconds)
            args = helm.uninstall_argv(name, seconds)
            if backend.dry_run:
                helm.show(*args)
            else:
                helm.run(*args, timeout=seconds + 60)
                print(f"{name}: uninstalled release ({existing.get('chart')})")
        kubectl.delete(doomed + crds, timeout=seconds)
        if not backend.dry_run:
            for item in doomed + crds:
                print(f"{name}: deleted {item}")
        if purge and backend.mode != "vcluster":
            print(f"{name}: CRDs are cluster-scoped; namespace mode cannot delete them")
        elif not purge:
            print(f"{name}: kept the chart's CRDs (cluster-wide; pass --purge to delete them)")

    def status(self, backend: ClusterBackend, release=None, show_password=False) -> None:
        name = _release(backend.c, release)
        helm, kubectl = backend.helm, backend.kubectl
        helm.version()
        entry = helm.release(name)
        if entry is None:
            print(f"{name}: not installed in namespace {backend.namespace}")
            return
        print(f"{name}: release {entry.get('status')}, chart {entry.get('chart')}, revision {entry.get('revision')}")
        print(f"{name}: {pods_line(kubectl.get_json('pods', release_selector(name)))}")
        self.access(backend, name)
        password = read_password(kubectl, name)
        if password is None:
            print(f"{name}: no password Secret {secret_name(name)}: run `invoke gateway.up` to create it")
        elif show_password:
            print(f"{name}: password         {password}")
        else:
            print(f"{name}: password         in Secret {secret_name(name)} (pass --show-password to print it)")

    def smoke_reports(self, backend: ClusterBackend, release=None, **_) -> list[Report]:
        """Smoke-check every gateway release in the namespace (or the one named); [] when there is none."""
        kubectl = backend.kubectl
        releases = [release] if release else deployed_releases(kubectl)
        reports = []
        seconds = float(backend.c.config.gateway.smoke_timeout)
        for name in releases:
            ports = traefik_ports(kubectl, name)
            if ports is None:
                if release:
                    raise PlaybookError(
                        f"gateway {name!r} is not installed in namespace {backend.namespace}: run `invoke gateway.up`"
                    )
                continue
            password = read_password(kubectl, name)
            if password is None:
                raise PlaybookError(
                    f"gateway {name!r} has no password Secret {secret_name(name)}: run `invoke gateway.up`"
                )
            web, tcp = ports

            def check(endpoint, scheduler=None, name=name, password=password) -> Report:
                print(f"{name}: checking {endpoint.url()} via {endpoint.how}", flush=True)
                scheduler = scheduler or endpoint
                proxy = f"gateway://{scheduler.host}:{scheduler.port}"
                return run_check(endpoint.url(), proxy, password, seconds, service=name)

            report = check_service(kubectl, traefik_service(name), [web] if tcp == web else [web, tcp], check)
            print(report.render(), flush=True)
            reports.append(report)
        return reports

    def logs(self, backend: ClusterBackend, lines: int, release=None, **_) -> str:
        selector = release_selector(_release(backend.c, release))
        result = backend.kubectl.run("logs", "-l", selector, "--all-containers", "--prefix", f"--tail={int(lines)}")
        return result.stdout.rstrip()


class GatewayLocal(LocalPart):
    def validate(self, c, chart=None, release=None, timeout=None, **_) -> None:
        _release(c, release)
        chart_source(chart or c.config.gateway.chart, c.config.gateway)  # checked though local mode needs none
        _timeout(c, timeout)

    validate_down = validate

    def up(self, backend: LocalBackend, timeout=None, port=None, proxy_port=None, **_) -> None:
        seconds = _timeout(backend.c, timeout) if timeout is not None else None
        gateway_local.up(backend.c, port, proxy_port, seconds)

    def down(self, backend: LocalBackend, purge: bool, **_) -> None:
        gateway_local.down(backend.c, purge)

    def status(self, backend: LocalBackend, show_password=False, **_) -> None:
        gateway_local.status(backend.c, show_password)

    def smoke_reports(self, backend: LocalBackend, **_) -> list[Report]:
        return gateway_local.smoke_reports(backend.c)

    def env(self, backend: LocalBackend) -> list[EnvVar]:
        state = gateway_local.running(backend.c)
        if state is None:
            return []
        api, proxy = gateway_local.addresses(state)
        return gateway_env(api, proxy, shlex.join(["cat", str(gateway_local.password_file(backend.c))]))

    def logs(self, backend: LocalBackend, lines: int, **_) -> str:
        return gateway_local.logs(backend.c, int(lines))


@task(
    help={
        **CHART_HELP,
        **RELEASE_HELP,
        "timeout": "Seconds helm waits for the release to be ready (default: gateway.timeout; local mode: local.start_timeout).",
        "dry-run": "Print the helm and kubectl commands and the values (password redacted); change nothing.",
        "port": "Local mode: the gateway's port (API and dashboards) on 127.0.0.1 (default: last time's, else 8000, else a free one).",
        "proxy-port": "Local mode: the scheduler proxy (gateway://) on 127.0.0.1 (default: last time's, else 8001, else a free one).",
        **TARGET_HELP,
    }
)
def up(c, chart=None, release=None, timeout=None, namespace=None, mode=None, dry_run=False, port=None, proxy_port=None):
    """Install or upgrade Dask Gateway (vCluster mode; or local processes) and wait until it is ready."""
    options = dict(chart=chart, release=release, timeout=timeout, port=port, proxy_port=proxy_port)
    backend_for(c, namespace, mode, dry_run).up([SERVICE_SPEC], {SERVICE: options})


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
    options = dict(release=release, chart=chart, timeout=timeout, explicit=True)
    backend_for(c, namespace, mode, dry_run).down([SERVICE_SPEC], purge, {SERVICE: options})


@task(
    help={
        **RELEASE_HELP,
        "show-password": "Also print the gateway password (it is never printed otherwise).",
        **TARGET_HELP,
    }
)
def status(c, release=None, show_password=False, namespace=None, mode=None):
    """Show the Dask Gateway release, its pods, and how to connect."""
    _release(c, release)
    backend = backend_for(c, namespace, mode)
    backend.part(SERVICE_SPEC).status(backend, release=release, show_password=show_password)


@task(help={**RELEASE_HELP, **TARGET_HELP})
def smoke(c, release=None, namespace=None, mode=None):
    """Prove Dask Gateway works: start a cluster through Traefik, scale to 2 workers, compute, shut down."""
    name = validate_release(release) if release else None
    backend = backend_for(c, namespace, mode)
    reports = backend.smoke_reports([SERVICE_SPEC], {SERVICE: {"release": name}})
    if not reports:
        where = "running on this machine" if backend.mode == "local" else f"installed {backend.where()}"
        raise PlaybookError(f"Dask Gateway is not {where}: run `invoke gateway.up`")
    require_passed(reports)


@task(help={"lines": "How many lines from the end (default: 50).", **RELEASE_HELP, **TARGET_HELP})
def logs(c, lines=50, release=None, namespace=None, mode=None):
    """Show the Dask Gateway logs (local mode: the server's log file; cluster modes: the release's pods)."""
    name = _release(c, release)
    backend = backend_for(c, namespace, mode)
    print(backend.part(SERVICE_SPEC).logs(backend, int(lines), release=name) or f"{name}: no log yet")


ns = Collection(SERVICE, up, down, status, smoke, logs)

SERVICE_SPEC = Service(
    name=SERVICE,
    collection=ns,
    defaults=DEFAULTS[SERVICE],
    cluster=GatewayOnCluster(SERVICE),
    local=GatewayLocal(SERVICE),
    by_default=("vcluster",),
    cluster_modes=("vcluster",),
    refusals={"namespace": NAMESPACE_MODE_REFUSAL},
)
