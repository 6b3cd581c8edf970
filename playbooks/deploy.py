"""The apply / wait / tear-down machinery every Kubernetes service shares."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from playbooks import preflight, quota
from playbooks.errors import PlaybookError
from playbooks.kube import Kubectl
from playbooks.render import (
    kinds,
    label_selector,
    load_templates,
    managed_selector,
    selector_labels,
)
from playbooks.together import run_all


@dataclass
class Plan:
    """Everything one service's `up` will do, computed and validated before any write."""

    service: str
    instance: str
    docs: list[dict]
    deployments: list[str]
    timeout: float
    # StatefulSets to wait for, as the Deployments are (the same wait: kube.wait_for_rollout).
    statefulsets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Preflight checks of this plan's own (e.g. that its bucket answers): see playbooks/preflight.py.
    checks: list[preflight.Check] = field(default_factory=list)
    # Deployment name -> the setting that sizes its pods, named by a wait's fix (out of memory,
    # quota); by default the keys of playbooks/defaults.py (see resources_setting).
    resources: dict[str, str] = field(default_factory=dict)
    # Steps run after the preflight and before the docs are applied, only when the plan changes
    # something (not in a dry run): e.g. MLflow's schema migration before a new image serves.
    prepare: list[Callable[[], None]] = field(default_factory=list)

    def resources_setting(self, deployment: str) -> str | None:
        """ "<service>.resources" for the Deployment named like the instance, "<service>.<part>_resources" for "<instance>-<part>"."""
        if deployment in self.resources:
            return self.resources[deployment]
        if deployment == self.instance:
            return f"{self.service}.resources"
        part = deployment.removeprefix(f"{self.instance}-")
        return f"{self.service}.{part}_resources" if part != deployment else None

    @property
    def selector(self) -> str:
        return label_selector(selector_labels(self.service, self.instance))


def config_hash(*parts) -> str:
    """A short digest of a pod's inputs: a change of any of them rolls the pods."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def access_shortfalls(
    kubectl: Kubectl, docs: list[dict], verbs: tuple[str, ...] = ("get", "create", "patch")
) -> list[str]:
    """What the plan needs that the credentials may not do.

    The SelfSubjectRulesReview of detection answers without a request; a denial it finds is
    confirmed by a SelfSubjectAccessReview (`kubectl auth can-i`), since the rules review
    omits what webhook authorizers allow.
    """
    target = kubectl.target
    suspects = []
    for resource in kinds(docs):
        plural, _, group = resource.partition(".")
        suspects += [(verb, resource) for verb in verbs if target.may(verb, plural, group) is False]
    if not suspects:
        return []

    def denied(verb: str, resource: str) -> list[str]:
        answer = kubectl.run("auth", "can-i", verb, resource, timeout=20, check=False)
        return [] if answer.stdout.strip() == "yes" else [f"{verb} {resource}"]

    missing = preflight.gather([partial(denied, verb, resource) for verb, resource in suspects])
    if not missing:
        return []
    return [
        f"the credentials may not {', '.join(missing)} in namespace {target.namespace}: "
        "ask for an edit role there or pick another namespace (does it exist?)"
    ]


def check_access(kubectl: Kubectl, docs: list[dict]) -> None:
    """Refuse before the first write when the credentials lack a permission the docs need."""
    preflight.refuse(access_shortfalls(kubectl, docs))


def quota_shortfalls(
    kubectl: Kubectl, docs: list[dict], live: list[dict] | None = None, what: str = "the plan"
) -> list[str]:
    """Whether the namespace's quotas can take what docs add, net of what they replace (live:
    the objects replaced, read from the API unless given); `what` names the change in the refusal."""
    result = kubectl.run("get", "resourcequotas", "-o", "json", timeout=30, check=False)
    if not result.ok:
        kubectl.out(
            f"quota: not checked ({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no answer'})"
        )
        return []
    quotas = json.loads(result.stdout or "{}").get("items", [])
    if not quotas:
        return []
    try:
        quota.check(quotas, docs, kubectl.live(docs) if live is None else live, kubectl.target.namespace, what)
    except PlaybookError as error:
        return [str(error)]
    return []


def run_preflight(kubectl: Kubectl, plans: list[Plan]) -> list[Plan]:
    """Every check before the first write, all shortfalls in one refusal; returns the plans that change something.

    Access is read from detection's answers; the tool check and the server-side diffs run
    concurrently. Then, for the plans that change something, the quota and the plans' own
    checks (a bucket that must answer) run together: a no-op `up` skips them.
    """
    shortfalls = access_shortfalls(kubectl, [doc for plan in plans for doc in plan.docs])
    changed: dict[int, bool] = {}

    def diff(plan: Plan) -> list[str]:
        changed[id(plan)] = kubectl.differs(plan.docs)
        return []

    checks: list[preflight.Check] = [partial(preflight.kubectl_shortfalls, kubectl.binary, kubectl.command())]
    if not kubectl.dry_run and not shortfalls:
        checks += [partial(diff, plan) for plan in plans]
    shortfalls += preflight.gather(checks)
    diffed = len(changed) == len(plans)
    changing = [plan for plan in plans if changed.get(id(plan))] if diffed else plans
    later = [check for plan in changing for check in plan.checks]
    if diffed and changing:
        later.append(partial(quota_shortfalls, kubectl, [doc for plan in changing for doc in plan.docs]))
    preflight.refuse(shortfalls + preflight.gather(later))
    return changing


def apply_plans(kubectl: Kubectl, plans: list[Plan]) -> None:
    """Preflight, then apply every plan and wait for it, all plans at once: wall time ~ the slowest."""
    for plan in plans:
        for note in plan.notes:
            kubectl.out(f"{plan.instance}: {note}")
    changing = run_preflight(kubectl, plans)
    if kubectl.dry_run:
        for plan in plans:
            kubectl.apply_now(plan.docs)
        return
    one_wait = sum(len(plan.deployments) + len(plan.statefulsets) for plan in plans) == 1

    def apply_and_wait(plan: Plan) -> None:
        changes = any(plan is other for other in changing)
        if changes:
            for step in plan.prepare:
                step()
            kubectl.apply_now(plan.docs)
        kubectl.out(f"{plan.instance}: {'applied changes' if changes else 'no change'}")
        workloads = [("Deployment", name) for name in plan.deployments]
        workloads += [("StatefulSet", name) for name in plan.statefulsets]
        run_all(
            {
                f"{plan.instance}/{name}": partial(
                    kubectl.wait_for_rollout,
                    kind,
                    name,
                    plan.selector,
                    plan.timeout,
                    plan.instance if one_wait else f"{plan.instance}/{name}",
                    plan.resources_setting(name),
                )
                for kind, name in workloads
            }
        )

    run_all({plan.instance: partial(apply_and_wait, plan) for plan in plans})


def tear_down(
    kubectl: Kubectl,
    service: str,
    instance: str | None,
    purge: bool,
    keep: tuple[str, ...] = ("persistentvolumeclaim/",),
) -> list[str]:
    """Delete what carries the service's labels; what holds data (keep: name prefixes) stays unless purge."""
    # A kind the credentials may not list (a platform that forbids NetworkPolicies) holds nothing of ours.
    listable = [
        k for k in kinds(list(load_templates(service))) if kubectl.target.may("list", *k.split(".", 1)) is not False
    ]
    found = kubectl.names(listable, managed_selector(service, instance))
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
    instances = {item["metadata"]["labels"].get("app.kubernetes.io/instance") for item in state.get("items", [])}
    return sorted(i for i in instances if i)
