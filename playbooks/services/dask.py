"""Dask: a scheduler (with its dashboard) and a Deployment of workers sized to their limits.

Local mode: the same tasks run `dask scheduler` and `dask worker` processes (dask_local).
"""

from __future__ import annotations

import copy
import re
import time
from functools import partial
from pathlib import Path

from invoke import Collection

from playbooks import preflight, security
from playbooks.backends import ClusterBackend, LocalBackend, backend_for
from playbooks.dask_sizing import MAX_WORKERS, worker_count, worker_resources, worker_threads
from playbooks.dask_sizing import seconds as _seconds
from playbooks.defaults import DEFAULTS
from playbooks.deploy import Plan, access_shortfalls, deployed_instances, quota_shortfalls, tear_down
from playbooks.endpoint import check_service, in_cluster_host
from playbooks.errors import PlaybookError, task
from playbooks.forwards import Want, forwarded
from playbooks.jobs import run_job
from playbooks.kube import Kubectl
from playbooks.parts import ClusterPart, LocalPart
from playbooks.procs import tcp_ok
from playbooks.quantity import check_resources, cpu_cores, format_cpu, format_memory, memory_bytes
from playbooks.registry import RootOption, Service
from playbooks.render import (
    kinds,
    label_selector,
    load_templates,
    managed_selector,
    render,
    selector_labels,
)
from playbooks.report import Report, Step, require_passed
from playbooks.services import dask_local
from playbooks.shellenv import IN_CLUSTER, EnvVar, preferred
from playbooks.target import Target

SERVICE = "dask"
SMOKE = "dask-smoke"
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_HTTP_PORT = 8788
WORKER_PORT = 8789
NANNY_PORT = 8790
# Service names must start with a letter; "-scheduler" must still fit in 63 characters.
INSTANCE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,51}[a-z0-9])?$")

TARGET_HELP = {
    "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
    "mode": "namespace, vcluster or local; overrides detection.",
}
NAME_HELP = "Name of the cluster and prefix of its objects (default: dask)."


# ---------------------------------------------------------------- inputs


def _instance(c, name: str | None) -> str:
    name = name or c.config.dask.name
    if not INSTANCE_NAME.match(str(name)):
        raise PlaybookError(
            f"invalid Dask name {name!r}: use up to 53 lowercase letters, digits or '-', starting with a letter, e.g. 'dask'"
        )
    return str(name)


# ---------------------------------------------------------------- plan


def scheduler_address(name: str) -> str:
    return f"tcp://{name}-scheduler:{SCHEDULER_PORT}"


def scheduler_args() -> list[str]:
    return ["--port", str(SCHEDULER_PORT), "--dashboard-address", f":{DASHBOARD_PORT}"]


def worker_args(name: str, limits: dict) -> list[str]:
    return [
        scheduler_address(name),
        "--name", "$(POD_NAME)",
        # The pod IP, so the scheduler and other workers can reach this worker.
        "--host", "$(POD_IP)",
        "--worker-port", str(WORKER_PORT),
        "--nanny-port", str(NANNY_PORT),
        "--dashboard-address", f":{WORKER_HTTP_PORT}",
        "--nthreads", str(worker_threads(limits["cpu"])),
        # The container's limit: the nanny then pauses/restarts the worker before the OOM killer strikes.
        "--memory-limit", str(memory_bytes(limits["memory"], "worker memory limit")),
        "--local-directory", "/tmp",
    ]  # fmt: skip


def limits_summary(scheduler: dict, workers: dict, count: int) -> str:
    cpu = cpu_cores(scheduler["cpu"], "") + count * cpu_cores(workers["cpu"], "")
    memory = memory_bytes(scheduler["memory"], "") + count * memory_bytes(workers["memory"], "")
    return (
        f"limits: scheduler {scheduler['cpu']}/{scheduler['memory']} + {count} worker(s) x "
        f"{workers['cpu']}/{workers['memory']} = {format_cpu(cpu)} CPU, {format_memory(memory)}"
    )


