"""Object storage where the platform gives none: an S3 endpoint and a bucket."""

from __future__ import annotations

from invoke import Collection

from playbooks import local
from playbooks.deploy import resolve_target
from playbooks.errors import PlaybookError, task
from playbooks.services import storage_local

HELP = {"mode": "Only local is built so far; detection picks it when no Kubernetes is configured."}


def _local_only(c, mode):
    target = resolve_target(c, None, mode)
    if not target.local:
        raise PlaybookError(
            f"storage.* runs in local mode only so far ({target.mode} mode detected): "
            "use the platform's object storage (AWS_* variables) or pass --mode local"
        )


@task(help={"bucket": "Bucket to create (default: WORKSHOP_NAMESPACE, else storage.bucket).", "port": "Port on 127.0.0.1 (default: a free one).", **HELP})
def up(c, bucket=None, port=None, mode=None):
    """Start a local S3-protocol server with a bucket; print the AWS_* variables to export."""
    _local_only(c, mode)
    storage_local.up(c, bucket, port)


@task(help={"purge": "Also delete the generated credentials.", **HELP})
def down(c, purge=False, mode=None):
    """Stop the local S3 server (its objects live in memory and go with it)."""
    _local_only(c, mode)
    storage_local.down(c, purge)


@task(help=HELP)
def status(c, mode=None):
    """Show whether the local S3 server answers, and the AWS_* variables to export (secrets by file)."""
    _local_only(c, mode)
    storage_local.print_env(c)


@task(help={"lines": "How many lines from the end (default: 50).", **HELP})
def logs(c, lines=50, mode=None):
    """Show the local S3 server's log."""
    _local_only(c, mode)
    print(local.tail_log(c, "storage", "storage", int(lines)) or "storage: no log yet")


ns = Collection("storage", up, down, status, logs)
