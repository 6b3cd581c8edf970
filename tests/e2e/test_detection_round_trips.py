"""Detection asks the API at most three questions, in both modes, counted on the wire."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from kubernetes.client import rest
from urllib3.connectionpool import HTTPConnectionPool

from playbooks import target as target_module
from playbooks.target import detect

MAX_ROUND_TRIPS = 3


@pytest.fixture
def counted(monkeypatch):
    """Count API calls (the client's REST layer) and HTTP requests (urllib3, retries included).

    Only this thread's: the envtest fake kubelet polls the same API from a thread of its own.
    """
    me = threading.get_ident()
    calls: Counter = Counter()
    requests: list[str] = []
    real_request, real_urlopen = rest.RESTClientObject.request, HTTPConnectionPool.urlopen

    def request(self, method, url, *args, **kwargs):
        if threading.get_ident() == me:
            calls[method] += 1
        return real_request(self, method, url, *args, **kwargs)

    def urlopen(self, method, url, *args, **kwargs):
        if threading.get_ident() == me:
            requests.append(f"{method} {url}")
        return real_urlopen(self, method, url, *args, **kwargs)

    monkeypatch.setattr(rest.RESTClientObject, "request", request)
    monkeypatch.setattr(HTTPConnectionPool, "urlopen", urlopen)
    monkeypatch.setattr(target_module, "_detected", {})
    monkeypatch.setattr(target_module, "_last", [])
    return calls, requests


def test_detection_makes_at_most_three_round_trips(session, counted):
    calls, requests = counted
    namespace = session.namespace if session.mode == "vcluster" else None
    found = detect(namespace=namespace, kubeconfig=str(session.kubeconfig), env=session.env)

    assert found.mode == session.mode and found.namespace == session.namespace, found.evidence
    assert 0 < len(requests) <= MAX_ROUND_TRIPS, requests
    assert sum(calls.values()) == len(requests), (calls, requests)

    asked = len(requests)
    again = detect(namespace=namespace, kubeconfig=str(session.kubeconfig), env=session.env)
    assert again is found
    assert len(requests) == asked, f"the second detection in one chain asked the API again: {requests[asked:]}"