def build_plan(c, target: Target, name: str, workers: int, resources: dict, workers_origin: str = "") -> Plan:
    cfg = c.config.dask
    scheduler_resources = check_resources(cfg.scheduler_resources, "dask.scheduler_resources")
    memory_bytes(cfg.worker_scratch_size, "dask.worker_scratch_size")
    params = {
        "image": cfg.image,
        "workers": workers,
        "scheduler_port": SCHEDULER_PORT,
        "dashboard_port": DASHBOARD_PORT,
        "worker_port": WORKER_PORT,
        "nanny_port": NANNY_PORT,
        "worker_http_port": WORKER_HTTP_PORT,
        "scheduler_args": scheduler_args(),
        "worker_args": worker_args(name, resources["limits"]),
        "scheduler_resources": scheduler_resources,
        "worker_resources": resources,
        "scratch_size": cfg.worker_scratch_size,
        **security.params(c),
    }
    notes = [f"image {cfg.image}", f"{workers} worker(s){workers_origin}"]
    if scheduler_resources.get("limits", {}).keys() >= {"cpu", "memory"}:
        notes.append(limits_summary(scheduler_resources["limits"], resources["limits"], workers))
    return Plan(
        service=SERVICE,
        instance=name,
        docs=render(SERVICE, name, target.namespace, params),
        deployments=[f"{name}-scheduler", f"{name}-worker"],
        timeout=float(cfg.rollout_timeout),
        notes=notes,
    )


def component_selector(name: str, component: str) -> str:
    return label_selector({**selector_labels(SERVICE, name), "app.kubernetes.io/component": component})


def _deployments(kubectl: Kubectl, name: str) -> dict[str, dict]:
    """The instance's Deployments by component (scheduler, worker)."""
    state = kubectl.get_json("deployments.apps", managed_selector(SERVICE, name))
    return {item["metadata"]["labels"].get("app.kubernetes.io/component"): item for item in state.get("items", [])}


def choose_workers(flag, running: int | None, configured) -> tuple[int, str]:
    """The worker count `up` applies, and where it came from.

    Without --workers, a running cluster keeps its count (set by `dask.scale` or an
    earlier `up`): re-running `up` at every session start must not undo a scale.
    """
    if flag is not None:
        return worker_count(flag), " (--workers)"
    if running is not None:
        return running, " (kept from the running cluster; pass --workers to change)"
    return worker_count(configured, "dask.workers"), " (dask.workers)"


# ---------------------------------------------------------------- parts


def image_release(image: str) -> str | None:
    """2026.8.0 from ghcr.io/dask/dask:2026.8.0-py3.11: the release a client should pin."""
    match = re.search(r":(\d{4}\.\d+\.\d+)", image)
    return match.group(1) if match else None


def _workers_flag(workers) -> int | None:
    return None if workers is None else worker_count(workers)


def _ready_line(deployment: dict | None) -> str:
    if deployment is None:
        return "missing"
    ready = deployment.get("status", {}).get("readyReplicas", 0)
    want = deployment.get("spec", {}).get("replicas", 1)
    return f"{'ready' if ready >= want else 'NOT ready'} ({ready}/{want})"


def hold_forward(port: int, every: float = 5.0) -> None:
    """Return only by Ctrl-C; fail when the port-forward stops listening (they do get closed)."""
    while True:
        time.sleep(every)
        if not tcp_ok("127.0.0.1", port, timeout=2):
            raise PlaybookError("the port-forward to the dashboard closed: run `invoke dask.dashboard` again")


def smoke_code() -> dict[str, str]:
    """The smoke check's source files, as the Job's ConfigMap ships them (package playbooks)."""
    package = Path(__file__).resolve().parent.parent
    files = {"__init__.py": ""}
    for module in ("dask_check.py", "report.py"):
        files[module] = (package / module).read_text()
    return files


def smoke_job_docs(c, target: Target, name: str, timeout: float) -> list[dict]:
    cfg = c.config.dask
    job_timeout = _seconds(cfg.smoke_job_timeout, "dask.smoke_job_timeout")
    if job_timeout <= timeout:
        raise PlaybookError(
            f"dask.smoke_job_timeout ({job_timeout:.0f}s) must exceed the check's timeout ({timeout:.0f}s), to leave time for the image pull"
        )
    params = {
        "image": cfg.image,
        "code": smoke_code(),
        "args": [scheduler_address(name), "--timeout", f"{timeout:g}", "--min-workers", "1", "--service", name],
        "deadline": int(job_timeout),
        "resources": check_resources(cfg.smoke_resources, "dask.smoke_resources"),
        **security.params(c),
    }
    return render(SMOKE, name, target.namespace, params)


