"""Detection asks the API at most three questions, in both modes, counted at the server:
in-process (playbooks.kubeapi, its own user agent) and, with the direct client off, by kubectl.

The envtest control plane writes an audit log of every request made with service-account
credentials (tests/e2e/controlplane.py); each test's session has a service account of its
own, so its requests are told apart from the fake kubelet's and the controller manager's.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from invoke import Config, Context

from playbooks import kubeapi
from playbooks.backends import resolve_target
from playbooks.collection import ns

MAX_ROUND_TRIPS = 3
QUESTIONS = [
    "/api/v1/nodes",
    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
]
# gcloud's kubectl is a dispatcher: before running the kubectl that matches the server, it
# asks GET /version itself. A request of that wrapper, not of detection: listed apart.
DISPATCHER = "kubectl-dispatcher/"
MARKER = "audit-marker-"


def server_and_token(kubeconfig: Path) -> tuple[str, str, str]:
    """Server, CA file and token of a kubeconfig written by ControlPlane.write_kubeconfig."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    return cluster["server"], cluster["certificate-authority"], config["users"][0]["user"]["token"]


def settled_requests(audit_log: Path, kubeconfig: Path, username: str) -> list[dict]:
    """Every request of `username` so far, once the audit log holds them all, markers left out.

    A marker request, sent now with the same credentials, is written after every request
    that was answered before it: once the marker is in the log, so are they.
    """
    server, ca, token = server_and_token(kubeconfig)
    marker = f"/api/v1/namespaces/default/configmaps/{MARKER}{uuid.uuid4().hex[:8]}"
    request = urllib.request.Request(server + marker, headers={"Authorization": f"Bearer {token}"})
    try:
        urllib.request.urlopen(request, context=ssl.create_default_context(cafile=ca), timeout=10).close()
    except urllib.error.HTTPError:
        pass  # 403 or 404: audited all the same
    deadline = time.monotonic() + 10
    while True:
        events = [json.loads(line) for line in audit_log.read_text().splitlines() if line.strip()]
        mine = [e for e in events if e["user"]["username"] == username and e["stage"] == "ResponseComplete"]
        if any(e["requestURI"] == marker for e in mine):
            return [e for e in mine if MARKER not in e["requestURI"]]
        assert time.monotonic() < deadline, f"the marker request {marker} never reached the audit log {audit_log}"
        time.sleep(0.1)


def describe(events: list[dict]) -> list[str]:
    return [f"{e['verb']} {e['requestURI']} ({e.get('userAgent', '?')})" for e in events]


@pytest.fixture
def credentials(session):
    """(kubeconfig, username) of the session: in vCluster mode an admin service account of its own."""
    cluster = session.cluster
    if cluster.plane is None or not cluster.plane.audit_log.is_file():
        pytest.skip("counting at the server needs the envtest control plane's audit log")
    ns = session.namespace
    if session.mode == "namespace":
        yield session.kubeconfig, f"system:serviceaccount:{ns}:session"
        return
    # The vCluster session's admin token is also the fake kubelet's: give detection its own admin.
    binding = f"{ns}-vcluster-admin"
    cluster.kubectl("create", "serviceaccount", "vcluster-admin", "-n", ns)
    cluster.kubectl(
        "create", "clusterrolebinding", binding, "--clusterrole=cluster-admin", f"--serviceaccount={ns}:vcluster-admin"
    )
    token = cluster.kubectl("create", "token", "vcluster-admin", "-n", ns, "--duration=1h").stdout.strip()
    try:
        yield (
            cluster.plane.write_kubeconfig(f"vcluster-admin-{ns}", token),
            f"system:serviceaccount:{ns}:vcluster-admin",
        )
    finally:
        cluster.kubectl("delete", "clusterrolebinding", binding, check=False)


def chain_context(kubeconfig: Path, namespace: str | None) -> Context:
    """A context as one `invoke a b c` chain shares it: its own Config, hence its own chain."""
    config = Config(lazy=True)
    config.load_collection(ns.configuration())
    config.target.kubeconfig = str(kubeconfig)
    config.target.namespace = namespace
    return Context(config)


@pytest.mark.parametrize("direct", [True, False], ids=["in-process", "kubectl"])
def test_detection_makes_at_most_three_round_trips(session, credentials, monkeypatch, direct):
    kubeconfig, username = credentials
    audit_log = session.cluster.plane.audit_log
    env = {**session.env, "KUBECONFIG": str(kubeconfig)}
    namespace = session.namespace if session.mode == "vcluster" else None
    before = settled_requests(audit_log, kubeconfig, username)

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(kubeapi.DIRECT_ENV, "1" if direct else "0")
    c = chain_context(kubeconfig, namespace)
    found = resolve_target(c)
    assert found.mode == session.mode and found.namespace == session.namespace, found.evidence

    requests = settled_requests(audit_log, kubeconfig, username)[len(before) :]
    wrapper = [e for e in requests if e.get("userAgent", "").startswith(DISPATCHER)]
    asked = [e for e in requests if e not in wrapper]
    assert 0 < len(asked) <= MAX_ROUND_TRIPS, describe(requests)
    # The three questions and nothing else: no discovery, no retry.
    assert sorted(urlparse(e["requestURI"]).path for e in asked) == QUESTIONS, describe(requests)
    assert all(e["verb"] == "get" and urlparse(e["requestURI"]).path == "/version" for e in wrapper), describe(wrapper)
    # Who asked: the in-process client (no kubectl process at all), or kubectl.
    agents = {e.get("userAgent", "?").split("/")[0] for e in asked}
    assert agents == ({kubeapi.USER_AGENT} if direct else {"kubectl"}), describe(requests)

    again = resolve_target(c)
    assert again is found
    later = settled_requests(audit_log, kubeconfig, username)[len(before) + len(requests) :]
    assert later == [], f"the second detection in one chain asked the API again: {describe(later)}"
