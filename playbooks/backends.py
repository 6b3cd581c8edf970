"""One backend per mode, chosen once per task and handed to the services' parts.

ClusterBackend (namespace and vCluster modes) acts through kubectl and helm; LocalBackend runs
processes on this machine. What differs between modes lives here and in the parts, never in a
task: a task builds its backend with `backend_for` and calls the service's part for that mode.
The target is detected once per `invoke a b c` chain (the Chain rides on the chain's Config).
"""

from __future__ import annotations

import os
import shlex
from functools import cached_property, partial
from typing import TYPE_CHECKING

from playbooks.errors import PlaybookError
from playbooks.kubeconfig import SERVICE_ACCOUNT_DIR_ENV
from playbooks.target import MODES, Target, detect, local_from_config, validate_namespace
from playbooks.together import run_all

if TYPE_CHECKING:
    from playbooks.helm import Helm
    from playbooks.kube import Kubectl
    from playbooks.registry import Service
    from playbooks.report import Report
    from playbooks.shellenv import EnvVar

CHAIN_ATTRIBUTE = "_playbooks_chain"


class Chain:
    """What one `invoke a b c` run has learnt: the targets it detected and the one it used last."""

    def __init__(self) -> None:
        self.targets: dict[tuple, Target] = {}
        self.last: Target | None = None

    # invoke copies config values when it merges its layers: the chain must stay one object.
    def __copy__(self) -> Chain:
        return self

    def __deepcopy__(self, memo) -> Chain:
        return self


def chain(c) -> Chain:
    found = getattr(c.config, CHAIN_ATTRIBUTE, None)
    if found is None:
        found = Chain()
        object.__setattr__(c.config, CHAIN_ATTRIBUTE, found)
    return found


def resolve_target(c, namespace: str | None = None, mode: str | None = None) -> Target:
    """The task's flags, else the target an earlier task of the chain used, else config and detection."""
    state = chain(c)
    if namespace is None and mode is None and state.last is not None:
        return state.last
    cfg = c.config.target
    inputs = dict(
        namespace=namespace or cfg.namespace,
        mode=mode or cfg.mode,
        kubeconfig=cfg.kubeconfig,
        context=cfg.context,
        timeout=cfg.api_timeout,
        kubectl=c.config.tools.kubectl,
    )
    key = (*inputs.values(), *(os.environ.get(k) for k in ("KUBECONFIG", "SESSION_NAMESPACE", SERVICE_ACCOUNT_DIR_ENV)))
    target = state.targets.get(key)
    if target is None:
        target = detect(**inputs)
        state.targets[key] = target
        where = f"evidence: {target.evidence[0]}" if target.local else f"namespace from {target.namespace_source}"
        print(f"target: {target.summary()} ({where})", flush=True)
    state.last = target
    return target


def backend_for(c, namespace: str | None = None, mode: str | None = None, dry_run: bool = False) -> Backend:
    """The backend of the mode the flags, config or detection choose; nothing is asked of an API yet."""
    if mode is not None and mode not in MODES:
        raise PlaybookError(f"unknown mode {mode!r}: use --mode namespace, vcluster or local")
    if namespace:
        validate_namespace(namespace)
    if local_from_config(c, mode):
        return LocalBackend(c, resolve_target(c, namespace, mode), dry_run)
    return ClusterBackend(c, namespace, mode, dry_run)


class Backend:
    """What every mode offers the root tasks; the parts do the per-service work."""

    mode: str
    status_header: tuple[str, ...]

    def __init__(self, c, dry_run: bool = False) -> None:
        self.c = c
        self.dry_run = dry_run

    def part(self, service: Service, installing: bool = False):
        """The service's part for this backend; refused where it cannot run (installing: for `up`)."""
        raise NotImplementedError

    def offline_part(self, service: Service):
        """The part whose offline checks apply, known before any API call."""
        return self.part(service)

    def where(self) -> str:
        raise NotImplementedError

    def describe(self) -> list[str]:
        raise NotImplementedError

    def up(self, services: list[Service], options: dict[str, dict]) -> None:
        raise NotImplementedError

    def require_network_policy(self) -> None:
        """--network-policy: NetworkPolicies for the services that have them."""
        raise NotImplementedError

    def down(self, services: list[Service], purge: bool, options: dict[str, dict] | None = None) -> None:
        options = options or {}
        for service in services:
            self.offline_part(service).validate_down(self.c, **options.get(service.name, {}))
        parts = [(service, self.part(service)) for service in services]
        for service, part in reversed(parts):
            part.down(self, purge, **options.get(service.name, {}))

    def smoke_reports(self, services: list[Service], options: dict[str, dict] | None = None) -> list[Report]:
        options = options or {}
        reports = []
        for service in services:
            reports += self.part(service).smoke_reports(self, **options.get(service.name, {}))
        return reports

    def status_rows(self, services: list[Service]) -> list[tuple[str, ...]]:
        rows = []
        for service in services:
            if service.supports(self.mode):
                rows += self.part(service).rows(self)
        return rows

    def status_footer(self) -> list[str]:
        return []

    def forwards(self) -> list[dict]:
        """`invoke forward`'s forwards, each with its state (cluster modes)."""
        return []

    @property
    def reach(self) -> str:
        """Where the caller reaches the services from: shellenv.LOCAL, IN_CLUSTER or FORWARDED."""
        raise NotImplementedError

    def fresh(self) -> Backend:
        """A backend for the same target that has read nothing yet (status after a change)."""
        return self

    def facts(self) -> dict:
        """`target --json`: where the playbooks act (docs/json.md)."""
        raise NotImplementedError

    def env_vars(self, services: list[Service]) -> dict[str, list[EnvVar]]:
        """Each service's shell variables (empty: it does not run here)."""
        return {service.name: self.part(service).env(self) for service in services if service.supports(self.mode)}

    def refuse_failed(self) -> None:
        """After the status table: exit 1 when a service the table shows has failed."""


