"""Which credentials the in-process API client takes, offline: the rest falls back to kubectl.

Its requests are tested against a real API server in tests/e2e/test_kubeapi_e2e.py.
"""

from __future__ import annotations

import base64
import os
import ssl
from pathlib import Path

import pytest
import yaml

from playbooks import kubeapi
from playbooks.kubeconfig import locate_kubeconfig

SERVER = "https://api.example:6443"
TOKEN = "tok-0123456789"


def source_for(tmp_path: Path, cluster: dict, user: dict):
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    return locate_kubeconfig({"KUBECONFIG": str(path)}, home=tmp_path, service_account_dir=tmp_path / "sa")


INSECURE = {"server": SERVER, "insecure-skip-tls-verify": True}
FALLBACKS = {
    "exec plugin": (INSECURE, {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "get-token"}}),
    "auth-provider": (INSECURE, {"auth-provider": {"name": "oidc", "config": {}}}),
    "basic auth": (INSECURE, {"username": "u", "password": "p"}),
    "impersonation": (INSECURE, {"token": TOKEN, "as": "someone"}),
    "proxy-url": ({**INSECURE, "proxy-url": "http://proxy:3128"}, {"token": TOKEN}),
    "insecure with a CA": ({**INSECURE, "certificate-authority-data": "Q0E="}, {"token": TOKEN}),
    "a missing CA file": ({"server": SERVER, "certificate-authority": "/nonexistent/ca.crt"}, {"token": TOKEN}),
    "a missing token file": (INSECURE, {"tokenFile": "/nonexistent/token"}),
    "a certificate without its key": (INSECURE, {"client-certificate-data": base64.b64encode(b"x").decode()}),
    "no server": ({"insecure-skip-tls-verify": True}, {"token": TOKEN}),
}


@pytest.mark.parametrize("case", FALLBACKS, ids=list(FALLBACKS))
def test_what_only_kubectl_can_do_gets_no_client(tmp_path, case):
    cluster, user = FALLBACKS[case]
    assert kubeapi.client_for(source_for(tmp_path, cluster, user), {}) is None


def test_a_token_over_tls_gets_a_client_that_verifies(tmp_path):
    client = kubeapi.client_for(source_for(tmp_path, {"server": SERVER + "/prefix/"}, {"token": TOKEN}), {})
    assert client is not None and client.secure and (client.host, client.port) == ("api.example", 6443)
    assert client.prefix == "/prefix"
    assert client.context.verify_mode == ssl.CERT_REQUIRED and client.context.check_hostname
    assert client.context.hostname_checks_common_name is False
    assert client._authorization() == {"Authorization": f"Bearer {TOKEN}"}
    assert TOKEN not in repr(client.__dict__.get("server_hostname"))


def test_proxies_as_kubectl_reads_them(tmp_path):
    source = source_for(tmp_path, INSECURE, {"token": TOKEN})
    proxy = {"HTTPS_PROXY": "http://proxy.invalid:3128"}
    assert kubeapi.client_for(source, proxy) is None
    assert kubeapi.client_for(source, {**proxy, "NO_PROXY": "localhost,.example"}) is not None
    assert kubeapi.client_for(source, {**proxy, "no_proxy": "*"}) is not None
    assert kubeapi.client_for(source, {"HTTP_PROXY": "http://proxy.invalid:3128"}) is not None  # https: not used
    local = source_for(tmp_path, {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}, {})
    assert kubeapi.client_for(local, proxy) is not None  # Go never proxies loopback


def test_the_switch_turns_it_off(tmp_path):
    source = source_for(tmp_path, INSECURE, {"token": TOKEN})
    assert kubeapi.client_for(source, {kubeapi.DIRECT_ENV: "0"}) is None
    assert kubeapi.client_for(source, {kubeapi.DIRECT_ENV: "1"}) is not None


def test_a_token_file_is_reread_and_relative_to_the_kubeconfig(tmp_path):
    (tmp_path / "token").write_text("first\n")
    client = kubeapi.client_for(source_for(tmp_path, INSECURE, {"tokenFile": "token"}), {})
    assert client._authorization() == {"Authorization": "Bearer first"}
    (tmp_path / "token").write_text("rotated\n")
    assert client._authorization() == {"Authorization": "Bearer rotated"}


def test_certificate_data_leaves_no_file_behind(tmp_path, monkeypatch):
    import subprocess

    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=u",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    user = {"client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode()}  # fmt: skip
    assert kubeapi.client_for(source_for(tmp_path, INSECURE, user), {}) is not None
    assert os.listdir(tmp_path / "tmp") == []


def test_kinds_it_does_not_know_go_to_kubectl():
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x"}}
    elsewhere = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}}
    client = kubeapi.Client("https://127.0.0.1:1", None, None, None, None)  # never asked: decided offline
    assert kubeapi.differs(client, [crd], "ns1", "m", 5) is None
    assert kubeapi.differs(client, [elsewhere], "ns1", "m", 5) is None
    assert kubeapi.list_kinds(client, ["customresourcedefinitions.apiextensions.k8s.io"], "ns1", None, 5) is None
    assert kubeapi.RESOURCES["deployments.apps"] == ("apps/v1", "Deployment")
    assert kubeapi.RESOURCES["pods"] == ("v1", "Pod")
