"""Tasks that span services: where am I, and does everything deployed work."""

from __future__ import annotations

from collections.abc import Callable

from playbooks import local, security
from playbooks.deploy import apply_plans, kubectl_for, resolve_target
from playbooks.errors import PlaybookError, task
from playbooks.kube import Kubectl
from playbooks.local import state_root
from playbooks.render import managed_selector
from playbooks.report import summary_table
from playbooks.s3 import validate_bucket
from playbooks.services import dask, dask_local, gateway, gateway_local, mlflow, mlflow_local
from playbooks.target import Target, local_from_config
from playbooks.together import run_all

TARGET_HELP = {
    "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
    "mode": "namespace, vcluster or local; overrides detection.",
}

LOCAL_SMOKE_CHECKS = {
    "mlflow": mlflow_local.smoke_reports,
    "dask": dask_local.smoke_reports,
    "gateway": gateway_local.smoke_reports,
}
SMOKE_CHECKS = {"mlflow": mlflow.smoke_reports, "dask": dask.smoke_reports, "gateway": gateway.smoke_reports}


@task(
    help={
        "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
        "mode": "namespace, vcluster or local; overrides detection.",
    }
)
def target(c, namespace=None, mode=None):
    """Show where the playbooks act: mode, namespace, context, API server, rights, evidence."""
    found = resolve_target(c, namespace, mode)
    print(f"mode:       {found.mode}")
    if found.local:
        print(f"state:      {state_root(c)}")
        print(f"evidence:   {found.evidence[0]}")
        return
    print(f"namespace:  {found.namespace} (from {found.namespace_source})")
    print(f"context:    {found.context or '(in-cluster service account)'}")
    print(f"api server: {found.server}")
    if found.source.service_account:
        print(
            f"kubeconfig: {found.source.kubeconfig} (written for the in-cluster service account in {found.source.service_account})"
        )
    else:
        print(f"kubeconfig: {found.source.kubeconfig}")
    print("evidence:")
    for line in found.evidence:
        print(f"  - {line}")
    print("access (SelfSubjectAccessReview / SelfSubjectRulesReview):")
    for check in found.checks:
        print(f"  {check.describe()}")


@task(
    help={
        "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
        "mode": "namespace, vcluster or local; overrides detection.",
    }
)
def smoke(c, namespace=None, mode=None):
    """Run the smoke check of every deployed service and print a table; fails if any fails."""
    found = resolve_target(c, namespace, mode)
    reports = []
    if found.local:
        for check in LOCAL_SMOKE_CHECKS.values():
            reports += check(c)
    else:
        kubectl = kubectl_for(c, found)
        for check in SMOKE_CHECKS.values():
            reports += check(c, found, kubectl)
    if not reports:
        where = "on this machine" if found.local else f"in namespace {found.namespace}"
        raise PlaybookError(f"no service is deployed {where}: run `invoke up` first")
    print()
    print(summary_table(reports))
    failed = [r for r in reports if not r.ok]
    if failed:
        raise PlaybookError(f"{len(failed)} of {len(reports)} smoke checks failed: {failed[0].failure}")


SERVICES = ("mlflow", "dask", "gateway")


def choose_services(only: str | None, mode: str) -> list[str]:
    """The services `up`/`down` act on: --only, else every one the mode allows."""
    if only is not None:
        names = [name.strip() for name in only.split(",") if name.strip()]
        unknown = [name for name in names if name not in SERVICES]
        if unknown or not names:
            raise PlaybookError(
                f"unknown service {', '.join(unknown) or repr(only)}: choose from {', '.join(SERVICES)}"
            )
        if "gateway" in names and mode == "namespace":
            raise PlaybookError(
                "Dask Gateway needs vCluster mode (its chart installs CRDs and cluster roles): "
                "use the vCluster kubeconfig, or leave gateway out of --only"
            )
        return [name for name in SERVICES if name in names]
    return ["mlflow", "dask", "gateway"] if mode == "vcluster" else ["mlflow", "dask"]


@task(
    help={
        "only": "Comma-separated services to act on (mlflow, dask, gateway); default: all the mode allows.",
        "bucket": "MLflow's artifact bucket (default: WORKSHOP_NAMESPACE).",
        "workers": "Number of Dask workers (default: keep the running count, else dask.workers).",
        "dry-run": "Print the manifests and commands; change nothing (cluster modes).",
        "network-policy": "Also give MLflow and Dask a NetworkPolicy: ingress only from pods of this namespace (security.network_policy).",
        **TARGET_HELP,
    }
)
def up(c, only=None, bucket=None, workers=None, namespace=None, mode=None, dry_run=False, network_policy=False):
    """Deploy every service the mode allows (MLflow, Dask; Gateway in vCluster mode) at once, and wait for all."""
    if local_from_config(c, mode):
        resolve_target(c, namespace, mode)
        local.refuse_dry_run(dry_run, "`up` only starts processes")
        if network_policy:
            raise PlaybookError(
                "--network-policy is for the cluster modes; local mode's servers listen on 127.0.0.1 only"
            )
        names = choose_services(only, "local") if only is not None else ["mlflow", "dask"]
        # The services start side by side: a bad input of one must stop all before any starts.
        if bucket:
            validate_bucket(bucket)
        if workers is not None:
            dask.worker_count(workers)
        starters = {
            "mlflow": lambda: mlflow_local.up(c, bucket),
            "dask": lambda: dask_local.up(c, workers),
            "gateway": lambda: gateway_local.up(c),
        }
        run_all({name: starters[name] for name in names})
        return
    # Validate and plan everything before the first write.
    if only is not None:
        choose_services(only, "vcluster")
    target = resolve_target(c, namespace, mode)
    names = choose_services(only, target.mode)
    if network_policy:
        c.config.security.network_policy = True
    if "gateway" in names and security.network_policy(c):
        print("gateway: no NetworkPolicy (the dask-gateway chart has none; README: Security)", flush=True)
    plans = []
    if "mlflow" in names:
        plans.append(mlflow.plan_up(c, bucket=bucket, namespace=namespace, mode=mode)[1])
    if "dask" in names:
        plans.append(dask.plan_up(c, workers=workers, namespace=namespace, mode=mode)[1])
    kubectl = kubectl_for(c, target, dry_run)
    jobs: dict[str, Callable[[], None]] = {}
    if plans:
        jobs["kubernetes"] = lambda: apply_plans(kubectl, plans)
    if "gateway" in names:
        jobs["gateway"] = lambda: gateway.up.body(c, namespace=namespace, mode=mode, dry_run=dry_run)
    run_all(jobs)
    if not dry_run:
        for plan in plans:
            (mlflow if plan.service == "mlflow" else dask).print_access(c, target, plan.instance)


