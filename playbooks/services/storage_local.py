"""Object storage in local mode: `rclone serve s3` over a folder of the state folder, with one bucket.

The objects are plain files under `<state>/storage/objects/<bucket>/`, so they outlive
`storage.down` and a restart; only `storage.down --purge` deletes them. The generated keys
reach the server through its environment (RCLONE_AUTH_KEY), never its command line, and
the server logs no request, so no key appears in its log.
"""

from __future__ import annotations

import os
import secrets

from playbooks import local, statefile
from playbooks.errors import PlaybookError
from playbooks.s3 import S3Settings, validate_bucket

SERVICE = "storage"
REGION = "us-east-1"
KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def objects_dir(c):
    return local.service_dir(c, SERVICE) / "objects"


def _credentials(c) -> dict[str, str]:
    """Generated once, kept in the state folder (0600), never printed. A damaged file is replaced:
    the server checks the keys, the objects do not depend on them."""
    path = local.service_dir(c, SERVICE) / "credentials.json"
    creds, problem = statefile.read_json(path)
    if creds is not None and all(isinstance(creds.get(key), str) and creds[key] for key in KEYS):
        return {key: creds[key] for key in KEYS}
    if path.exists():
        print(f"warning: {path} {problem or 'lacks a key'}: generating new local S3 keys", flush=True)
    creds = {
        "AWS_ACCESS_KEY_ID": "AKLOCAL" + secrets.token_hex(6).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
    }
    statefile.write_json(path, creds)
    for key, value in creds.items():
        statefile.write_private(path.parent / key.lower(), value)
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


def server_process(c, port: int, bucket: str) -> local.Process:
    creds = _credentials(c)
    argv = [
        local.tool("rclone"), "serve", "s3", str(objects_dir(c)), "--addr", f"127.0.0.1:{port}",
        # S3 clients (boto3's checks, MLflow) expect an MD5 ETag; no config file of the user's applies.
        "--etag-hash", "MD5", "--config", str(local.service_dir(c, SERVICE) / "rclone.conf"),
    ]  # fmt: skip
    # rclone reads list flags from the environment as CSV: quote the "id,secret" pair.
    env = local.quiet_env({"RCLONE_AUTH_KEY": f'"{creds["AWS_ACCESS_KEY_ID"]},{creds["AWS_SECRET_ACCESS_KEY"]}"'})
    digest = local.Process("", [creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"]], {}).fingerprint()
    return local.Process(SERVICE, argv, env, health_port=port, inputs={"bucket": bucket, "keys": digest})


def up(c, bucket=None, port=None) -> None:
    chosen = validate_bucket(bucket or os.environ.get("WORKSHOP_NAMESPACE") or c.config.storage.bucket)
    local.check_ports(port)
    with local.writing(c, "storage.up"):
        _up(c, chosen, port)


def _up(c, chosen: str, port) -> None:
    state = local.processes(c, SERVICE).get(SERVICE)
    chosen_port = local.choose_port(
        port, local.preferred_port(c, "storage"), previous=state, last=local.last_ports(c, SERVICE, SERVICE)
    )
    statefile.private_dir(objects_dir(c))
    config = local.service_dir(c, SERVICE) / "rclone.conf"
    if not config.exists():
        statefile.write_private(config, "")
    process = server_process(c, chosen_port, chosen)
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
    """How to use the store; when it crashed, the end of its log and a failure (exit 1)."""
    found = settings(c)
    if found is None:
        print("storage: not running")
        for line in local.crash_report(c, SERVICE):
            print(line)
        local.refuse_crashed(c, SERVICE)
        return
    s3, bucket = found
    folder = local.service_dir(c, SERVICE)
    print(f"storage: S3 endpoint {s3.endpoint_url}, bucket {bucket} (objects kept in {objects_dir(c)}); to use it:")
    print(f"export AWS_ENDPOINT_URL={s3.endpoint_url} AWS_REGION={REGION} WORKSHOP_NAMESPACE={bucket}")
    print(f'export AWS_ACCESS_KEY_ID="$(cat {folder / "aws_access_key_id"})"')
    print(f'export AWS_SECRET_ACCESS_KEY="$(cat {folder / "aws_secret_access_key"})"')


def down(c, purge: bool = False) -> None:
    with local.writing(c, "storage.down", create=False):
        stopped = local.stop(c, SERVICE, grace=float(c.config.local.stop_grace))
        print(f"storage: stopped {', '.join(stopped)}" if stopped else "storage: nothing running")
        if purge:
            local.purge(c, SERVICE)
            print("storage: deleted its objects and credentials")
        elif objects_dir(c).exists():
            print(f"storage: kept the objects in {objects_dir(c)} (pass --purge to delete them)")
