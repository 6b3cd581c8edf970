"""The apply / wait / tear-down machinery every Kubernetes service shares."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import partial

from playbooks import quota
from playbooks.errors import PlaybookError
from playbooks.kube import Kubectl
from playbooks.render import (
    kinds,
    label_selector,
    load_templates,
    managed_selector,
    selector_labels,
)
from playbooks.target import Target, target_from_config
from playbooks.together import run_all

_announced: set[Target] = set()


@dataclass
class Plan:
    """Everything one service's `up` will do, computed and validated before any write."""

    service: str
    instance: str
    docs: list[dict]
    deployments: list[str]
    timeout: float
    notes: list[str] = field(default_factory=list)

    @property
    def selector(self) -> str:
        return label_selector(selector_labels(self.service, self.instance))


def config_hash(*parts) -> str:
    """A short digest of a pod's inputs: a change of any of them rolls the pods."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_target(c, namespace: str | None = None, mode: str | None = None) -> Target:
    target = target_from_config(c, namespace=namespace, mode=mode)
    if target not in _announced:
        _announced.add(target)
        where = f"evidence: {target.evidence[0]}" if target.local else f"namespace from {target.namespace_source}"
        print(f"target: {target.summary()} ({where})", flush=True)
    return target


def kubectl_for(c, target: Target, dry_run: bool = False) -> Kubectl:
    return Kubectl(
        target,
        binary=c.config.tools.kubectl,
        field_manager=c.config.tools.field_manager,
        dry_run=dry_run,
        out=lambda line: print(line, flush=True),
    )


def check_access(target: Target, docs: list[dict], verbs: tuple[str, ...] = ("create", "patch")) -> None:
    """Refuse before the first write when the credentials lack a permission the plan needs."""
    missing = []
    for resource in kinds(docs):
        plural, _, group = resource.partition(".")
        for verb in verbs:
            if target.may(verb, plural, group) is False:
                missing.append(f"{verb} {resource}")
    if missing:
        raise PlaybookError(
            f"the credentials may not {', '.join(missing)} in namespace {target.namespace}: "
            "ask for an edit role there or pick another namespace (does it exist?)"
        )


def check_quota(kubectl: Kubectl, docs: list[dict]) -> None:
    """Refuse before the first write if the namespace's quotas cannot take what docs add."""
    result = kubectl.run("get", "resourcequotas", "-o", "json", timeout=30, check=False)
    if not result.ok:
        kubectl.out(f"quota: not checked ({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no answer'})")
        return
    quotas = json.loads(result.stdout or "{}").get("items", [])
    if quotas:
        quota.check(quotas, docs, kubectl.live(docs), kubectl.target.namespace)


def apply_plans(kubectl: Kubectl, plans: list[Plan]) -> None:
    """Apply every plan, then wait for all of them together: wall time ~ the slowest."""
    for plan in plans:
        for note in plan.notes:
            kubectl.out(f"{plan.instance}: {note}")
    if kubectl.dry_run:
        for plan in plans:
            kubectl.apply_now(plan.docs)
        return
    changed = {id(plan) for plan in plans if kubectl.differs(plan.docs)}
    if changed:
        check_quota(kubectl, [doc for plan in plans if id(plan) in changed for doc in plan.docs])
    for plan in plans:
        if id(plan) in changed:
            kubectl.apply_now(plan.docs)
        kubectl.out(f"{plan.instance}: {'applied changes' if id(plan) in changed else 'no change'}")
    waits = [(plan, name) for plan in plans for name in plan.deployments]
    run_all(
        {
            f"{plan.instance}/{name}": partial(kubectl.wait_for_deployment, name, plan.selector, plan.timeout, label)
            for plan, name in waits
            for label in [plan.instance if len(waits) == 1 else f"{plan.instance}/{name}"]
        }
    )


def tear_down(
    kubectl: Kubectl, service: str, instance: str | None, purge: bool, keep: tuple[str, ...] = ("persistentvolumeclaim/",)
) -> list[str]:
    """Delete what carries the service's labels; what holds data (keep: name prefixes) stays unless purge."""
    found = kubectl.names(kinds(list(load_templates(service))), managed_selector(service, instance))
    doomed = [n for n in found if purge or not n.startswith(keep)]
    kept = [n for n in found if n not in doomed]
    label = instance or service
    if not found:
        kubectl.out(f"{label}: nothing deployed in namespace {kubectl.target.namespace}")
        return []
    kubectl.delete(doomed)
    if not kubectl.dry_run:
        for name in doomed:
            kubectl.out(f"{label}: deleted {name}")
    for name in kept:
        kubectl.out(f"{label}: kept {name} (pass --purge to delete it)")
    return doomed


def deployed_instances(kubectl: Kubectl, service: str) -> list[str]:
    """Instances of a service found in the namespace by their labels."""
    state = kubectl.get_json("deployments.apps", managed_selector(service))
    instances = {
        item["metadata"]["labels"].get("app.kubernetes.io/instance") for item in state.get("items", [])
    }
    return sorted(i for i in instances if i)