class LocalBackend(Backend):
    """Services as processes on this machine, supervised through their state folder."""

    mode = "local"
    status_header = ("service", "process", "state", "address")
    reach = "local"

    def __init__(self, c, target: Target, dry_run: bool = False) -> None:
        super().__init__(c, dry_run)
        self.target = target

    def refuse_dry_run(self, what: str) -> None:
        """Local mode acts at once, so a --dry-run there would do for real what it should only show."""
        if self.dry_run:
            raise PlaybookError(f"--dry-run is for the cluster modes; in local mode {what} (leave --dry-run out)")

    def part(self, service: Service, installing: bool = False):
        if service.local is None:
            raise service.refuse("local")
        return service.local

    def where(self) -> str:
        return "on this machine"

    def describe(self) -> list[str]:
        from playbooks.local import state_root

        return [
            f"mode:       {self.mode}",
            f"state:      {state_root(self.c)}",
            f"evidence:   {self.target.evidence[0]}",
        ]

    def facts(self) -> dict:
        from playbooks.local import state_root

        return {"mode": self.mode, "state_dir": str(state_root(self.c)), "evidence": list(self.target.evidence)}

    def up(self, services: list[Service], options: dict[str, dict]) -> None:
        self.refuse_dry_run("`up` only starts processes")
        parts = [(service, self.part(service)) for service in services]
        # The services start side by side: a bad input of one must stop all before any starts.
        for service, part in parts:
            part.validate(self.c, **options.get(service.name, {}))
        run_all({service.name: partial(part.up, self, **options.get(service.name, {})) for service, part in parts})

    def require_network_policy(self) -> None:
        raise PlaybookError("--network-policy is for the cluster modes; local mode's servers listen on 127.0.0.1 only")

    def down(self, services: list[Service], purge: bool, options: dict[str, dict] | None = None) -> None:
        from playbooks.local import report_left_running

        self.refuse_dry_run("`down` stops processes at once")
        super().down(services, purge, options)
        report_left_running(self.c, [service.name for service in services])

    def status_footer(self) -> list[str]:
        from playbooks.local import crash_report

        return crash_report(self.c)

    def refuse_failed(self) -> None:
        from playbooks.local import refuse_crashed

        refuse_crashed(self.c)


