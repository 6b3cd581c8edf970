"""Where am I: which cluster, which namespace, which mode, and what the credentials may do.

Offline steps (kubeconfig, environment) are plain functions over their inputs, so they
can be tested on realistic files; the API is asked at most three questions, by three
kubectl calls run at once (`--raw`: no discovery): a SelfSubjectAccessReview for creating
CRDs, a SelfSubjectRulesReview in the namespace, and a one-item list of vCluster fake
nodes (Forbidden there is evidence, not an error).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from playbooks.errors import PlaybookError
from playbooks.kubeconfig import KubeSource, NoKubernetes, locate_kubeconfig
from playbooks.probe import FAKE_NODE_LABEL, Probes, probe

MODES = ("namespace", "vcluster", "local")
CLUSTER_MODES = ("namespace", "vcluster")
VCLUSTER_CONTEXT = "my-vcluster"
VCLUSTER_KUBECONFIG = "/opt/kubeconfig/config"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# What the playbooks need in the namespace: (verb, resource, API group).
NAMESPACED_NEEDS = (
    ("create", "deployments", "apps"),
    ("patch", "deployments", "apps"),
    ("delete", "deployments", "apps"),
    ("create", "statefulsets", "apps"),
    ("patch", "statefulsets", "apps"),
    ("delete", "statefulsets", "apps"),
    ("create", "services", ""),
    ("create", "secrets", ""),
    ("create", "configmaps", ""),
    ("create", "persistentvolumeclaims", ""),
    ("create", "jobs", "batch"),
    ("list", "pods", ""),
    ("get", "pods/log", ""),
    ("create", "pods/portforward", ""),
    # Only with security.network_policy; `down` looks for them only where they may be listed.
    ("create", "networkpolicies", "networking.k8s.io"),
    ("list", "networkpolicies", "networking.k8s.io"),
)


@dataclass(frozen=True)
class AccessCheck:
    verb: str
    resource: str
    group: str
    namespace: str | None
    allowed: bool

    def describe(self) -> str:
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f" in {self.namespace}" if self.namespace else " (cluster-wide)"
        return f"{'yes' if self.allowed else 'no ':3} {self.verb} {what}{where}"


@dataclass(frozen=True)
class Target:
    mode: str
    namespace: str
    namespace_source: str
    source: KubeSource
    evidence: tuple[str, ...] = ()
    checks: tuple[AccessCheck, ...] = field(default=(), compare=False)

    @property
    def context(self) -> str | None:
        return self.source.context

    @property
    def server(self) -> str:
        return self.source.server

    def kubectl_flags(self) -> list[str]:
        """Flags that pin kubectl to this target, whatever the caller's environment.

        A list of kubeconfig files is no flag: kubectl gets it as KUBECONFIG (child_env).
        """
        flags = self.source.kubeconfig_flags()
        if self.source.context:
            flags += ["--context", self.source.context]
        return [*flags, "--namespace", self.namespace]

    def child_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment for kubectl or helm run against this target (see KubeSource.child_env)."""
        return self.source.child_env(base)

    def may(self, verb: str, resource: str, group: str = "") -> bool | None:
        for check in self.checks:
            if (check.verb, check.resource, check.group) == (verb, resource, group):
                return check.allowed
        return None

    @property
    def local(self) -> bool:
        return self.mode == "local"

    def summary(self) -> str:
        if self.local:
            return "local mode: services run as processes on this machine"
        return f"{self.mode} mode, namespace {self.namespace}, API {self.server}"


# ---------------------------------------------------------------- offline steps


