"""A throwaway fifth service, registered from outside the package: one module, one manifest folder,
and one registry entry (DATALAB_PLAYBOOKS_SERVICES=tests.plugin.echo_service). The root tasks,
the status table and the bad-input and pod-security tables must pick it up with no other edit.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection

from playbooks.backends import ClusterBackend, backend_for
from playbooks.deploy import Plan, deployed_instances
from playbooks.errors import task
from playbooks.parts import ClusterPart
from playbooks.registry import Service
from playbooks.render import managed_selector, render
from playbooks.report import Report, Step

SERVICE = "echo"
DEFAULTS = {"name": "echo", "image": "busybox:1.37", "rollout_timeout": 120}
RESOURCES = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "50m", "memory": "32Mi"}}


class EchoOnCluster(ClusterPart):
    def plan(self, backend: ClusterBackend, **_) -> Plan:
        return build_plan(backend.c, backend.target)

    def smoke_reports(self, backend: ClusterBackend, **_) -> list[Report]:
        reports = []
        for instance in deployed_instances(backend.kubectl, SERVICE):
            items = backend.kubectl.get_json("deployments.apps", managed_selector(SERVICE, instance))["items"]
            ready = items[0].get("status", {}).get("readyReplicas", 0) >= 1
            reports.append(Report(instance, [Step("deployment ready", ready, 0.0, "" if ready else "not ready")]))
        return reports

    def sample_docs(self, c, target) -> list[dict]:
        return build_plan(c, target).docs


def build_plan(c, target) -> Plan:
    from playbooks import security

    cfg = c.config[SERVICE]
    params = {"image": cfg.image, "resources": RESOURCES, **security.params(c)}
    return Plan(
        service=SERVICE,
        instance=cfg.name,
        docs=render(SERVICE, cfg.name, target.namespace, params),
        deployments=[cfg.name],
        timeout=float(cfg.rollout_timeout),
    )


@task(help={"namespace": "Namespace to act in.", "mode": "namespace or vcluster."})
def up(c, namespace=None, mode=None, dry_run=False):
    """Deploy the echo service."""
    backend_for(c, namespace, mode, dry_run).up([SERVICE_SPEC], {})


@task(help={"namespace": "Namespace to act in.", "mode": "namespace or vcluster."})
def down(c, namespace=None, mode=None, dry_run=False):
    """Remove the echo service."""
    backend_for(c, namespace, mode, dry_run).down([SERVICE_SPEC], False)


SERVICE_SPEC = Service(
    name=SERVICE,
    collection=Collection(SERVICE, up, down),
    defaults=DEFAULTS,
    cluster=EchoOnCluster(SERVICE),
    manifests={SERVICE: str(Path(__file__).parent / SERVICE)},
)
