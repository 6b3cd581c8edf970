"""Object storage where the platform gives none: an S3 endpoint and a bucket.

Cluster modes: a MinIO Deployment with a volume and generated credentials; the bucket is
made by a Job. Local mode: an S3-protocol server process (storage_local).
"""

from __future__ import annotations

from invoke import Collection

from playbooks import local
from playbooks.backends import ClusterBackend, LocalBackend, backend_for
from playbooks.defaults import DEFAULTS
from playbooks.deploy import deployed_instances, tear_down
from playbooks.errors import PlaybookError, task
from playbooks.forwards import Want
from playbooks.jobs import remove
from playbooks.parts import ClusterPart, LocalPart
from playbooks.registry import Service
from playbooks.render import kinds, load_templates, managed_selector
from playbooks.s3 import validate_bucket
from playbooks.services import storage_cluster, storage_local
from playbooks.target import Target, validate_namespace

SERVICE = "storage"
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


class StorageOnCluster(ClusterPart):
    def validate(self, c, name=None, bucket=None, **_) -> None:
        _name(c, name)
        if bucket:
            validate_bucket(bucket)

    def validate_down(self, c, name=None, **_) -> None:
        _name(c, name)

    def ensure(self, backend: ClusterBackend, bucket=None, name=None, **_) -> None:
        storage_cluster.up(backend.c, backend.target, backend.kubectl, bucket, _name(backend.c, name))

    def address(self, backend: ClusterBackend, instance: str) -> str:
        return f"http://{instance}.{backend.namespace}.svc:9000"

    def forwards(self, backend: ClusterBackend) -> list[Want]:
        return [
            Want(SERVICE, name, f"service/{name}", 9000, "storage", "http", "/minio/health/live")
            for name in deployed_instances(backend.kubectl, SERVICE)
        ]

    def down(self, backend: ClusterBackend, purge: bool, name=None, **_) -> None:
        instance = _name(backend.c, name)
        kubectl = backend.kubectl
        keep = ("persistentvolumeclaim/", f"secret/{storage_cluster.secret_name(instance)}")
        tear_down(kubectl, SERVICE, instance, purge, keep=keep)
        job = storage_cluster.BUCKET_JOB
        leftovers = kubectl.names(kinds(list(load_templates(job))), managed_selector(job, instance))
        if leftovers and not backend.dry_run:
            remove(kubectl, leftovers)

    def status(self, backend: ClusterBackend, name=None) -> None:
        storage_cluster.print_env(backend.c, backend.target, backend.kubectl, _name(backend.c, name))

    def logs(self, backend: ClusterBackend, lines: int, name=None, **_) -> str:
        return super().logs(backend, lines, _name(backend.c, name))

    def sample_docs(self, c, target: Target) -> list[dict]:
        name = _name(c, None)
        creds = {"AWS_ACCESS_KEY_ID": "example", "AWS_SECRET_ACCESS_KEY": "example-secret"}
        docs = storage_cluster.build_plan(c, target, name, "ws-frank", creds).docs
        return docs + storage_cluster.bucket_job_docs(c, target, name, "ws-frank", 60.0)


class StorageLocal(LocalPart):
    def validate(self, c, bucket=None, **_) -> None:
        if bucket:
            validate_bucket(bucket)

    def up(self, backend: LocalBackend, bucket=None, port=None, **_) -> None:
        storage_local.up(backend.c, bucket, port)

    def down(self, backend: LocalBackend, purge: bool, **_) -> None:
        storage_local.down(backend.c, purge)

    def status(self, backend: LocalBackend, **_) -> None:
        storage_local.print_env(backend.c)

    def logs(self, backend: LocalBackend, lines: int, **_) -> str:
        return local.tail_log(backend.c, SERVICE, SERVICE, int(lines))


@task(
    help={
        "bucket": "Bucket to create (default: WORKSHOP_NAMESPACE, else storage.bucket).",
        "port": "Local mode: port on 127.0.0.1 (default: last time's, else 9000, else a free one; 0: any free one).",
        "name": NAME_HELP,
        "dry-run": "Cluster modes: print the manifests (Secrets redacted) and commands; change nothing.",
        **HELP,
    }
)
def up(c, bucket=None, port=None, name=None, namespace=None, mode=None, dry_run=False):
    """Provide an S3 endpoint with a bucket; print the AWS_* variables to export (secrets by reference)."""
    _name(c, name)
    options = {"bucket": bucket, "port": port, "name": name}
    backend_for(c, namespace, mode, dry_run).up([SERVICE_SPEC], {SERVICE: options})


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
    _name(c, name)
    backend_for(c, namespace, mode, dry_run).down([SERVICE_SPEC], purge, {SERVICE: {"name": name}})


@task(help={"name": NAME_HELP, **HELP})
def status(c, name=None, namespace=None, mode=None):
    """Show whether the store answers, and the AWS_* variables to export (secrets by reference)."""
    _name(c, name)
    backend = backend_for(c, namespace, mode)
    backend.part(SERVICE_SPEC).status(backend, name=name)


@task(help={"lines": "How many lines from the end (default: 50).", "name": NAME_HELP, **HELP})
def logs(c, lines=50, name=None, namespace=None, mode=None):
    """Show the object store's log."""
    _name(c, name)
    backend = backend_for(c, namespace, mode)
    print(backend.part(SERVICE_SPEC).logs(backend, int(lines), name=name) or "storage: no log yet")


ns = Collection(SERVICE, up, down, status, logs)

SERVICE_SPEC = Service(
    name=SERVICE,
    collection=ns,
    defaults=DEFAULTS[SERVICE],
    cluster=StorageOnCluster(SERVICE),
    local=StorageLocal(SERVICE),
    # Other services' data lives in it: the root tasks start and stop it only when named in --only.
    by_default=(),
    down_by_default=False,
)
