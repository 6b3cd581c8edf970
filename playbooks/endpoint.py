"""Reach a Service: in-cluster DNS when running inside the cluster, else a port-forward."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace

from playbooks.errors import PlaybookError
from playbooks.kube import Kubectl
from playbooks.report import Report


def _never_dropped(grace: float = 0) -> str | None:
    return None


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    how: str
    # Why the way to the service broke since it was opened (a dropped port-forward), or None.
    dropped: Callable[..., str | None] = field(default=_never_dropped, compare=False, repr=False)

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
    with kubectl.forward(service, port) as forward:
        yield Endpoint("127.0.0.1", forward.port, f"port-forward to service/{service}", forward.dropped)


def check_service(kubectl: Kubectl, service: str, ports: Sequence[int], check: Callable[..., Report]) -> Report:
    """Run check(endpoint, ...) with one endpoint per port of the service; never raises for a failed check.

    A port-forward that drops during the check gets one more try through a new one; if that
    drops too (or cannot start), the report's failure names the drop and kubectl's last word.
    """
    report = drop = None
    for attempt in range(2):
        try:
            with ExitStack() as stack:
                endpoints = [stack.enter_context(service_endpoint(kubectl, service, port)) for port in ports]
                report = check(*endpoints)
                drop = None if report.ok else next(filter(None, (e.dropped(1.0) for e in endpoints)), None)
        except PlaybookError as error:
            if report is None:
                raise  # the first forward did not start: as before any check ran
            return blamed(report, f"{drop}; a new port-forward failed: {error}")
        if drop is None:
            return report
        if attempt == 0:
            kubectl.out(f"{report.service}: {drop}; trying once more through a new port-forward")
    return blamed(report, drop)


def blamed(report: Report, reason: str) -> Report:
    """The report with its failed step's reason replaced by the cause underneath it."""
    steps = [replace(step, detail=reason) if not step.ok else step for step in report.steps]
    return Report(report.service, steps)
