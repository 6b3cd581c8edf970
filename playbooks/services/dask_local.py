"""Dask in local mode: `dask scheduler` and N `dask worker` processes, all on 127.0.0.1.

Each is its own supervised process (`scheduler`, `worker-0`, `worker-1`, ...). The scheduler
is healthy when its port answers; a worker while it runs (the scheduler's count says whether
it joined).
"""

from __future__ import annotations

import json
import os
import time

from playbooks import dask_sizing, local
from playbooks.errors import PlaybookError
from playbooks.quantity import format_memory, memory_bytes
from playbooks.report import Report

SERVICE = "dask"
SCHEDULER = "scheduler"
WORKER_PREFIX = "worker-"


# ---------------------------------------------------------------- inputs


def worker_name(index: int) -> str:
    return f"{WORKER_PREFIX}{index}"


def recorded_workers(recorded: dict[str, dict]) -> list[str]:
    """Names of the recorded workers, by index (worker-2 before worker-10)."""
    names = [name for name in recorded if name.startswith(WORKER_PREFIX) and name[len(WORKER_PREFIX) :].isdigit()]
    return sorted(names, key=lambda name: int(name[len(WORKER_PREFIX) :]))


def sizing(c, cpu=None, memory=None) -> tuple[int, int]:
    """(threads, memory limit in bytes) of each worker: dask.worker_resources' limits, or the flags."""
    limits = dask_sizing.worker_resources(c, cpu, memory)["limits"]
    threads = dask_sizing.worker_threads(limits["cpu"])
    machine = len(os.sched_getaffinity(0))
    if threads > machine:
        where = "--worker-cpu" if cpu is not None else "dask.worker_resources.limits.cpu"
        raise PlaybookError(
            f"{where} {limits['cpu']} is more CPUs than this machine has ({machine}): "
            f"give each local worker at most {machine}"
        )
    return threads, memory_bytes(limits["memory"], "worker memory")


def running_sizing(recorded: dict[str, dict]) -> tuple[int, int] | None:
    """The sizing of the workers already recorded, so `scale` adds workers like them."""
    for name in recorded_workers(recorded):
        inputs = recorded[name].get("inputs") or {}
        if "threads" in inputs and "memory" in inputs:
            return int(inputs["threads"]), int(inputs["memory"])
    return None


def choose_count(flag, recorded: dict[str, dict], configured) -> tuple[int, str]:
    """The worker count `up` applies and where it came from; a running scheduler keeps its count."""
    if flag is not None:
        return dask_sizing.worker_count(flag), "--workers"
    if local.alive(recorded.get(SCHEDULER)):
        return len(recorded_workers(recorded)), "kept from the running cluster; pass --workers to change"
    return dask_sizing.worker_count(configured, "dask.workers"), "dask.workers"


def choose_ports(c, port, state: dict | None) -> tuple[int, int]:
    """Scheduler and dashboard ports: given, else the running (or last) ones, else the well-known
    ones (local.ports.dask, local.ports.dask_dashboard) when free, else free ones."""
    last = local.last_ports(c, SERVICE, SCHEDULER)
    scheduler = local.choose_port(port, local.preferred_port(c, "dask"), previous=state, key="tcp", last=last)
    dashboard = local.choose_port(
        None, local.preferred_port(c, "dask_dashboard"), previous=state, key="dashboard", last=last
    )
    while dashboard == scheduler:
        dashboard = local.choose_port(0)
    return scheduler, dashboard


