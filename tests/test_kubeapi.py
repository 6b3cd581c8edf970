"""Which credentials the in-process API client takes, offline: the rest falls back to kubectl.

Its requests are tested against a real API server in tests/e2e/test_kubeapi_e2e.py.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import threading
import time
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


def serve_once(answer) -> tuple[str, threading.Thread, socket.socket]:
    """A plain-HTTP server on 127.0.0.1 whose one connection is handled by answer(connection)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            answer(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread, listener


def test_a_dripping_answer_is_cut_at_the_deadline():
    def drip(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        with contextlib.suppress(OSError):
            for _ in range(100):
                conn.sendall(b"x")
                time.sleep(0.1)

    server, _, listener = serve_once(drip)
    with listener:
        client = kubeapi.Client(server, None, None, TOKEN, None)
        started = time.monotonic()
        assert client.request("GET", "/api", timeout=1) is None
        assert time.monotonic() - started < 2


def test_an_answer_in_time_is_read_whole():
    body = b'{"kind": "APIVersions"}'

    def answer(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    server, _, listener = serve_once(answer)
    with listener:
        found = kubeapi.Client(server, None, None, TOKEN, None).request("GET", "/api", timeout=5)
    assert found == kubeapi.Response(200, body) and found.json() == {"kind": "APIVersions"}


def test_one_kept_alive_connection_carries_request_after_request():
    """Answers read whole leave the connection ready for the next request: one connection, three answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    connections = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(conn)
            threading.Thread(target=answer_all, args=(conn,), daemon=True).start()

    def answer_all(conn):
        with conn, contextlib.suppress(OSError):
            while conn.recv(65536):
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")

    threading.Thread(target=serve, daemon=True).start()
    with listener:
        client = kubeapi.Client(f"http://127.0.0.1:{listener.getsockname()[1]}", None, None, TOKEN, None)
        answers = [client.request("GET", f"/api/v1/x{i}", timeout=5) for i in range(3)]
        client.close()
    assert answers == [kubeapi.Response(404, b"{}")] * 3
    assert len(connections) == 1