def smoke_in_cluster(c, target: Target, kubectl: Kubectl, name: str, timeout: float) -> Report:
    """Run the check as a Job next to the cluster and return the report it printed."""
    from playbooks.dask_check import decode_report

    docs = smoke_job_docs(c, target, name, timeout)
    # Its pod must fit the quota beside the running services (net of a Job left by an interrupted run).
    preflight.require(
        [
            partial(access_shortfalls, kubectl, docs),
            partial(quota_shortfalls, kubectl, docs, what="dask.smoke --in-cluster"),
        ]
    )
    job_timeout = float(c.config.dask.smoke_job_timeout)
    selector = label_selector(selector_labels(SMOKE, name))
    start = time.monotonic()
    try:
        outcome = run_job(
            kubectl, docs, selector, job_timeout + 15, f"{name}/smoke-job", resources="dask.smoke_resources"
        )
    except PlaybookError as error:
        return Report(name, [Step("in-cluster job", False, time.monotonic() - start, str(error))])
    report = decode_report(outcome.logs)
    if report is None:
        detail = f"the Job printed no report: {outcome.detail}"
        return Report(name, [Step("in-cluster job", False, time.monotonic() - start, detail)])
    return report


class DaskOnCluster(ClusterPart):
    def validate(self, c, workers=None, worker_cpu=None, worker_memory=None, name=None, **_) -> None:
        _instance(c, name)
        _workers_flag(workers)
        worker_resources(c, worker_cpu, worker_memory)
        _seconds(c.config.dask.rollout_timeout, "dask.rollout_timeout")

    def plan(self, backend: ClusterBackend, workers=None, worker_cpu=None, worker_memory=None, name=None, **_) -> Plan:
        c = backend.c
        instance = _instance(c, name)
        resources = worker_resources(c, worker_cpu, worker_memory)
        running = None
        if workers is None:
            worker = _deployments(backend.kubectl, instance).get("worker")
            running = worker["spec"].get("replicas", 1) if worker else None
        count, origin = choose_workers(workers, running, c.config.dask.workers)
        return build_plan(c, backend.target, instance, count, resources, origin)

    def access(self, backend: ClusterBackend, instance: str) -> None:
        address = f"tcp://{in_cluster_host(f'{instance}-scheduler', backend.namespace)}:{SCHEDULER_PORT}"
        scheduler, dashboard = (forwarded(backend, want)[0] for want in self._wants(instance))
        print(f"{instance}: scheduler (in-cluster)  {address}")
        print(f"{instance}: from Python            Client({address!r})")
        print(f"{instance}: dashboard              invoke dask.dashboard --name {instance}")
        print(
            f"{instance}: from outside           invoke forward: tcp://127.0.0.1:{scheduler}, "
            f"http://127.0.0.1:{dashboard}/status"
        )
        release = image_release(backend.c.config.dask.image)
        if release:
            print(f"{instance}: client                 pin dask[distributed]=={release} (the image's release)")

    def address(self, backend: ClusterBackend, instance: str) -> str:
        return f"tcp://{instance}-scheduler.{backend.namespace}.svc:{SCHEDULER_PORT}"

    def env(self, backend: ClusterBackend) -> list[EnvVar]:
        instance = preferred(deployed_instances(backend.kubectl, SERVICE), backend.c.config.dask.name)
        if instance is None:
            return []
        if backend.reach == IN_CLUSTER:
            host = in_cluster_host(f"{instance}-scheduler", backend.namespace)
            return [
                EnvVar("DASK_SCHEDULER_ADDRESS", f"tcp://{host}:{SCHEDULER_PORT}"),
                EnvVar("DASK_DASHBOARD_URL", f"http://{host}:{DASHBOARD_PORT}/status"),
            ]
        want_scheduler, want_dashboard = self._wants(instance)
        scheduler, comment = forwarded(backend, want_scheduler)
        dashboard, _ = forwarded(backend, want_dashboard)
        return [
            EnvVar("DASK_SCHEDULER_ADDRESS", f"tcp://127.0.0.1:{scheduler}", comment=comment),
            EnvVar("DASK_DASHBOARD_URL", f"http://127.0.0.1:{dashboard}/status"),
        ]

    def _wants(self, instance: str) -> tuple[Want, Want]:
        resource = f"service/{instance}-scheduler"
        return (
            Want(SERVICE, instance, resource, SCHEDULER_PORT, "dask", "tcp", None, "scheduler"),
            Want(SERVICE, instance, resource, DASHBOARD_PORT, "dask_dashboard", "http", "/health", "dashboard"),
        )

    def forwards(self, backend: ClusterBackend) -> list[Want]:
        return [want for instance in deployed_instances(backend.kubectl, SERVICE) for want in self._wants(instance)]

    def down(self, backend: ClusterBackend, purge: bool, name=None, **_) -> None:
        instance = _instance(backend.c, name)
        kubectl = backend.kubectl
        tear_down(kubectl, SERVICE, instance, purge=False)
        leftovers = kubectl.names(kinds(list(load_templates(SMOKE))), managed_selector(SMOKE, instance))
        kubectl.delete(leftovers)
        if not backend.dry_run:
            for leftover in leftovers:
                kubectl.out(f"{instance}: deleted {leftover} (left by an interrupted smoke check)")

    def scale(self, backend: ClusterBackend, count: int, name: str) -> None:
        timeout = _seconds(backend.c.config.dask.rollout_timeout, "dask.rollout_timeout")
        kubectl = backend.kubectl
        worker = _deployments(kubectl, name).get("worker")
        if worker is None:
            raise PlaybookError(f"dask {name!r} is not deployed in namespace {backend.namespace}: run `invoke dask.up`")
        # The worker Deployment as it will be, against the live one: more workers must fit the quota.
        planned = copy.deepcopy(worker)
        planned["spec"]["replicas"] = count
        preflight.refuse(quota_shortfalls(kubectl, [planned], live=[worker], what=f"dask.scale {count}"))
        args = ("scale", f"deployment/{name}-worker", f"--replicas={count}")
        if backend.dry_run:
            kubectl.show(*args)
            return
        kubectl.run(*args)
        kubectl.wait_for_deployment(
            f"{name}-worker",
            component_selector(name, "worker"),
            timeout,
            f"{name}/workers",
            resources="dask.worker_resources",
        )

    def status(self, backend: ClusterBackend, name=None) -> None:
        kubectl = backend.kubectl
        for inst in self.instances(backend, name):
            found = _deployments(kubectl, inst)
            if not found:
                print(f"{inst}: not deployed in namespace {backend.namespace}")
                continue
            print(
                f"{inst}: scheduler {_ready_line(found.get('scheduler'))}, workers {_ready_line(found.get('worker'))}"
            )
            self.access(backend, inst)

    def dashboard(self, backend: ClusterBackend, name: str) -> None:
        kubectl = backend.kubectl
        if "scheduler" not in _deployments(kubectl, name):
            raise PlaybookError(f"dask {name!r} is not deployed in namespace {backend.namespace}: run `invoke dask.up`")
        with kubectl.port_forward(f"{name}-scheduler", DASHBOARD_PORT) as local:
            print(f"{name}: dashboard at http://127.0.0.1:{local}/status (Ctrl-C to stop)", flush=True)
            try:
                hold_forward(local)
            except KeyboardInterrupt:
                print(f"{name}: dashboard forward stopped")

    def smoke_reports(
        self, backend: ClusterBackend, name=None, in_cluster: bool = False, timeout=None, **_
    ) -> list[Report]:
        """Check every deployed Dask cluster (or the one named); from here, or from a Job in the cluster."""
        from playbooks.dask_check import run_check

        c, kubectl = backend.c, backend.kubectl
        seconds = _seconds(
            timeout if timeout is not None else c.config.dask.smoke_timeout,
            "--timeout" if timeout is not None else "dask.smoke_timeout",
        )
        instances = [name] if name else deployed_instances(kubectl, SERVICE)
        reports = []
        for inst in instances:
            found = _deployments(kubectl, inst)
            if "scheduler" not in found:
                raise PlaybookError(
                    f"dask {inst!r} is not deployed in namespace {backend.namespace}: run `invoke dask.up`"
                )
            if found.get("worker", {}).get("spec", {}).get("replicas", 1) == 0:
                print(f"{inst}: scaled to 0 workers, so the check cannot pass: run `invoke dask.scale 1`", flush=True)
            if in_cluster:
                print(f"{inst}: checking {scheduler_address(inst)} from a Job in the cluster", flush=True)
                report = smoke_in_cluster(c, backend.target, kubectl, inst, seconds)
            else:

                def check(endpoint, inst=inst) -> Report:
                    print(f"{inst}: checking {endpoint.url('tcp')} via {endpoint.how}", flush=True)
                    return run_check(endpoint.url("tcp"), seconds, min_workers=1, service=inst)

                report = check_service(kubectl, f"{inst}-scheduler", [SCHEDULER_PORT], check)
            print(report.render(), flush=True)
            reports.append(report)
        return reports

    def sample_docs(self, c, target: Target) -> list[dict]:
        name = _instance(c, None)
        docs = build_plan(c, target, name, 2, worker_resources(c)).docs
        return docs + smoke_job_docs(c, target, name, 60.0)


