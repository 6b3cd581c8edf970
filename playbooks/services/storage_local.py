"""Object storage in local mode: an S3-protocol server (moto's server mode) with one bucket."""

from __future__ import annotations

import json
import os
import secrets

from playbooks import local
from playbooks.errors import PlaybookError
from playbooks.s3 import S3Settings, validate_bucket

SERVICE = "storage"
REGION = "us-east-1"


def _credentials(c) -> dict[str, str]:
    """Generated once, kept in the state folder (0600), never printed."""
    path = local.service_dir(c, SERVICE) / "credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    creds = {
        "AWS_ACCESS_KEY_ID": "AKLOCAL" + secrets.token_hex(6).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(creds, out)
    for key, value in creds.items():
        secret_file = path.parent / key.lower()
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(value)
    return creds


def settings(c) -> tuple[S3Settings, str] | None:
    """The running local S3 server's settings and bucket, or None."""
    state = local.processes(c, SERVICE).get(SERVICE)
    if not state or local.health(state) != "healthy":
        return None
    creds = _credentials(c)
    s3 = S3Settings(
        access_key=creds["AWS_ACCESS_KEY_ID"],
        secret_key=creds["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=f"http://127.0.0.1:{state['ports']['http']}",
        region=REGION,
    )
    return s3, state["inputs"]["bucket"]


def up(c, bucket=None, port=None) -> None:
    chosen = validate_bucket(bucket or os.environ.get("WORKSHOP_NAMESPACE") or c.config.storage.bucket)
    state = local.processes(c, SERVICE).get(SERVICE)
    chosen_port = local.choose_port(port, previous=state)
    argv = [local.tool("moto_server"), "-H", "127.0.0.1", "-p", str(chosen_port)]
    process = local.Process(
        SERVICE,
        argv,
        local.quiet_env(),
        health_url=f"http://127.0.0.1:{chosen_port}/moto-api/",
        inputs={"bucket": chosen},
    )
    result = local.ensure(c, SERVICE, process, {"http": chosen_port}, float(c.config.local.start_timeout))
    found = settings(c)
    if found is None:
        raise PlaybookError("the local S3 server does not answer after starting: see `invoke storage.logs`")
    s3, _ = found
    client = s3.client()
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if chosen not in existing:
        client.create_bucket(Bucket=chosen)
        print(f"storage: created bucket {chosen}")
    if result == "running":
        print(f"storage: already running and healthy (pid {state['pid']}): no change")
    print_env(c)


def print_env(c) -> None:
    found = settings(c)
    if found is None:
        print("storage: not running")
        return
    s3, bucket = found
    folder = local.service_dir(c, SERVICE)
    print(f"storage: S3 endpoint {s3.endpoint_url}, bucket {bucket}; to use it:")
    print(f"export AWS_ENDPOINT_URL={s3.endpoint_url} AWS_REGION={REGION} WORKSHOP_NAMESPACE={bucket}")
    print(f'export AWS_ACCESS_KEY_ID="$(cat {folder / "aws_access_key_id"})"')
    print(f'export AWS_SECRET_ACCESS_KEY="$(cat {folder / "aws_secret_access_key"})"')


def down(c, purge: bool = False) -> None:
    stopped = local.stop(c, SERVICE, grace=float(c.config.local.stop_grace))
    print(f"storage: stopped {', '.join(stopped)}" if stopped else "storage: nothing running")
    if purge:
        local.purge(c, SERVICE)
        print("storage: deleted its credentials")
