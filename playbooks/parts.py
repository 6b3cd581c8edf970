"""What a service implements for each backend: small classes whose defaults fit most services.

A ClusterPart plans manifests (`plan`, applied and waited for by the shared machinery of
deploy.py) or installs itself (`ensure`, e.g. a helm chart); a LocalPart starts and stops
processes. Root tasks and the service's own tasks call only these methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playbooks.backends import ClusterBackend, LocalBackend
    from playbooks.deploy import Plan
    from playbooks.forwards import Want
    from playbooks.report import Report
    from playbooks.shellenv import EnvVar
    from playbooks.target import Target


class ClusterPart:
    """A service in namespace or vCluster mode."""

    def __init__(self, service: str) -> None:
        self.service = service

    def validate(self, c, **options) -> None:
        """Offline checks of `up`'s options, before the API is asked anything."""

    def validate_down(self, c, **options) -> None:
        """Offline checks of `down`'s options."""

    def plan(self, backend: ClusterBackend, **options) -> Plan | None:
        """The manifests `up` applies and waits for; None when the part installs itself (ensure)."""
        return None

    def ensure(self, backend: ClusterBackend, **options) -> None:
        raise NotImplementedError(f"{self.service}: a cluster part needs plan() or ensure()")

    def access(self, backend: ClusterBackend, instance: str) -> None:
        """Print how to reach an instance after `up`."""

    def address(self, backend: ClusterBackend, instance: str) -> str:
        """The in-cluster address the status table shows."""
        return ""

    def rows(self, backend: ClusterBackend) -> list[tuple[str, ...]]:
        """Status rows: one per instance, from the Deployments that carry the service's labels."""
        groups: dict[str, list[dict]] = {}
        for item in backend.managed_deployments():
            labels = item["metadata"].get("labels", {})
            if labels.get("app.kubernetes.io/name") == self.service:
                groups.setdefault(labels.get("app.kubernetes.io/instance", "?"), []).append(item)
        rows = []
        for instance, items in sorted(groups.items()):
            ready = sum(i.get("status", {}).get("readyReplicas", 0) for i in items)
            want = sum(i.get("spec", {}).get("replicas", 1) for i in items)
            state = f"{'ready' if ready >= want else 'NOT ready'} {ready}/{want}"
            rows.append((self.service, instance, state, self.address(backend, instance)))
        return rows

    def instances(self, backend: ClusterBackend, name: str | None = None) -> list[str]:
        """The instance named, else every deployed one; says so when there is none."""
        from playbooks.deploy import deployed_instances

        found = [name] if name else deployed_instances(backend.kubectl, self.service)
        if not found:
            print(f"{self.service}: not deployed in namespace {backend.namespace}")
        return found

    def down(self, backend: ClusterBackend, purge: bool, name: str | None = None, **options) -> None:
        from playbooks.deploy import tear_down

        tear_down(backend.kubectl, self.service, name, purge)

    def smoke_reports(self, backend: ClusterBackend, **options) -> list[Report]:
        """Its smoke checks; `keep=True` (smoke --keep) keeps what a check wrote, which it deletes after a pass."""
        return []

    def env(self, backend: ClusterBackend) -> list[EnvVar]:
        """The shell variables that reach it from where the caller is (backend.reach), secrets by reference."""
        return []

    def forwards(self, backend: ClusterBackend) -> list[Want]:
        """The ports of its running instances that `invoke forward` makes reachable on 127.0.0.1."""
        return []

    def logs(self, backend: ClusterBackend, lines: int, name: str | None = None, **options) -> str:
        from playbooks.render import managed_selector

        selector = managed_selector(self.service, name)
        result = backend.kubectl.run("logs", "-l", selector, "--all-containers", "--prefix", f"--tail={int(lines)}")
        return result.stdout.rstrip()

    def sample_docs(self, c, target: Target) -> list[dict]:
        """What `up` applies with this configuration, without asking an API (for the pod-security checks)."""
        return []


class LocalPart:
    """A service as processes on this machine."""

    def __init__(self, service: str) -> None:
        self.service = service

    def validate(self, c, **options) -> None:
        """Offline checks of `up`'s options, before any process starts."""

    def validate_down(self, c, **options) -> None:
        """Offline checks of `down`'s options."""

    def up(self, backend: LocalBackend, **options) -> None:
        raise NotImplementedError

    def down(self, backend: LocalBackend, purge: bool, **options) -> None:
        raise NotImplementedError

    def rows(self, backend: LocalBackend) -> list[tuple[str, ...]]:
        from playbooks import local

        rows = []
        for name, record in local.processes(backend.c, self.service).items():
            ports = record.get("ports") or {}
            addresses = ", ".join(self.url(kind, port) for kind, port in ports.items())
            rows.append((self.service, name, f"{local.health(record)} (pid {record.get('pid')})", addresses))
        return rows

    def url(self, kind: str, port: int) -> str:
        """A full address for a port of its processes (its state names the kind: http, tcp, proxy, ...)."""
        scheme = {"tcp": "tcp", "proxy": "gateway"}.get(kind, "http")
        return f"{scheme}://127.0.0.1:{port}"

    def smoke_reports(self, backend: LocalBackend, **options) -> list[Report]:
        return []

    def env(self, backend: LocalBackend) -> list[EnvVar]:
        """The shell variables that reach its processes, secrets by reference."""
        return []

    def logs(self, backend: LocalBackend, lines: int, **options) -> str:
        return ""
