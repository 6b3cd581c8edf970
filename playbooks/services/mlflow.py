"""MLflow tracking server: SQLite on a volume, artifacts proxied to the workspace bucket."""

from __future__ import annotations

import base64
import os
import shlex
from functools import partial

from invoke import Collection

from playbooks import local, security
from playbooks.deploy import (
    Plan,
    apply_plans,
    config_hash,
    deployed_instances,
    kubectl_for,
    resolve_target,
    tear_down,
)
from playbooks.endpoint import check_service, in_cluster_host
from playbooks.errors import PlaybookError, task
from playbooks.kube import Kubectl
from playbooks.mlflow_check import round_trip
from playbooks.quantity import check_resources
from playbooks.render import managed_selector, render
from playbooks.report import Report, require_passed
from playbooks.s3 import (
    S3Settings,
    bucket_shortfalls,
    choose_bucket,
    s3_from_env,
    validate_bucket,
    validate_prefix,
)
from playbooks.services import mlflow_local, storage_cluster
from playbooks.target import Target, local_from_config, validate_namespace

SERVICE = "mlflow"
DB_PATH = "/mlflow/db/mlflow.db"

TARGET_HELP = {
    "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
    "mode": "namespace, vcluster or local; overrides detection.",
}


def allowed_hosts(name: str, namespace: str, cluster_domain: str, extra: list[str]) -> str:
    """The Host headers the server accepts: its in-cluster names and localhost, each with any port."""
    names = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.{cluster_domain}"]
    names += ["localhost", "127.0.0.1", *extra]
    if "*" in names:
        raise PlaybookError("'*' is not an allowed host: list the host names clients use instead")
    return ",".join(h for n in names for h in (n, f"{n}:*"))


def server_args(port: int, bucket: str, prefix: str, hosts: str) -> list[str]:
    destination = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return [
        "--host", "0.0.0.0",
        "--port", str(port),
        # SQLite: one worker, or each one runs migrations and the database locks.
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{DB_PATH}",
        "--serve-artifacts",
        "--artifacts-destination", destination,
        "--allowed-hosts", hosts,
    ]  # fmt: skip


def build_plan(c, target: Target, s3: S3Settings, bucket: str, bucket_origin: str, prefix: str, name: str) -> Plan:
    cfg = c.config.mlflow
    port = int(cfg.port)
    hosts = allowed_hosts(name, target.namespace, c.config.target.cluster_domain, list(cfg.extra_allowed_hosts))
    credentials = {k: base64.b64encode(v.encode()).decode() for k, v in s3.credentials().items()}
    jobs = mlflow_local.job_execution(c)
    params = {
        "image": cfg.image,
        "port": port,
        "args": server_args(port, bucket, prefix, hosts),
        "s3_credentials": credentials,
        "s3_env": s3.public_env(),
        "storage_size": cfg.storage_size,
        "storage_class": cfg.storage_class,
        "resources": check_resources(cfg.resources, "mlflow.resources"),
        **security.params(c),
        "job_execution": mlflow_local.job_execution_env(jobs)[mlflow_local.JOB_EXECUTION_ENV],
        "config_hash": config_hash(cfg.image, bucket, prefix, hosts, s3.public_env(), credentials, jobs),
    }
    notes = [f"artifacts go to s3://{bucket}/{prefix} (bucket from {bucket_origin})"]
    if s3.endpoint_url:
        notes.append(f"S3 endpoint {s3.endpoint_url}")
    return Plan(
        service=SERVICE,
        instance=name,
        docs=render(SERVICE, name, target.namespace, params),
        deployments=[name],
        timeout=float(cfg.rollout_timeout),
        notes=notes,
    )


def _instance(c, name: str | None) -> str:
    name = name or c.config.mlflow.name
    try:
        return validate_namespace(name)
    except PlaybookError:
        raise PlaybookError(f"invalid service name {name!r}: use a DNS label such as 'mlflow'") from None


