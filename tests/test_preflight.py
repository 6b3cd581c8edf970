"""Preflight pieces on real things: an S3 server's HeadBucket answers, a kubectl binary's version."""

import os
import stat
from pathlib import Path

import pytest

from playbooks import preflight
from playbooks.errors import PlaybookError
from playbooks.kube import find_command
from playbooks.procs import free_port
from playbooks.s3 import S3Settings, bucket_shortfalls
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.fakes.kubectl import client_version


def settings(endpoint: str, secret: str = SECRET_KEY) -> S3Settings:
    return S3Settings(access_key=ACCESS_KEY, secret_key=secret, endpoint_url=endpoint, region="us-east-1")


def test_an_existing_bucket_passes(s3_server):
    assert bucket_shortfalls(settings(s3_server.endpoint), s3_server.bucket) == []


def test_a_missing_bucket_is_named(s3_server):
    found = bucket_shortfalls(settings(s3_server.endpoint), "ws-missing")
    assert found == [f"bucket ws-missing does not exist at {s3_server.endpoint}: create it or pass another --bucket"]


def test_an_unreachable_endpoint_is_named_and_the_secret_is_not():
    endpoint = f"http://127.0.0.1:{free_port()}"
    [line] = bucket_shortfalls(settings(endpoint), "ws-frank")
    assert line.startswith(f"cannot reach S3 endpoint {endpoint} (") and "Connection refused" in line
    assert SECRET_KEY not in line and ACCESS_KEY not in line


@pytest.mark.parametrize(
    ("version", "too_old"), [("1.20.0", True), ("1.25.9", True), ("1.26.0", False), ("1.35.1", False)]
)
def test_kubectl_version_is_checked(fake_kubectl, version, too_old):
    fake_kubectl.expect("version", "--client", "-o", "json", stdout=client_version(f"v{version}"))
    binary = fake_kubectl.path
    found = preflight.kubectl_shortfalls(binary, find_command(binary, "install kubectl"))
    if too_old:
        assert found == [
            f"kubectl {version} ({binary}) is too old: install kubectl 1.26 or newer, or set tools.kubectl"
        ]
    else:
        assert found == []


def test_a_kubectl_version_is_remembered_until_the_binary_changes(fake_kubectl, tmp_path, monkeypatch):
    """A no-op `up` starts no `kubectl version`: the answer is kept (0600, private_dir) per binary file."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(preflight, "_kubectl_versions", {})
    fake_kubectl.expect("version", "--client", "-o", "json", stdout=client_version("v1.30.1"), times=1)
    binary = fake_kubectl.path

    def ask() -> tuple[int, int, str]:
        preflight._kubectl_versions.clear()  # a new process
        return preflight.kubectl_version(binary, find_command(binary, "install kubectl"))

    assert ask() == (1, 30, "1.30.1") and ask() == (1, 30, "1.30.1")
    assert len(fake_kubectl.calls()) == 1, "asked again although the binary did not change"
    remembered = tmp_path / f"datalab-playbooks-{os.getuid()}" / preflight.VERSIONS_FILE
    assert stat.S_IMODE(remembered.stat().st_mode) == 0o600
    fake_kubectl.expect("version", "--client", "-o", "json", stdout=client_version("v1.20.0"), times=1)
    script = Path(binary)
    script.write_text(script.read_text() + "# replaced in place\n")
    assert ask() == (1, 20, "1.20.0")
    assert len(fake_kubectl.calls()) == 2


def test_the_real_kubectl_is_new_enough():
    assert preflight.kubectl_shortfalls("kubectl", find_command("kubectl", "install kubectl")) == []


def test_every_shortfall_is_listed_once_in_one_line():
    def raises() -> list[str]:
        raise PlaybookError("kubectl not found: install kubectl")

    checks = [lambda: ["bucket b does not exist"], raises, lambda: [], lambda: ["bucket b does not exist"]]
    with pytest.raises(PlaybookError) as refused:
        preflight.require(checks)
    assert str(refused.value) == (
        "2 problems, nothing was changed: (1) bucket b does not exist; (2) kubectl not found: install kubectl"
    )
    with pytest.raises(PlaybookError, match=r"^only one$"):
        preflight.require([lambda: ["only one"]])
    preflight.require([lambda: [], lambda: []])