class DaskLocal(LocalPart):
    def validate(self, c, workers=None, name=None, **_) -> None:
        _instance(c, name)
        _workers_flag(workers)

    def up(self, backend: LocalBackend, workers=None, worker_cpu=None, worker_memory=None, port=None, **_) -> None:
        dask_local.up(backend.c, workers, worker_memory, port, worker_cpu)

    def down(self, backend: LocalBackend, purge: bool, **_) -> None:
        dask_local.down(backend.c)

    def scale(self, backend: LocalBackend, count: int, name: str) -> None:
        backend.refuse_dry_run("`dask.scale` starts or stops workers at once")
        dask_local.scale(backend.c, count)

    def status(self, backend: LocalBackend, **_) -> None:
        dask_local.status(backend.c)

    def env(self, backend: LocalBackend) -> list[EnvVar]:
        ports = dask_local.running_ports(backend.c)
        if ports is None:
            return []
        scheduler, dashboard = ports
        return [
            EnvVar("DASK_SCHEDULER_ADDRESS", dask_local.address(scheduler)),
            EnvVar("DASK_DASHBOARD_URL", f"http://127.0.0.1:{dashboard}/status"),
        ]

    def dashboard(self, backend: LocalBackend, name: str) -> None:
        url = dask_local.dashboard_url(backend.c)
        if url is None:
            raise PlaybookError("the local Dask scheduler is not running: run `invoke dask.up` first")
        print(f"dask: dashboard at {url}")

    def smoke_reports(self, backend: LocalBackend, in_cluster: bool = False, timeout=None, **_) -> list[Report]:
        if in_cluster:
            raise PlaybookError(
                "--in-cluster needs a Kubernetes cluster and local mode has none: leave --in-cluster out"
            )
        return dask_local.smoke_reports(backend.c, timeout)

    def logs(self, backend: LocalBackend, lines: int, **_) -> str:
        return dask_local.logs(backend.c, int(lines))