def plan_up(c, bucket=None, prefix=None, name=None, namespace=None, mode=None, storage=None) -> tuple[Target, Plan]:
    """Validate every input, detect the target, check access: all before any write."""
    cfg = c.config.mlflow
    instance = _instance(c, name)
    if namespace:
        validate_namespace(namespace)
    chosen_prefix = validate_prefix(prefix if prefix is not None else cfg.prefix)
    if storage not in (None, "local-s3", "env"):
        raise PlaybookError(f"unknown --storage {storage!r}: use local-s3 (the storage.up store) or env (AWS_*)")
    no_env_storage = not any(
        os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
    )
    if storage == "local-s3" or (storage is None and no_env_storage):
        if bucket:
            validate_bucket(bucket)
        target = resolve_target(c, namespace, mode)
        found = storage_cluster.settings(c, target, kubectl_for(c, target), c.config.storage.name)
        if found is None:
            if storage == "local-s3":
                raise PlaybookError(f"no object store in namespace {target.namespace}: run `invoke storage.up` first")
            s3_from_env(os.environ)  # raises: no credentials, and says how to get them
        s3, chosen = found
        origin = f"the storage service ({s3.endpoint_url})"
        # Its endpoint is an in-cluster name: storage.up checked the bucket from inside.
        reachable_here = False
    else:
        chosen, origin = choose_bucket(bucket, cfg.bucket, os.environ)
        s3 = s3_from_env(os.environ)
        target = resolve_target(c, namespace, mode)
        reachable_here = True
    plan = build_plan(c, target, s3, chosen, origin, chosen_prefix, instance)
    if reachable_here:
        plan.checks.append(partial(bucket_shortfalls, s3, chosen))
    return target, plan


@task(
    help={
        "bucket": "Bucket for artifacts (default: WORKSHOP_NAMESPACE, the Datalab's bucket).",
        "prefix": "Key prefix inside the bucket (default: mlflow).",
        "name": "Name of the service and its objects (default: mlflow).",
        "dry-run": "Print the manifests (Secrets redacted) and commands; change nothing.",
        "port": "Local mode: port on 127.0.0.1 (default: a free one).",
        "storage": "local-s3 (the storage.up store), env (AWS_*), or none (local mode: a local folder). Default: AWS_* if set, else the store.",
        **TARGET_HELP,
    }
)
def up(c, bucket=None, prefix=None, name=None, namespace=None, mode=None, dry_run=False, port=None, storage=None):
    """Deploy an MLflow tracking server with artifacts in your bucket, and wait until it is ready."""
    if local_from_config(c, mode):
        resolve_target(c, namespace, mode)
        local.refuse_dry_run(dry_run, "`up` only starts processes")
        mlflow_local.up(c, bucket, prefix, port, storage)
        return
    target, plan = plan_up(c, bucket, prefix, name, namespace, mode, storage)
    apply_plans(kubectl_for(c, target, dry_run), [plan])
    if not dry_run:
        print_access(c, target, plan.instance)


@task(
    help={
        "name": "Name of the service (default: mlflow).",
        "purge": "Also delete the volume that holds the experiment database.",
        "dry-run": "Print what would be deleted; change nothing.",
        **TARGET_HELP,
    }
)
def down(c, name=None, purge=False, namespace=None, mode=None, dry_run=False):
    """Remove the MLflow server (found by its labels); keeps the database volume unless --purge."""
    instance = _instance(c, name)
    target = resolve_target(c, namespace, mode)
    if target.local:
        local.refuse_dry_run(dry_run, "`down` stops processes at once")
        mlflow_local.down(c, purge)
        return
    tear_down(kubectl_for(c, target, dry_run), SERVICE, instance, purge)


def print_access(c, target: Target, name: str) -> None:
    port = int(c.config.mlflow.port)
    host = in_cluster_host(name, target.namespace)
    flags = shlex.join(target.kubectl_flags())
    print(f"{name}: in-cluster URL   http://{host}:{port}")
    print(f"{name}: port-forward     kubectl {flags} port-forward service/{name} {port}:{port}")
    print(f"{name}: then             export MLFLOW_TRACKING_URI=http://localhost:{port}")


