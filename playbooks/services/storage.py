"""Object storage where the platform gives none: an S3 endpoint and a bucket.

Cluster modes: a MinIO Deployment with a volume and generated credentials; the bucket is
made by a Job. Local mode: an S3-protocol server process (moto's server mode).
"""

from __future__ import annotations

from invoke import Collection

from playbooks import local
from playbooks.deploy import kubectl_for, resolve_target, tear_down
from playbooks.errors import PlaybookError, task
from playbooks.jobs import remove
from playbooks.render import kinds, load_templates, managed_selector
from playbooks.services import storage_cluster, storage_local
from playbooks.target import local_from_config, validate_namespace

HELP = {
    "namespace": "Namespace to act in (cluster modes; default: SESSION_NAMESPACE, then the context's).",
    "mode": "namespace, vcluster or local; overrides detection.",
}
NAME_HELP = "Name of the store and its objects (cluster modes; default: storage)."


def _name(c, name):
    name = name or c.config.storage.name
    try:
        return validate_namespace(name)
    except PlaybookError:
        raise PlaybookError(f"invalid service name {name!r}: use a DNS label such as 'storage'") from None


@task(
    help={
        "bucket": "Bucket to create (default: WORKSHOP_NAMESPACE, else storage.bucket).",
        "port": "Local mode: port on 127.0.0.1 (default: a free one).",
        "name": NAME_HELP,
        "dry-run": "Cluster modes: print the manifests (Secrets redacted) and commands; change nothing.",
        **HELP,
    }
)
def up(c, bucket=None, port=None, name=None, namespace=None, mode=None, dry_run=False):
    """Provide an S3 endpoint with a bucket; print the AWS_* variables to export (secrets by reference)."""
    instance = _name(c, name)
    if namespace:
        validate_namespace(namespace)
    if local_from_config(c, mode):
        resolve_target(c, namespace, mode)
        local.refuse_dry_run(dry_run, "`up` only starts a process")
        storage_local.up(c, bucket, port)
        return
    storage_cluster.up(c, resolve_target(c, namespace, mode), bucket, instance, dry_run)


@task(
    help={
        "purge": "Also delete the data (volume, or local credentials) and the credentials Secret.",
        "name": NAME_HELP,
        "dry-run": "Print what would be deleted; change nothing.",
        **HELP,
    }
)
def down(c, purge=False, name=None, namespace=None, mode=None, dry_run=False):
    """Remove the object store; keeps its data and credentials unless --purge."""
    instance = _name(c, name)
    target = resolve_target(c, namespace, mode)
    if target.local:
        local.refuse_dry_run(dry_run, "`down` stops processes at once")
        storage_local.down(c, purge)
        return
    kubectl = kubectl_for(c, target, dry_run)
    keep = ("persistentvolumeclaim/", f"secret/{storage_cluster.secret_name(instance)}")
    tear_down(kubectl, storage_cluster.SERVICE, instance, purge, keep=keep)
    leftovers = kubectl.names(
        kinds(list(load_templates(storage_cluster.BUCKET_JOB))), managed_selector(storage_cluster.BUCKET_JOB, instance)
    )
    if leftovers and not dry_run:
        remove(kubectl, leftovers)


@task(help={"name": NAME_HELP, **HELP})
def status(c, name=None, namespace=None, mode=None):
    """Show whether the store answers, and the AWS_* variables to export (secrets by reference)."""
    instance = _name(c, name)
    target = resolve_target(c, namespace, mode)
    if target.local:
        storage_local.print_env(c)
        return
    storage_cluster.print_env(c, target, kubectl_for(c, target), instance)


@task(help={"lines": "How many lines from the end (default: 50).", "name": NAME_HELP, **HELP})
def logs(c, lines=50, name=None, namespace=None, mode=None):
    """Show the object store's log."""
    instance = _name(c, name)
    target = resolve_target(c, namespace, mode)
    if target.local:
        print(local.tail_log(c, "storage", "storage", int(lines)) or "storage: no log yet")
        return
    kubectl = kubectl_for(c, target)
    result = kubectl.run(
        "logs",
        "-l",
        managed_selector(storage_cluster.SERVICE, instance),
        "--all-containers",
        "--prefix",
        f"--tail={int(lines)}",
    )
    print(result.stdout.rstrip() or "storage: no log yet")


ns = Collection("storage", up, down, status, logs)