# ---------------------------------------------------------------- tasks


@task(
    help={
        "workers": f"Number of workers, 0 to {MAX_WORKERS} (default: keep the running count, else dask.workers = 2).",
        "worker-cpu": "CPU limit of each worker, e.g. 500m or 1; its thread count follows (rounded up).",
        "worker-memory": "Memory limit of each worker, e.g. 448Mi or 1Gi; the worker's --memory-limit follows.",
        "name": NAME_HELP,
        "dry-run": "Print the manifests and commands; change nothing.",
        "port": "Local mode: the scheduler's port on 127.0.0.1 (default: last time's, else 8786, else a free one; 0: any free one).",
        **TARGET_HELP,
    }
)
def up(
    c, workers=None, worker_cpu=None, worker_memory=None, name=None, namespace=None, mode=None, dry_run=False, port=None
):
    """Deploy a Dask scheduler and workers, and wait until all are ready."""
    options = dict(workers=workers, worker_cpu=worker_cpu, worker_memory=worker_memory, name=name, port=port)
    backend_for(c, namespace, mode, dry_run).up([SERVICE_SPEC], {SERVICE: options})


@task(help={"name": NAME_HELP, "dry-run": "Print what would be deleted; change nothing.", **TARGET_HELP})
def down(c, name=None, namespace=None, mode=None, dry_run=False):
    """Remove the Dask scheduler and workers (found by their labels), and any smoke Job left over."""
    _instance(c, name)
    backend_for(c, namespace, mode, dry_run).down([SERVICE_SPEC], False, {SERVICE: {"name": name}})