@task(help={"name": "Name of the service (default: mlflow).", **TARGET_HELP})
def status(c, name=None, namespace=None, mode=None):
    """Show whether MLflow is ready and how to reach it."""
    instance = _instance(c, name) if name else None
    target = resolve_target(c, namespace, mode)
    if target.local:
        mlflow_local.status(c)
        return
    kubectl = kubectl_for(c, target)
    instances = [instance] if instance else deployed_instances(kubectl, SERVICE)
    if not instances:
        print(f"mlflow: not deployed in namespace {target.namespace}")
        return
    for inst in instances:
        state = kubectl.get_json("deployments.apps", managed_selector(SERVICE, inst))
        items = state.get("items", [])
        if not items:
            print(f"{inst}: not deployed in namespace {target.namespace}")
            continue
        ready = items[0].get("status", {}).get("readyReplicas", 0)
        want = items[0].get("spec", {}).get("replicas", 1)
        print(f"{inst}: {'ready' if ready >= want else 'NOT ready'} ({ready}/{want} replicas)")
        print_access(c, target, inst)


def artifact_destination(deployment: dict) -> tuple[str | None, str]:
    """The bucket and prefix a deployed server writes to, read from its arguments."""
    args = deployment["spec"]["template"]["spec"]["containers"][0].get("args", [])
    if "--artifacts-destination" in args:
        value = args[args.index("--artifacts-destination") + 1]
        if value.startswith("s3://"):
            bucket, _, prefix = value[5:].partition("/")
            return bucket, prefix
    return None, ""


def smoke_reports(c, target: Target, kubectl: Kubectl | None, name: str | None = None) -> list[Report]:
    """Round-trip every deployed MLflow instance (or the one named)."""
    if target.local:
        return mlflow_local.smoke_reports(c)
    instances = [name] if name else deployed_instances(kubectl, SERVICE)
    reports = []
    s3 = s3_from_env(os.environ, required=False)
    for inst in instances:
        state = kubectl.get_json("deployments.apps", managed_selector(SERVICE, inst))
        if not state.get("items"):
            raise PlaybookError(
                f"mlflow {inst!r} is not deployed in namespace {target.namespace}: run `invoke mlflow.up`"
            )
        bucket, prefix = artifact_destination(state["items"][0])

        def check(endpoint, inst=inst, bucket=bucket, prefix=prefix) -> Report:
            print(f"{inst}: checking {endpoint.url()} via {endpoint.how}", flush=True)
            return round_trip(endpoint.url(), s3=s3, bucket=bucket, prefix=prefix, service=inst)

        report = check_service(kubectl, inst, [int(c.config.mlflow.port)], check)
        print(report.render(), flush=True)
        reports.append(report)
    return reports


@task(help={"name": "Name of the service (default: every deployed instance).", **TARGET_HELP})
def smoke(c, name=None, namespace=None, mode=None):
    """Prove MLflow works: log a param, metric and artifact, read them back, find the object in S3."""
    instance = _instance(c, name) if name else None
    target = resolve_target(c, namespace, mode)
    kubectl = None if target.local else kubectl_for(c, target)
    reports = smoke_reports(c, target, kubectl, instance)
    if not reports:
        where = "running on this machine" if target.local else f"deployed in namespace {target.namespace}"
        raise PlaybookError(f"mlflow is not {where}: run `invoke mlflow.up`")
    require_passed(reports)


@task(help={"lines": "How many lines from the end (default: 50)."})
def logs(c, lines=50, namespace=None, mode=None):
    """Show the MLflow server's log (local mode: its log file; cluster modes: the pod's log)."""
    target = resolve_target(c, namespace, mode)
    if target.local:
        print(mlflow_local.logs(c, int(lines)) or "mlflow: no log yet")
        return
    kubectl = kubectl_for(c, target)
    result = kubectl.run(
        "logs", "-l", managed_selector(SERVICE), "--all-containers", "--prefix", f"--tail={int(lines)}"
    )
    print(result.stdout.rstrip() or "mlflow: no log yet")


ns = Collection(SERVICE, up, down, status, smoke, logs)
