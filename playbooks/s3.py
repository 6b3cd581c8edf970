"""Object storage settings from the session's AWS_* variables, and the bucket name rules."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from playbooks.errors import PlaybookError

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]*$")


@dataclass(frozen=True)
class S3Settings:
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    endpoint_url: str | None = None
    region: str | None = None
    session_token: str | None = field(default=None, repr=False)

    def credentials(self) -> dict[str, str]:
        """The Secret's data. Only ever sent on stdin, never printed."""
        data = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        if self.session_token:
            data["AWS_SESSION_TOKEN"] = self.session_token
        return data

    def public_env(self) -> dict[str, str]:
        """Environment a server needs that is not secret."""
        env = {"AWS_S3_FORCE_PATH_STYLE": "true"}
        if self.endpoint_url:
            env["MLFLOW_S3_ENDPOINT_URL"] = self.endpoint_url
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.region:
            env["AWS_REGION"] = self.region
            env["AWS_DEFAULT_REGION"] = self.region
        return env

    def secrets(self) -> list[str]:
        return [v for v in (self.access_key, self.secret_key, self.session_token) if v]

    def client(self, attempts: int = 2, connect_timeout: float = 5):
        """A boto3 S3 client with path-style addressing (S3-compatible endpoints)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token,
            endpoint_url=self.endpoint_url,
            region_name=self.region or "us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": attempts},
                connect_timeout=connect_timeout,
                read_timeout=20,
            ),
        )

    def where(self) -> str:
        return self.endpoint_url or "AWS S3"


def bucket_shortfalls(s3: S3Settings, bucket: str) -> list[str]:
    """Whether the credentials reach the bucket (S3 HeadBucket); what is wrong if not."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.client(attempts=1, connect_timeout=3).head_bucket(Bucket=bucket)
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.response.get("Error", {}).get("Code", "?")
        if status == 404 or code in ("404", "NoSuchBucket"):
            return [f"bucket {bucket} does not exist at {s3.where()}: create it or pass another --bucket"]
        if status in (401, 403):
            return [
                f"the S3 credentials may not use bucket {bucket} at {s3.where()} ({status} {code}): "
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass another --bucket"
            ]
        return [
            f"S3 at {s3.where()} answered {status} {code} for bucket {bucket}: check AWS_ENDPOINT_URL and the bucket"
        ]
    except BotoCoreError as error:
        cause = error.kwargs.get("error") if isinstance(error.kwargs.get("error"), Exception) else error
        reason = str(cause).rsplit(": ", 1)[-1][:160]
        return [f"cannot reach S3 endpoint {s3.where()} ({reason}): check AWS_ENDPOINT_URL and the network"]
    return []


def s3_from_env(env: Mapping[str, str], required: bool = True) -> S3Settings | None:
    """The workspace's S3 settings; a half-set pair of keys is always an error."""
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key and not secret:
        if required:
            raise PlaybookError(
                "no S3 credentials: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(and AWS_ENDPOINT_URL for an S3-compatible store), or run `invoke storage.up` first"
            )
        return None
    if not key or not secret:
        missing = "AWS_ACCESS_KEY_ID" if not key else "AWS_SECRET_ACCESS_KEY"
        raise PlaybookError(f"S3 credentials are half set: export {missing} too")
    endpoint = env.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3") or None
    if endpoint and not re.match(r"^https?://[^/\s]+/?$", endpoint):
        raise PlaybookError(
            f"AWS_ENDPOINT_URL={endpoint!r} is not an endpoint: use scheme://host[:port], with no bucket or path"
        )
    return S3Settings(
        access_key=key,
        secret_key=secret,
        endpoint_url=endpoint.rstrip("/") if endpoint else None,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        session_token=env.get("AWS_SESSION_TOKEN") or None,
    )


def validate_bucket(name: str) -> str:
    """The S3 bucket naming rules (general purpose buckets)."""
    problem = None
    if not 3 <= len(name) <= 63:
        problem = "must be 3 to 63 characters long"
    elif not _BUCKET.match(name):
        problem = "may hold only lowercase letters, digits, '.' and '-', and must start and end with a letter or digit"
    elif ".." in name or ".-" in name or "-." in name:
        problem = "must not have '..', '.-' or '-.'"
    elif name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(("-s3alias", "--ol-s3", "--x-s3")):
        problem = "must not use a prefix or suffix reserved by S3"
    else:
        try:
            ipaddress.ip_address(name)
            problem = "must not look like an IP address"
        except ValueError:
            pass
    if problem:
        raise PlaybookError(f"invalid bucket name {name!r}: it {problem}; pass a valid --bucket")
    return name


def choose_bucket(flag: str | None, configured: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """--bucket, then configuration, then WORKSHOP_NAMESPACE (the Datalab's primary bucket)."""
    for value, origin in ((flag, "--bucket"), (configured, "configuration")):
        if value:
            return validate_bucket(value), origin
    if env.get("WORKSHOP_NAMESPACE"):
        return validate_bucket(env["WORKSHOP_NAMESPACE"]), "WORKSHOP_NAMESPACE (the Datalab's bucket)"
    raise PlaybookError("no bucket given: pass --bucket NAME (or set WORKSHOP_NAMESPACE)")


def validate_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if not _PREFIX.match(prefix) or "//" in prefix:
        raise PlaybookError(f"invalid artifact prefix {prefix!r}: use letters, digits and -_./ only")
    return prefix