@task(
    help={
        "only": "Comma-separated services to act on (mlflow, dask, gateway); default: all.",
        "purge": "Also delete the data: MLflow's database volume, the gateway's CRDs.",
        "dry-run": "Print what would be deleted; change nothing (cluster modes).",
        **TARGET_HELP,
    }
)
def down(c, only=None, purge=False, namespace=None, mode=None, dry_run=False):
    """Remove every service the playbooks deployed here (Gateway, Dask, MLflow), in reverse order."""
    found = resolve_target(c, namespace, mode)
    names = choose_services(only, found.mode) if only is not None else list(SERVICES)
    if found.local:
        local.refuse_dry_run(dry_run, "`down` stops processes at once")
        stoppers = {
            "gateway": lambda: gateway_local.down(c, purge),
            "dask": lambda: dask_local.down(c),
            "mlflow": lambda: mlflow_local.down(c, purge),
        }
        for name in reversed(names):
            stoppers[name]()
        local.report_left_running(c, names)
        return
    if "gateway" in names and found.mode == "vcluster":
        kubectl = kubectl_for(c, found)
        if gateway.deployed_releases(kubectl) or (purge and gateway.installed_crds(kubectl)):
            gateway.down.body(c, purge=purge, namespace=namespace, mode=mode, dry_run=dry_run)
    if "dask" in names:
        dask.down.body(c, namespace=namespace, mode=mode, dry_run=dry_run)
    if "mlflow" in names:
        mlflow.down.body(c, purge=purge, namespace=namespace, mode=mode, dry_run=dry_run)


ADDRESSES = {
    "mlflow": lambda inst, ns, c: f"http://{inst}.{ns}.svc:{c.config.mlflow.port}",
    "dask": lambda inst, ns, c: f"tcp://{inst}-scheduler.{ns}.svc:8786",
    "storage": lambda inst, ns, c: f"http://{inst}.{ns}.svc:9000",
}


def cluster_rows(c, target: Target, kubectl: Kubectl) -> list[tuple[str, ...]]:
    state = kubectl.get_json("deployments.apps", managed_selector())
    groups: dict[tuple[str, str], list[dict]] = {}
    for item in state.get("items", []):
        labels = item["metadata"].get("labels", {})
        key = (labels.get("app.kubernetes.io/name", "?"), labels.get("app.kubernetes.io/instance", "?"))
        groups.setdefault(key, []).append(item)
    rows = []
    for (service, instance), items in sorted(groups.items()):
        ready = sum(i.get("status", {}).get("readyReplicas", 0) for i in items)
        want = sum(i.get("spec", {}).get("replicas", 1) for i in items)
        address = ADDRESSES.get(service, lambda *_: "")(instance, target.namespace, c)
        rows.append((service, instance, f"{'ready' if ready >= want else 'NOT ready'} {ready}/{want}", address))
    if target.mode == "vcluster":
        for release in gateway.deployed_releases(kubectl):
            rows.append(
                ("gateway", release, "installed", f"http://{gateway.traefik_service(release)}.{target.namespace}.svc")
            )
    return rows


def local_rows(c) -> list[tuple[str, ...]]:
    rows = []
    root = state_root(c)
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        for name, record in local.processes(c, folder.name).items():
            ports = ", ".join(f"{k} {v}" for k, v in (record.get("ports") or {}).items())
            rows.append((folder.name, name, f"{local.health(record)} (pid {record.get('pid')})", ports))
    return rows


@task(help=TARGET_HELP)
def status(c, namespace=None, mode=None):
    """One table of every service the playbooks run here: ready or not, and its address."""
    found = resolve_target(c, namespace, mode)
    if found.local:
        rows = local_rows(c)
        header = ("service", "process", "state", "ports (127.0.0.1)")
    else:
        rows = cluster_rows(c, found, kubectl_for(c, found))
        header = ("service", "instance", "state", "address (in-cluster)")
    if not rows:
        where = "on this machine" if found.local else f"in namespace {found.namespace}"
        print(f"nothing deployed {where}: run `invoke up`")
        return
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for line in local.crash_report(c) if found.local else []:
        print(line)
    if found.local:
        local.refuse_crashed(c)
