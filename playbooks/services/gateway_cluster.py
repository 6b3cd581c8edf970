"""Dask Gateway's objects beside the chart: the password Secret, the CRDs, the Dask clusters, the releases."""

from __future__ import annotations

import base64
import json
import secrets

from playbooks.kube import Kubectl
from playbooks.render import render
from playbooks.services.gateway_chart import CHART, fullname, secret_name, traefik_service

# The password Secret is rendered from manifests/gateway-auth/ (manifests/gateway/ holds Helm values).
AUTH = "gateway-auth"
CRD_RESOURCE = "customresourcedefinitions.apiextensions.k8s.io"
DASKCLUSTERS = "daskclusters.gateway.dask.org"


def read_password(kubectl: Kubectl, release: str) -> str | None:
    result = kubectl.run("get", f"secret/{secret_name(release)}", "-o", "json", "--ignore-not-found", timeout=20)
    if not result.stdout.strip():
        return None
    encoded = (json.loads(result.stdout).get("data") or {}).get("password") or ""
    return base64.b64decode(encoded).decode() or None


def password_docs(release: str, namespace: str, password: str) -> list[dict]:
    encoded = base64.b64encode(password.encode()).decode()
    return render(AUTH, release, namespace, {"secret_name": secret_name(release), "password": encoded})


def choose_password(kubectl: Kubectl, release: str) -> str:
    """The release's password: reused from its Secret, or generated (store_password keeps it)."""
    password = read_password(kubectl, release)
    if password is None:
        password = secrets.token_urlsafe(32)
        kubectl.out(
            f"{release}: {'would generate' if kubectl.dry_run else 'generated'} a password in Secret {secret_name(release)}"
        )
    return password


def store_password(kubectl: Kubectl, release: str, password: str) -> None:
    kubectl.apply(password_docs(release, kubectl.target.namespace, password))


def apply_crds(kubectl: Kubectl, docs: list[dict]) -> None:
    """Apply the chart's CRDs server-side before every install or upgrade.

    helm creates CRDs only when they are absent and never upgrades them: an upgrade, or an
    install over CRDs left by `down` without --purge, would otherwise keep old ones.
    """
    names = [doc["metadata"]["name"] for doc in docs]
    if kubectl.dry_run:
        kubectl.show_apply(note=f"  # the chart's {len(docs)} CRDs: {', '.join(names)}")
        return
    changed = kubectl.apply(docs, timeout=180)
    kubectl.out(f"CRDs: {'updated' if changed else 'unchanged'} ({', '.join(names)})")


def installed_crds(kubectl: Kubectl) -> list[str]:
    """CRDs that `gateway.up` applied (its field manager is among their managers): the chart's."""
    result = kubectl.run("get", CRD_RESOURCE, "-o", "json", "--show-managed-fields", timeout=30)
    return [
        f"customresourcedefinition.apiextensions.k8s.io/{item['metadata']['name']}"
        for item in json.loads(result.stdout or "{}").get("items", [])
        if any(m.get("manager") == kubectl.field_manager for m in item["metadata"].get("managedFields") or [])
    ]


def delete_clusters(kubectl: Kubectl, release: str, timeout: float) -> None:
    """Stop the release's Dask clusters while its controller still runs to clean them up."""
    args = ["delete", DASKCLUSTERS, "-l", f"gateway.dask.org/instance={fullname(release)}",
            "--ignore-not-found", "--wait=true", f"--timeout={int(timeout)}s"]  # fmt: skip
    if kubectl.dry_run:
        kubectl.show(*args)
        return
    result = kubectl.run(*args, timeout=timeout + 15, check=False)
    if not result.ok and "doesn't have a resource type" not in result.stderr:
        raise kubectl.failure(tuple(args), result)
    if result.stdout.strip():
        kubectl.out(f"{release}: {result.stdout.strip()}")


def traefik_ports(kubectl: Kubectl, release: str) -> tuple[int, int] | None:
    """(web port, scheduler TCP port) of the release's Traefik service; None if it is absent."""
    result = kubectl.run("get", f"service/{traefik_service(release)}", "-o", "json", "--ignore-not-found", timeout=20)
    if not result.stdout.strip():
        return None
    ports = {p.get("name"): p["port"] for p in json.loads(result.stdout)["spec"]["ports"]}
    return ports["web"], ports.get("tcp", ports["web"])


def deployed_releases(kubectl: Kubectl) -> list[str]:
    """Gateway releases in the namespace, found by the chart's labels on their services."""
    state = kubectl.get_json("services", f"app.kubernetes.io/name={CHART}")
    found = {item["metadata"].get("labels", {}).get("app.kubernetes.io/instance") for item in state.get("items", [])}
    return sorted(r for r in found if r)
