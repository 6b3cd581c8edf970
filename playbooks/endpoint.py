"""Reach a Service: in-cluster DNS when running inside the cluster, else a port-forward."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from playbooks.kube import Kubectl


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    how: str

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{self.port}"


def in_cluster_host(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc"


def _answers(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def service_endpoint(kubectl: Kubectl, service: str, port: int) -> Iterator[Endpoint]:
    host = in_cluster_host(service, kubectl.target.namespace)
    # Only a pod can resolve cluster DNS; elsewhere skip the lookup and its delay.
    if os.environ.get("KUBERNETES_SERVICE_HOST") and _answers(host, port):
        yield Endpoint(host, port, "in-cluster DNS")
        return
    with kubectl.port_forward(service, port) as local:
        yield Endpoint("127.0.0.1", local, f"port-forward to service/{service}")
