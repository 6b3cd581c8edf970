"""Tasks that span services: where am I, and does everything deployed work."""

from __future__ import annotations

from playbooks.deploy import kubectl_for, resolve_target
from playbooks.errors import PlaybookError, task
from playbooks.local import state_root
from playbooks.report import summary_table
from playbooks.services import dask, gateway, mlflow, mlflow_local

LOCAL_SMOKE_CHECKS = {"mlflow": mlflow_local.smoke_reports}
SMOKE_CHECKS = {"mlflow": mlflow.smoke_reports, "dask": dask.smoke_reports, "gateway": gateway.smoke_reports}


@task(
    help={
        "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
        "mode": "namespace, vcluster or local; overrides detection.",
    }
)
def target(c, namespace=None, mode=None):
    """Show where the playbooks act: mode, namespace, context, API server, rights, evidence."""
    found = resolve_target(c, namespace, mode)
    print(f"mode:       {found.mode}")
    if found.local:
        print(f"state:      {state_root(c)}")
        print(f"evidence:   {found.evidence[0]}")
        return
    print(f"namespace:  {found.namespace} (from {found.namespace_source})")
    print(f"context:    {found.context or '(in-cluster service account)'}")
    print(f"api server: {found.server}")
    print(f"kubeconfig: {found.source.kubeconfig or '(in-cluster)'}")
    print("evidence:")
    for line in found.evidence:
        print(f"  - {line}")
    print("access (SelfSubjectAccessReview / SelfSubjectRulesReview):")
    for check in found.checks:
        print(f"  {check.describe()}")


@task(
    help={
        "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
        "mode": "namespace, vcluster or local; overrides detection.",
    }
)
def smoke(c, namespace=None, mode=None):
    """Run the smoke check of every deployed service and print a table; fails if any fails."""
    found = resolve_target(c, namespace, mode)
    reports = []
    if found.local:
        for check in LOCAL_SMOKE_CHECKS.values():
            reports += check(c)
    else:
        kubectl = kubectl_for(c, found)
        for check in SMOKE_CHECKS.values():
            reports += check(c, found, kubectl)
    if not reports:
        raise PlaybookError(f"no service is deployed in namespace {found.namespace}: run `invoke mlflow.up` first")
    print()
    print(summary_table(reports))
    failed = [r for r in reports if not r.ok]
    if failed:
        raise PlaybookError(f"{len(failed)} of {len(reports)} smoke checks failed: {failed[0].failure}")
