"""Shared helpers to render a service for a target and validate it offline."""

from __future__ import annotations

import kubernetes_validate
from invoke import Config

from playbooks.defaults import DEFAULTS
from playbooks.kubeconfig import KubeSource
from playbooks.target import Target

OLDEST_KUBERNETES = "1.30"
NEWEST_KUBERNETES = kubernetes_validate.latest_version()
VERSIONS = [OLDEST_KUBERNETES, NEWEST_KUBERNETES]


def config(overrides: dict | None = None) -> Config:
    """The defaults of the collection (those of every registered service included), then overrides."""
    from playbooks import registry

    cfg = Config(defaults={**DEFAULTS, **{service.name: service.defaults for service in registry.services()}})
    if overrides:
        cfg.update(overrides)  # behaves like a project file: merged over the defaults
    return cfg


class FakeContext:
    """Just enough of an invoke Context for plan builders: a config."""

    def __init__(self, cfg: Config):
        self.config = cfg


def target(mode: str, namespace: str = "ws-frank-s1") -> Target:
    source = KubeSource(kubeconfig="/dev/null", context="ctx", server="https://127.0.0.1:6443", context_namespace=None)
    return Target(mode=mode, namespace=namespace, namespace_source="test", source=source)


def validate_all(docs: list[dict]) -> None:
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
