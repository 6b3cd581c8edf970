"""Tasks that span services: where am I, start and stop them all, and does everything work.

They name no service: they iterate over the registry and act through the mode's backend.
"""

from __future__ import annotations

import inspect

from playbooks import registry
from playbooks.backends import backend_for
from playbooks.errors import PlaybookError, task
from playbooks.report import summary_table

TARGET_HELP = {
    "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
    "mode": "namespace, vcluster or local; overrides detection.",
}


def _names(services) -> str:
    return ", ".join(service.name for service in services)


@task(help=TARGET_HELP)
def target(c, namespace=None, mode=None):
    """Show where the playbooks act: mode, namespace, context, API server, rights, evidence."""
    for line in backend_for(c, namespace, mode).describe():
        print(line)


@task(help=TARGET_HELP)
def smoke(c, namespace=None, mode=None):
    """Run the smoke check of every deployed service and print a table; fails if any fails."""
    backend = backend_for(c, namespace, mode)
    services = [service for service in registry.services() if service.supports(backend.mode)]
    reports = backend.smoke_reports(services)
    if not reports:
        raise PlaybookError(f"no service is deployed {backend.where()}: run `invoke up` first")
    print()
    print(summary_table(reports))
    failed = [r for r in reports if not r.ok]
    if failed:
        raise PlaybookError(f"{len(failed)} of {len(reports)} smoke checks failed: {failed[0].failure}")


def _up(c, only=None, namespace=None, mode=None, dry_run=False, network_policy=False, **flags):
    """Deploy every service the mode allows (MLflow, Dask; Gateway in vCluster mode) at once, and wait for all."""
    registry.parse_only(only)
    owners = {}
    for service in registry.services():
        for option in service.root_options:
            value = flags.get(option.flag)
            if value is not None and option.validate:
                option.validate(value)
            owners[option.flag] = (service.name, option.option)
    backend = backend_for(c, namespace, mode, dry_run)
    if network_policy:
        backend.require_network_policy()
    services = registry.choose(only, backend.mode, "up")
    options: dict[str, dict] = {service.name: {} for service in services}
    for flag, value in flags.items():
        name, option = owners[flag]
        if value is not None and name in options:
            options[name][option] = value
    backend.up(services, options)


def _up_task():
    """The root `up`, with a flag for each service's root option (--bucket for MLflow, --workers for Dask, ...)."""
    signature = inspect.signature(_up)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    extra = [
        inspect.Parameter(option.flag, inspect.Parameter.KEYWORD_ONLY, default=None)
        for option in registry.root_options()
    ]
    _up.__signature__ = signature.replace(parameters=[*fixed, *extra])
    services = registry.services()
    return task(
        help={
            "only": f"Comma-separated services to act on ({_names(services)}); default: all the mode allows.",
            **{option.flag.replace("_", "-"): option.help for option in registry.root_options()},
            "dry-run": "Print the manifests and commands; change nothing (cluster modes).",
            "network-policy": "Also give MLflow and Dask a NetworkPolicy: ingress only from pods of this namespace "
            "(security.network_policy).",
            **TARGET_HELP,
        },
        name="up",
    )(_up)


up = _up_task()


@task(
    help={
        "only": "Comma-separated services to act on; default: all but the object store.",
        "purge": "Also delete the data: MLflow's database volume, the gateway's CRDs.",
        "dry-run": "Print what would be deleted; change nothing (cluster modes).",
        **TARGET_HELP,
    }
)
def down(c, only=None, purge=False, namespace=None, mode=None, dry_run=False):
    """Remove every service the playbooks deployed here (Gateway, Dask, MLflow), in reverse order."""
    registry.parse_only(only)
    backend = backend_for(c, namespace, mode, dry_run)
    backend.down(registry.choose(only, backend.mode, "down"), purge)


@task(help=TARGET_HELP)
def status(c, namespace=None, mode=None):
    """One table of every service the playbooks run here: ready or not, and its address."""
    backend = backend_for(c, namespace, mode)
    rows = backend.status_rows(registry.services())
    if not rows:
        print(f"nothing deployed {backend.where()}: run `invoke up`")
        return
    header = backend.status_header
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for line in backend.status_footer():
        print(line)
    backend.refuse_failed()