def validate_namespace(name: str) -> str:
    if len(name) > 63 or not DNS_LABEL.match(name):
        raise PlaybookError(
            f"invalid namespace {name!r}: use at most 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def choose_namespace(flag: str | None, env: Mapping[str, str], source: KubeSource) -> tuple[str, str]:
    """--namespace, then SESSION_NAMESPACE, then the context's, then in-cluster, then default."""
    for value, origin in (
        (flag, "--namespace"),
        (env.get("SESSION_NAMESPACE"), "SESSION_NAMESPACE"),
        (source.context_namespace, f"context {source.context}"),
        (source.in_cluster_namespace, "service account"),
    ):
        if value:
            return validate_namespace(value), origin
    return "default", "default"


def decide_mode(
    probes: Probes, source: KubeSource, env: Mapping[str, str], override: str | None = None
) -> tuple[str, list[str]]:
    """The mode and the evidence for it, most decisive signal first."""
    evidence = []
    if probes.can_create_crds:
        evidence.append("may create CustomResourceDefinitions (cluster-scoped writes allowed)")
    else:
        evidence.append("may not create CustomResourceDefinitions (no cluster-scoped writes)")
    vcluster_shape = []
    if env.get("KUBECONFIG") == VCLUSTER_KUBECONFIG:
        vcluster_shape.append(f"KUBECONFIG={VCLUSTER_KUBECONFIG}")
    if source.context == VCLUSTER_CONTEXT:
        vcluster_shape.append(f"context {VCLUSTER_CONTEXT}")
    host = urlparse(source.server).hostname or ""
    # <name>-vc.svc.<domain>, or <name>-vc.<namespace>.svc.<domain>
    if re.search(r"-vc(\.[a-z0-9-]+)?\.svc(\.|$)", host):
        vcluster_shape.append(f"API server host {host} is a vCluster service (-vc...svc)")
    if vcluster_shape:
        evidence.append("vCluster kubeconfig shape: " + ", ".join(vcluster_shape))
    if probes.fake_nodes is None:
        evidence.append("listing nodes is forbidden (namespace-scoped credentials)")
    elif probes.fake_nodes:
        evidence.append(f"nodes carry {FAKE_NODE_LABEL}=true (virtual nodes)")
    else:
        evidence.append(f"no node carries {FAKE_NODE_LABEL}=true")

    detected = "vcluster" if probes.can_create_crds else "namespace"
    if probes.can_create_crds and not vcluster_shape and not probes.fake_nodes:
        evidence.append(
            "cluster-admin rights without vCluster signals: cluster-scoped installs allowed, treated as vcluster mode"
        )
    if override:
        if override not in CLUSTER_MODES:
            raise PlaybookError(f"unknown mode {override!r}: use --mode namespace or --mode vcluster")
        if override == "vcluster" and not probes.can_create_crds:
            raise PlaybookError(
                "--mode vcluster needs rights to create CRDs, which these credentials lack: "
                "use the vCluster kubeconfig or --mode namespace"
            )
        if override != detected:
            evidence.insert(0, f"--mode {override} overrides the detected {detected} mode")
        return override, evidence
    return detected, evidence


def rule_allows(rules: tuple[dict, ...], verb: str, resource: str, group: str) -> bool:
    """Evaluate SelfSubjectRulesReview resource rules, as RBAC does."""

    def covers(values, wanted):
        return "*" in (values or []) or wanted in (values or [])

    return any(
        covers(rule.get("verbs"), verb)
        and covers(rule.get("apiGroups"), group)
        and covers(rule.get("resources"), resource)
        for rule in rules
    )


def access_checks(probes: Probes, namespace: str) -> tuple[AccessCheck, ...]:
    checks = [AccessCheck("create", "customresourcedefinitions", "apiextensions.k8s.io", None, probes.can_create_crds)]
    checks += [
        AccessCheck(verb, resource, group, namespace, rule_allows(probes.rules, verb, resource, group))
        for verb, resource, group in NAMESPACED_NEEDS
    ]
    return tuple(checks)


# ---------------------------------------------------------------- the API


# ---------------------------------------------------------------- detection


def detect(
    namespace: str | None = None,
    mode: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    timeout: float = 10,
    env: Mapping[str, str] | None = None,
    kubectl: str = "kubectl",
) -> Target:
    """Where this run acts: --mode local, no Kubernetes configuration at all, or what the API answers.

    The caller keeps the answer for the rest of its chain (playbooks.backends.resolve_target).
    """
    env = os.environ if env is None else env
    if mode is not None and mode not in MODES:
        raise PlaybookError(f"unknown mode {mode!r}: use --mode namespace, vcluster or local")
    if mode == "local":
        target = local_target("--mode local")
    else:
        try:
            source = locate_kubeconfig(env, explicit=kubeconfig, context=context)
        except NoKubernetes as missing:
            if mode is not None:  # never a silent fall-back to local mode
                raise PlaybookError(f"--mode {mode} needs a Kubernetes cluster, but {missing}") from None
            target = local_target("no KUBECONFIG, no ~/.kube/config and no service account")
        else:
            target = _cluster_target(source, namespace, mode, timeout, env, kubectl)
    return target


def local_target(why: str) -> Target:
    source = KubeSource(kubeconfig=None, context=None, server="(none)", context_namespace=None)
    return Target(mode="local", namespace="local", namespace_source="local mode", source=source, evidence=(why,))


def is_local(mode: str | None, kubeconfig: str | None = None, context: str | None = None, env=None) -> bool:
    """Offline: will this run act locally? (--mode local, or no Kubernetes configuration at all.)"""
    if mode == "local":
        return True
    if mode is not None:
        return False
    try:
        locate_kubeconfig(os.environ if env is None else env, explicit=kubeconfig, context=context)
    except NoKubernetes:
        return True
    except PlaybookError:
        return False
    return False


def _cluster_target(source: KubeSource, namespace, mode, timeout, env, kubectl) -> Target:
    chosen, origin = choose_namespace(namespace, env, source)
    probes = probe(source, chosen, timeout, kubectl, env)
    decided, evidence = decide_mode(probes, source, env, mode)
    return Target(
        mode=decided,
        namespace=chosen,
        namespace_source=origin,
        source=source,
        evidence=tuple(evidence),
        checks=access_checks(probes, chosen),
    )


def local_from_config(c, mode: str | None = None) -> bool:
    cfg = c.config.target
    return is_local(mode or cfg.mode, cfg.kubeconfig, cfg.context)
