"""Tasks that span services: where am I, start and stop them all, and does everything work.

They name no service: they iterate over the registry and act through the mode's backend.
"""

from __future__ import annotations

import inspect

from playbooks import jsonout, registry
from playbooks.backends import backend_for
from playbooks.errors import PlaybookError, task
from playbooks.report import columns, summary_table

TARGET_HELP = {
    "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
    "mode": "namespace, vcluster or local; overrides detection.",
}
JSON_HELP = {"json": "Print one JSON document on stdout (schema in docs/json.md); everything else goes to stderr."}


def _names(services) -> str:
    return ", ".join(service.name for service in services)


@task(help={**TARGET_HELP, **JSON_HELP})
def target(c, namespace=None, mode=None, json=False):
    """Show where the playbooks act: mode, namespace, context, API server, rights, evidence."""
    with jsonout.document(c, "target", json) as doc:
        backend = backend_for(c, namespace, mode)
        doc.update(backend.facts())
        if not json:
            for line in backend.describe():
                print(line)


@task(
    help={
        "keep": "Keep what the checks wrote (MLflow: the run, its artifact and the datalab-playbooks-smoke experiment).",
        **TARGET_HELP,
        **JSON_HELP,
    }
)
def smoke(c, keep=False, namespace=None, mode=None, json=False):
    """Run the smoke check of every deployed service and print a table; fails if any fails."""
    with jsonout.document(c, "smoke", json) as doc:
        backend = backend_for(c, namespace, mode)
        doc["mode"] = backend.mode
        services = [service for service in registry.services() if service.supports(backend.mode)]
        reports = backend.smoke_reports(services, {service.name: {"keep": keep} for service in services})
        doc["reports"] = [report.as_json() for report in reports]
        doc["passed"] = sum(1 for r in reports if r.ok)
        doc["failed"] = sum(1 for r in reports if not r.ok)
        if not reports:
            raise PlaybookError(f"no service is deployed {backend.where()}: run `invoke up` first")
        print()
        print(summary_table(reports))
        failed = [r for r in reports if not r.ok]
        if failed:
            raise PlaybookError(f"{len(failed)} of {len(reports)} smoke checks failed: {failed[0].failure}")


@task(help={**TARGET_HELP, **JSON_HELP})
def env(c, namespace=None, mode=None, json=False):
    """Print `export` lines that point a shell at the running services: eval "$(playbooks env)"."""
    from playbooks.shellenv import FORWARDED

    # For eval in a start-up script: stdout is only what the shell runs, and the progress (the
    # `target:` line) is dropped; --json sends it to stderr as every --json task does.
    with jsonout.document(c, "env", json) as doc, jsonout.progress_dropped(not json):
        backend = backend_for(c, namespace, mode)
        found = backend.env_vars(registry.services())
        doc.update(mode=backend.mode, reach=backend.reach)
        doc["variables"] = [var.as_json(service) for service, variables in found.items() for var in variables]
    if json:
        return
    print(f"# datalab-playbooks env: {backend.mode} mode, addresses for {backend.reach}")
    if backend.reach == FORWARDED and any(found.values()):
        print(
            "# the 127.0.0.1 addresses answer while `invoke forward` runs (the comment above each says whether it does)"
        )
    for service, variables in found.items():
        if not variables:
            print(f"# {service}: not running {backend.where()}")
        for var in variables:
            for line in var.lines():
                print(line)


def _up(
    c, only=None, namespace=None, mode=None, dry_run=False, network_policy=False, quiet=False, deadline=None, **flags
):
    """Deploy every service the mode allows (MLflow, Dask; Gateway in vCluster mode) at once, and wait for all."""
    from playbooks import hook

    registry.parse_only(only)
    seconds = hook.deadline_seconds(deadline)
    if quiet and seconds is None:
        seconds = hook.DEFAULT_DEADLINE
    if quiet and dry_run:
        raise PlaybookError("--quiet hides what --dry-run shows: leave one of them out")
    if not quiet and seconds is None:
        _up_now(c, only, namespace, mode, dry_run, network_policy, flags)
        return
    hook.run(lambda: _up_now(c, only, namespace, mode, dry_run, network_policy, flags, quiet), quiet, seconds)


def _up_now(c, only, namespace, mode, dry_run, network_policy, flags, summarize=False) -> str:
    """The root `up`; returns its one-line summary (for --quiet, which compares the status before and after)."""
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
    before = backend.fresh().status_rows(services) if summarize else []
    backend.up(services, options)
    if not summarize:
        return ""
    after = backend.fresh().status_rows(services)
    changed = sorted({row[0] for row in set(after) ^ set(before)})
    what = ", ".join(service.name for service in services)
    return f"up: {what} up {backend.where()}" + (
        f"; started or changed: {', '.join(changed)}" if changed else "; no change"
    )


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
            "quiet": "For a start-up script: one line on stderr (or one error: line and exit 1), the output in a log "
            "file only when it fails; implies --deadline 300.",
            "deadline": "Seconds (1-3600) after which `up` gives up with one error: line; it never runs longer.",
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


@task(help={**TARGET_HELP, **JSON_HELP})
def status(c, namespace=None, mode=None, json=False):
    """One table of every service the playbooks run here: ready or not, and its address."""
    with jsonout.document(c, "status", json) as doc:
        backend = backend_for(c, namespace, mode)
        rows = backend.status_rows(registry.services())
        doc["mode"] = backend.mode
        doc["services"] = [status_entry(row) for row in rows]
        if backend.mode != "local":
            from playbooks.forwards import as_json

            doc["forwards"] = [as_json(entry) for entry in backend.forwards()]
        if not rows:
            print(f"nothing deployed {backend.where()}: run `invoke up`")
            return
        for line in columns([backend.status_header, *rows]):
            print(line)
        for line in backend.status_footer():
            print(line)
        backend.refuse_failed()


# The states of a status row that mean "working": a ready Deployment, a healthy process, an installed release.
GOOD_STATES = ("ready", "healthy", "installed")


def status_entry(row: tuple[str, ...]) -> dict:
    service, instance, state, address = [*row, "", "", "", ""][:4]
    return {
        "service": service,
        "instance": instance,
        "state": state,
        "ok": state.startswith(GOOD_STATES),
        "address": address,
    }
