"""The services the playbooks run: each declares itself once, and every root task iterates over them.

A service is one module that exposes `SERVICE_SPEC = Service(...)`: its name, its tasks, its defaults,
and one part per backend it supports (`cluster`: namespace and vCluster modes; `local`:
processes on this machine). The built-in services are listed in BUILTIN; a fifth one is added
by one line there, or from outside the package by naming its module in DATALAB_PLAYBOOKS_SERVICES.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from playbooks.errors import PlaybookError

if TYPE_CHECKING:
    from invoke import Collection

    from playbooks.parts import ClusterPart, LocalPart

# In start order: `down` goes the other way.
BUILTIN = (
    "playbooks.services.storage",
    "playbooks.services.postgres",
    "playbooks.services.mlflow",
    "playbooks.services.dask",
    "playbooks.services.gateway",
)
# Comma-separated modules, each with a SERVICE_SPEC: services from outside the package.
PLUGINS_ENV = "DATALAB_PLAYBOOKS_SERVICES"
ALL_MODES = ("namespace", "vcluster", "local")


@dataclass(frozen=True)
class RootOption:
    """A flag of the root `up` that goes to one service's `up` (e.g. --bucket to MLflow)."""

    flag: str  # the root task's parameter name
    help: str
    option: str  # the service's `up` option it sets
    validate: Callable[[Any], Any] | None = None  # offline check: bad input stops every service before any starts


@dataclass(frozen=True)
class Service:
    name: str
    collection: Collection
    defaults: dict
    cluster: ClusterPart | None = None
    local: LocalPart | None = None
    # Modes in which the root `up` starts it when --only is not given; () : only when named.
    by_default: tuple[str, ...] = ALL_MODES
    # The root `down` stops it when --only is not given (a store holding others' data does not).
    down_by_default: bool = True
    # Cluster modes it can run in, and why not in the others (mode -> the refusal's one line).
    cluster_modes: tuple[str, ...] = ("namespace", "vcluster")
    refusals: dict[str, str] = field(default_factory=dict)
    root_options: tuple[RootOption, ...] = field(default=())
    # Template name -> folder, for a service from outside the package (built-ins use manifests/<name>).
    manifests: dict[str, str] = field(default_factory=dict)

    def supports(self, mode: str) -> bool:
        if mode == "local":
            return self.local is not None
        return self.cluster is not None and mode in self.cluster_modes

    def refuse(self, mode: str) -> PlaybookError:
        if mode in self.refusals:
            return PlaybookError(self.refusals[mode])
        if mode == "local":
            return PlaybookError(
                f"{self.name} needs a Kubernetes cluster and local mode has none: point KUBECONFIG at a cluster"
            )
        return PlaybookError(f"{self.name} does not run in {mode} mode: use --mode {' or '.join(self.cluster_modes)}")


def plugin_modules(env=None) -> list[str]:
    value = (os.environ if env is None else env).get(PLUGINS_ENV, "")
    return [name.strip() for name in value.split(",") if name.strip()]


def services() -> list[Service]:
    """Every service, built-in first, in start order."""
    found = [importlib.import_module(module).SERVICE_SPEC for module in BUILTIN]
    for module in plugin_modules():
        try:
            found.append(importlib.import_module(module).SERVICE_SPEC)
        except (ImportError, AttributeError) as error:
            raise PlaybookError(
                f"{PLUGINS_ENV} names {module}, which has no SERVICE_SPEC ({error}); fix the module or unset the variable"
            ) from None
    return found


def names() -> list[str]:
    return [service.name for service in services()]


def get(name: str) -> Service:
    for service in services():
        if service.name == name:
            return service
    raise PlaybookError(f"unknown service {name!r}: choose from {', '.join(names())}")


def parse_only(only: str | None) -> list[str] | None:
    """--only as names, checked offline; None when not given."""
    if only is None:
        return None
    chosen = [name.strip() for name in str(only).split(",") if name.strip()]
    known = names()
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise PlaybookError(f"unknown service {', '.join(unknown) or repr(only)}: choose from {', '.join(known)}")
    return chosen


def choose(only: str | None, mode: str, action: str = "up") -> list[Service]:
    """The services a root task acts on in this mode: --only (each must run here), else the defaults."""
    chosen = parse_only(only)
    if chosen is None:
        if action == "up":
            return [s for s in services() if mode in s.by_default and s.supports(mode)]
        return [s for s in services() if s.down_by_default and s.supports(mode)]
    picked = [s for s in services() if s.name in chosen]
    for service in picked:
        if not service.supports(mode):
            raise PlaybookError(f"{service.refuse(mode)}, or leave {service.name} out of --only")
    return picked


def root_options() -> list[RootOption]:
    return [option for service in services() for option in service.root_options]
