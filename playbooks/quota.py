"""Quota preflight: what a plan adds, against every ResourceQuota's hard limits and current use.

What a plan adds is net of the live objects it replaces, so re-applying a running service
needs nothing more. Every shortfall is reported at once.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from playbooks.errors import PlaybookError
from playbooks.quantity import parse

COUNTED = {
    "Deployment": "count/deployments.apps",
    "StatefulSet": "count/statefulsets.apps",
    "Job": "count/jobs.batch",
    "Service": "services",
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "PersistentVolumeClaim": "persistentvolumeclaims",
}


def quantity(value) -> Decimal:
    """A Kubernetes quantity as a number (cores, bytes or a count)."""
    number = parse(value)
    if number is None:
        raise PlaybookError(f"cannot read the quantity {value!r} of a ResourceQuota")
    return number


# The field that says how many pods of its template a workload runs at once.
POD_COUNT = {"Deployment": "replicas", "StatefulSet": "replicas", "Job": "parallelism"}


def _pod_spec_and_count(doc: dict) -> tuple[dict | None, int]:
    spec = doc.get("spec") or {}
    if doc.get("kind") in POD_COUNT:
        return spec.get("template", {}).get("spec"), int(spec.get(POD_COUNT[doc["kind"]], 1))
    return None, 0


def _claims(doc: dict) -> list[tuple[dict, int]]:
    """The claims an object makes: a PersistentVolumeClaim itself, or a StatefulSet's template per replica."""
    if doc.get("kind") == "PersistentVolumeClaim":
        return [(doc, 1)]
    if doc.get("kind") == "StatefulSet":
        spec = doc.get("spec") or {}
        return [(claim, int(spec.get("replicas", 1))) for claim in spec.get("volumeClaimTemplates") or []]
    return []


def needs(docs: list[dict]) -> Counter:
    """What the objects take from a quota: resources of their pods, storage, object counts."""
    total: Counter = Counter()
    for doc in docs:
        kind = doc.get("kind")
        if kind in COUNTED:
            total[COUNTED[kind]] += 1
        for claim, count in _claims(doc):
            if kind != "PersistentVolumeClaim":
                total[COUNTED["PersistentVolumeClaim"]] += count
            size = claim.get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
            if size:
                total["requests.storage"] += quantity(size) * count
        pod, count = _pod_spec_and_count(doc)
        if pod is None or count == 0:
            continue
        total["pods"] += count
        for container in pod.get("containers", []):
            resources = container.get("resources") or {}
            for kind_of, values in (
                ("requests", resources.get("requests") or {}),
                ("limits", resources.get("limits") or {}),
            ):
                for name in ("cpu", "memory"):
                    if name in values:
                        total[f"{kind_of}.{name}"] += quantity(values[name]) * count
    total["cpu"] = total["requests.cpu"]
    total["memory"] = total["requests.memory"]
    return total


def _show(key: str, value: Decimal) -> str:
    if key.endswith("memory") or key.endswith("storage"):
        return f"{(value / 2**20).quantize(Decimal(1))}Mi"
    if key.endswith("cpu"):
        return f"{(value * 1000).quantize(Decimal(1))}m"
    return str(int(value))


def shortfalls(quotas: list[dict], adds: Counter) -> list[str]:
    """One phrase per quota key that the plan would exceed."""
    found = []
    for quota in quotas:
        hard = quota.get("status", {}).get("hard") or quota.get("spec", {}).get("hard") or {}
        used = quota.get("status", {}).get("used") or {}
        for key, limit in hard.items():
            want = adds.get(key, 0)
            if want <= 0:
                continue
            left = quantity(limit) - quantity(used.get(key, "0"))
            if want > left:
                found.append(
                    f"{key} needs {_show(key, want)} more, {_show(key, max(left, Decimal(0)))} of "
                    f"{_show(key, quantity(limit))} left (quota {quota['metadata']['name']})"
                )
    return found


def check(quotas: list[dict], planned: list[dict], live: list[dict], namespace: str, what: str = "the plan") -> None:
    """Refuse, naming `what` (e.g. "dask.scale 4"), when planned, net of live, exceeds a quota."""
    adds = needs(planned)
    adds.subtract(needs(live))
    missing = shortfalls(quotas, adds)
    if missing:
        raise PlaybookError(
            f"{what} does not fit the quota of namespace {namespace}: {'; '.join(missing)}; "
            "lower the resources or the worker count, or take something down first"
        )