def address(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def scheduler_process(port: int, dashboard: int) -> local.Process:
    argv = [local.tool("dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
            "--dashboard-address", f"127.0.0.1:{dashboard}"]  # fmt: skip
    return local.Process(SCHEDULER, argv, local.quiet_env(), health_port=port)


def worker_process(c, index: int, port: int, threads: int, memory: int) -> local.Process:
    name = worker_name(index)
    argv = [
        local.tool("dask"), "worker", address(port), "--host", "127.0.0.1",
        "--nthreads", str(threads), "--memory-limit", str(memory), "--name", name, "--no-dashboard",
        # --no-dashboard keeps the worker's HTTP server (health, metrics), on every interface unless told.
        "--dashboard-address", "127.0.0.1:0",
        "--local-directory", str(local.service_dir(c, SERVICE) / "scratch"),
    ]  # fmt: skip
    return local.Process(name, argv, local.quiet_env(), inputs={"threads": threads, "memory": memory})


# ---------------------------------------------------------------- the scheduler's view


def joined_workers(dashboard: int) -> int | None:
    """How many workers the scheduler counts (its /json/counts.json), None if it does not say."""
    try:
        import urllib.request  # not at start-up: it pulls in ssl and email

        with urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/json/counts.json", timeout=2) as response:
            return int(json.load(response)["workers"])
    except (OSError, ValueError, KeyError, TypeError):  # URLError is an OSError
        return None


def wait_for_workers(dashboard: int, wanted: int, timeout: float) -> None:
    """Wait until the scheduler counts at least `wanted` workers; progress every 5 s, fail at the deadline."""
    start = last = time.monotonic()
    seen = joined_workers(dashboard)
    while seen is None or seen < wanted:
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            raise PlaybookError(
                f"the scheduler counts {seen or 0} of {wanted} workers after {timeout:.0f}s: "
                "see `invoke dask.logs`, fix the cause and run dask.up again"
            )
        if time.monotonic() - last >= 5:
            print(f"dask: {seen or 0}/{wanted} workers joined [{elapsed:.0f}s/{timeout:.0f}s]", flush=True)
            last = time.monotonic()
        local.pause(0.25)
        seen = joined_workers(dashboard)
    print(f"dask: {seen} worker(s) joined the scheduler after {time.monotonic() - start:.0f}s", flush=True)


# ---------------------------------------------------------------- lifecycle


def converge(c, count: int, port: int, threads: int, memory: int) -> tuple[int, int]:
    """Run workers 0..count-1 (restarting dead or changed ones), stop the rest; (started, removed)."""
    timeout = float(c.config.local.start_timeout)
    started = 0
    for index in range(count):
        process = worker_process(c, index, port, threads, memory)
        started += local.ensure(c, SERVICE, process, {}, timeout) == "started"
    extra = [name for name in recorded_workers(local.processes(c, SERVICE)) if int(name[len(WORKER_PREFIX) :]) >= count]
    if extra:
        stopped = local.stop(c, SERVICE, extra, grace=float(c.config.local.stop_grace))
        print(
            f"dask: stopped {', '.join(stopped)}" if stopped else f"dask: forgot {', '.join(extra)} (not running)",
            flush=True,
        )
    return started, len(extra)


def up(c, workers=None, worker_memory=None, port=None, worker_cpu=None) -> None:
    threads, memory = sizing(c, worker_cpu, worker_memory)
    # Checked before the lock: a refused `up` leaves the state folder as it was.
    if workers is None:
        dask_sizing.worker_count(c.config.dask.workers, "dask.workers")
    local.check_ports(port)
    with local.writing(c, "dask.up"):
        _up(c, workers, port, threads, memory)


def _up(c, workers, port, threads: int, memory: int) -> None:
    recorded = local.processes(c, SERVICE)
    count, origin = choose_count(workers, recorded, c.config.dask.workers)
    state = recorded.get(SCHEDULER)
    scheduler_port, dashboard = choose_ports(c, port, state)
    print(
        f"dask: scheduler and {count} worker(s) ({origin}), {threads} thread(s) and {format_memory(memory)} each",
        flush=True,
    )
    result = local.ensure(
        c, SERVICE, scheduler_process(scheduler_port, dashboard), {"tcp": scheduler_port, "dashboard": dashboard},
        float(c.config.local.start_timeout),
    )  # fmt: skip
    if result == "started" and recorded_workers(recorded):
        # A worker exits when its scheduler goes: start them all again with the new one.
        local.stop(c, SERVICE, recorded_workers(recorded), grace=float(c.config.local.stop_grace))
    started, removed = converge(c, count, scheduler_port, threads, memory)
    if result == "running" and not started and not removed:
        print(f"dask: already running and healthy (scheduler pid {state['pid']}, {count} worker(s)): no change")
    elif started:
        wait_for_workers(dashboard, count, float(c.config.local.start_timeout))
    print_access(scheduler_port, dashboard)


def scale(c, workers) -> None:
    count = dask_sizing.worker_count(workers, "the worker count")
    with local.writing(c, "dask.scale", create=False):
        _scale(c, count)


def _scale(c, count: int) -> None:
    recorded = local.processes(c, SERVICE)
    state = recorded.get(SCHEDULER)
    if not state or local.health(state) != "healthy":
        raise PlaybookError("the local Dask scheduler is not running: run `invoke dask.up` first")
    threads, memory = running_sizing(recorded) or sizing(c)
    before = len(recorded_workers(recorded))
    started, removed = converge(c, count, state["ports"]["tcp"], threads, memory)
    if not started and not removed:
        print(f"dask: already {count} worker(s): no change")
        return
    if started:
        wait_for_workers(state["ports"]["dashboard"], count, float(c.config.local.start_timeout))
    print(f"dask: scaled from {before} to {count} worker(s)")


def down(c) -> None:
    with local.writing(c, "dask.down", create=False):
        _down(c)


def _down(c) -> None:
    grace = float(c.config.local.stop_grace)
    stopped = local.stop(c, SERVICE, recorded_workers(local.processes(c, SERVICE)), grace=grace)
    stopped += local.stop(c, SERVICE, grace=grace)  # the scheduler, after its workers
    print(f"dask: stopped {', '.join(stopped)}" if stopped else "dask: nothing running")


# ---------------------------------------------------------------- status, access, smoke, logs


def print_access(port: int, dashboard: int) -> None:
    print(f"dask: scheduler    {address(port)}")
    print(f"dask: from Python  Client({address(port)!r})")
    print(f"dask: dashboard    http://127.0.0.1:{dashboard}/status")


def running_ports(c) -> tuple[int, int] | None:
    """The running scheduler's (scheduler, dashboard) ports, or None."""
    state = local.processes(c, SERVICE).get(SCHEDULER)
    if not local.alive(state):
        return None
    return state["ports"]["tcp"], state["ports"]["dashboard"]


def dashboard_url(c) -> str | None:
    state = local.processes(c, SERVICE).get(SCHEDULER)
    if not local.alive(state):
        return None
    return f"http://127.0.0.1:{state['ports']['dashboard']}/status"


def status(c) -> bool:
    recorded = local.processes(c, SERVICE)
    if not recorded:
        print("dask: not running")
        return False
    healthy = True
    for name in [SCHEDULER, *recorded_workers(recorded)]:
        state = recorded.get(name)
        health = local.health(state) if state else "not running"
        healthy &= health == "healthy"
        print(f"dask/{name}: {health}" + (f" (pid {state['pid']})" if local.alive(state) else ""))
    for line in local.crash_report(c, SERVICE):
        print(line)
    scheduler = recorded.get(SCHEDULER)
    if scheduler and local.alive(scheduler):
        joined = joined_workers(scheduler["ports"]["dashboard"])
        print(f"dask: the scheduler counts {'?' if joined is None else joined} worker(s)")
        print_access(scheduler["ports"]["tcp"], scheduler["ports"]["dashboard"])
    local.refuse_crashed(c, SERVICE)
    return healthy


def smoke_reports(c, timeout=None) -> list[Report]:
    from playbooks.dask_check import run_check

    recorded = local.processes(c, SERVICE)
    state = recorded.get(SCHEDULER)
    if not state:
        return []
    if not local.alive(state):
        raise PlaybookError(f"the local Dask scheduler is not running ({local.health(state)}): run `invoke dask.up`")
    what = "--timeout" if timeout is not None else "dask.smoke_timeout"
    seconds = dask_sizing.seconds(timeout if timeout is not None else c.config.dask.smoke_timeout, what)
    if not recorded_workers(recorded):
        print("dask: scaled to 0 workers, so the check cannot pass: run `invoke dask.scale 1`", flush=True)
    target = address(state["ports"]["tcp"])
    print(f"dask: checking {target} (local processes)", flush=True)
    report = run_check(target, seconds, min_workers=1, service=SERVICE)
    print(report.render(), flush=True)
    return [report]


def logs(c, lines: int) -> str:
    """The end of every process's log, scheduler first; logs stay after `down`."""
    folder = local.service_dir(c, SERVICE)
    names = [path.stem for path in folder.glob("*.log")] if folder.is_dir() else []
    ordered = [SCHEDULER] * (SCHEDULER in names) + recorded_workers(dict.fromkeys(names))
    parts = [f"==> {name}.log <==\n{local.tail_log(c, SERVICE, name, lines)}" for name in ordered]
    return "\n\n".join(parts)