class ClusterBackend(Backend):
    """Namespace and vCluster modes: kubectl and helm against the detected API server, in one namespace."""

    status_header = ("service", "instance", "state", "address (in-cluster)")

    def __init__(self, c, namespace: str | None, mode: str | None, dry_run: bool = False) -> None:
        super().__init__(c, dry_run)
        self._namespace = namespace
        self._mode = mode

    @classmethod
    def on(cls, c, target: Target, dry_run: bool = False) -> ClusterBackend:
        """A backend for a target already known (benchmarks, tests): no detection."""
        backend = cls(c, target.namespace, target.mode, dry_run)
        backend.__dict__["target"] = target
        return backend

    @cached_property
    def target(self) -> Target:
        """Detected on first use, so offline checks of the inputs come before any API call."""
        return resolve_target(self.c, self._namespace, self._mode)

    @property
    def mode(self) -> str:
        return self.target.mode

    @property
    def namespace(self) -> str:
        return self.target.namespace

    @cached_property
    def kubectl(self) -> Kubectl:
        from playbooks.kube import Kubectl

        return Kubectl(
            self.target,
            binary=self.c.config.tools.kubectl,
            field_manager=self.c.config.tools.field_manager,
            dry_run=self.dry_run,
            out=lambda line: print(line, flush=True),
        )

    @cached_property
    def helm(self) -> Helm:
        from playbooks.helm import Helm

        return Helm(
            self.target, binary=self.c.config.tools.helm, dry_run=self.dry_run, out=lambda line: print(line, flush=True)
        )

    def kubectl_command(self, *args: str) -> str:
        """A kubectl command line for the user to run against this target."""
        return shlex.join(["kubectl", *self.target.kubectl_flags(), *args])

    def part(self, service: Service, installing: bool = False):
        # Reading, checking and removing work in any cluster mode (they find nothing where
        # nothing was installed); installing only where the service can run.
        if service.cluster is None or (installing and not service.supports(self.mode)):
            raise service.refuse(self.mode)
        return service.cluster

    def offline_part(self, service: Service):
        if service.cluster is None:
            raise service.refuse(self._mode or "namespace")
        return service.cluster

    def where(self) -> str:
        return f"in namespace {self.namespace}"

    def describe(self) -> list[str]:
        found = self.target
        lines = [
            f"mode:       {found.mode}",
            f"namespace:  {found.namespace} (from {found.namespace_source})",
            f"context:    {found.context or '(in-cluster service account)'}",
            f"api server: {found.server}",
        ]
        if found.source.service_account:
            lines.append(
                f"kubeconfig: {found.source.kubeconfig} "
                f"(written for the in-cluster service account in {found.source.service_account})"
            )
        else:
            lines.append(f"kubeconfig: {found.source.kubeconfig}")
        lines.append("evidence:")
        lines += [f"  - {line}" for line in found.evidence]
        lines.append("access (SelfSubjectAccessReview / SelfSubjectRulesReview):")
        lines += [f"  {check.describe()}" for check in found.checks]
        return lines

    def fresh(self) -> ClusterBackend:
        return ClusterBackend.on(self.c, self.target, self.dry_run)

    def facts(self) -> dict:
        found = self.target
        return {
            "mode": found.mode,
            "namespace": found.namespace,
            "namespace_source": found.namespace_source,
            "context": found.context,
            "server": found.server,
            "kubeconfig": found.source.kubeconfig,
            "service_account": found.source.service_account,
            "evidence": list(found.evidence),
            "access": [
                {
                    "verb": check.verb,
                    "resource": check.resource,
                    "group": check.group,
                    "namespace": check.namespace,
                    "allowed": check.allowed,
                }
                for check in found.checks
            ],
        }

    def up(self, services: list[Service], options: dict[str, dict]) -> None:
        from playbooks.deploy import apply_plans

        # Validate and plan everything before the first write.
        for service in services:
            self.offline_part(service).validate(self.c, **options.get(service.name, {}))
        parts = [(service, self.part(service, installing=True)) for service in services]
        plans, jobs = [], {}
        for service, part in parts:
            plan = part.plan(self, **options.get(service.name, {}))
            if plan is None:
                jobs[service.name] = partial(part.ensure, self, **options.get(service.name, {}))
            else:
                plans.append((part, plan))
        if plans:
            jobs = {"kubernetes": partial(apply_plans, self.kubectl, [plan for _, plan in plans]), **jobs}
        run_all(jobs)
        if not self.dry_run:
            for part, plan in plans:
                part.access(self, plan.instance)

    def require_network_policy(self) -> None:
        self.c.config.security.network_policy = True

    def down(self, services: list[Service], purge: bool, options: dict[str, dict] | None = None) -> None:
        super().down(services, purge, options)
        if not self.dry_run:
            from playbooks import forwards

            named = [(options or {}).get(s.name, {}).get("name") for s in services]
            forwards.forget(self, [s.name for s in services], named[0] if len(services) == 1 else None)

    def forwards(self) -> list[dict]:
        """`invoke forward`'s forwards here, each with its state (none when it does not run)."""
        from playbooks import forwards

        return forwards.current(self)[1]

    def status_footer(self) -> list[str]:
        from playbooks import forwards

        found = self.forwards()
        if not found:
            return []
        return ["", *forwards.table(found)]

    @property
    def reach(self) -> str:
        """From a pod in namespace mode, cluster DNS; from outside, or to a vCluster's services, a port-forward."""
        from playbooks.shellenv import FORWARDED, IN_CLUSTER, in_pod

        return IN_CLUSTER if self.mode == "namespace" and in_pod() else FORWARDED

    def managed_deployments(self) -> list[dict]:
        """The Deployments the playbooks made in the namespace, read once per status."""
        if "_deployments" not in self.__dict__:
            from playbooks.render import managed_selector

            self.__dict__["_deployments"] = self.kubectl.get_json("deployments.apps", managed_selector()).get(
                "items", []
            )
        return self.__dict__["_deployments"]