@task(
    positional=["workers"],
    help={
        "workers": f"The new number of workers, 0 to {MAX_WORKERS}.",
        "name": NAME_HELP,
        "dry-run": "Print the command; change nothing.",
        **TARGET_HELP,
    },
)
def scale(c, workers, name=None, namespace=None, mode=None, dry_run=False):
    """Change the number of Dask workers and wait for them; a later `dask.up` keeps the count."""
    count = worker_count(workers, "the worker count")
    instance = _instance(c, name)
    _seconds(c.config.dask.rollout_timeout, "dask.rollout_timeout")
    backend = backend_for(c, namespace, mode, dry_run)
    backend.part(SERVICE_SPEC).scale(backend, count, instance)


@task(help={"name": "Name of the cluster (default: every deployed one).", **TARGET_HELP})
def status(c, name=None, namespace=None, mode=None):
    """Show whether the Dask scheduler and workers are ready and how to reach them."""
    instance = _instance(c, name) if name else None
    backend = backend_for(c, namespace, mode)
    backend.part(SERVICE_SPEC).status(backend, name=instance)


@task(help={"name": NAME_HELP, **TARGET_HELP})
def dashboard(c, name=None, namespace=None, mode=None):
    """Forward the Dask dashboard to this machine and print its URL; runs until Ctrl-C (local mode: print the URL)."""
    instance = _instance(c, name)
    backend = backend_for(c, namespace, mode)
    backend.part(SERVICE_SPEC).dashboard(backend, instance)


@task(
    help={
        "name": "Name of the cluster (default: every deployed one).",
        "in-cluster": "Run the check as a Job in the cluster, with the cluster's own image (no port-forward, no version skew).",
        "timeout": "Seconds the check may take (default: dask.smoke_timeout = 120).",
        **TARGET_HELP,
    }
)
def smoke(c, name=None, in_cluster=False, timeout=None, namespace=None, mode=None):
    """Prove Dask works: connect, wait for a worker, compare versions, run a sum and an array job."""
    instance = _instance(c, name) if name else None
    if timeout is not None:
        _seconds(timeout, "--timeout")
    backend = backend_for(c, namespace, mode)
    options = {"name": instance, "in_cluster": in_cluster, "timeout": timeout}
    reports = backend.smoke_reports([SERVICE_SPEC], {SERVICE: options})
    if not reports:
        where = "running on this machine" if backend.mode == "local" else f"deployed {backend.where()}"
        raise PlaybookError(f"dask is not {where}: run `invoke dask.up`")
    require_passed(reports)


@task(
    help={
        "lines": "How many lines from the end (default: 50).",
        "name": "Name of the cluster (default: every deployed one).",
        **TARGET_HELP,
    }
)
def logs(c, lines=50, name=None, namespace=None, mode=None):
    """Show the Dask logs (local mode: the scheduler's and workers' log files; cluster modes: the pods' logs)."""
    instance = _instance(c, name) if name else None
    backend = backend_for(c, namespace, mode)
    print(backend.part(SERVICE_SPEC).logs(backend, int(lines), name=instance) or "dask: no log yet")


ns = Collection(SERVICE, up, down, status, scale, dashboard, smoke, logs)

SERVICE_SPEC = Service(
    name=SERVICE,
    collection=ns,
    defaults=DEFAULTS[SERVICE],
    cluster=DaskOnCluster(SERVICE),
    local=DaskLocal(SERVICE),
    root_options=(
        RootOption(
            "workers",
            "Number of Dask workers (default: keep the running count, else dask.workers).",
            "workers",
            worker_count,
        ),
    ),
)
