"""Sizing Dask workers, the same in every mode: worker counts, their resources and threads, timeouts."""

from __future__ import annotations

import math

from playbooks.errors import PlaybookError
from playbooks.quantity import check_resources, cpu_cores, memory_bytes

MAX_WORKERS = 50
# A nanny and a worker process use about 170Mi before any task runs.
MIN_WORKER_MEMORY = 256 * 2**20


def worker_count(value, what: str = "--workers") -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) > MAX_WORKERS:
        raise PlaybookError(f"{what} must be a whole number from 0 to {MAX_WORKERS}, got {value!r}")
    return int(text)


def seconds(value, what: str) -> float:
    """A timeout setting or flag: 1 to 3600 seconds."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 1 <= number <= 3600:
        raise PlaybookError(f"{what} must be a number of seconds from 1 to 3600, got {value!r}")
    return number


def worker_resources(c, cpu=None, memory=None) -> dict:
    """The worker's requests and limits: configuration, with --worker-cpu/--worker-memory as limits.

    A flag lowers a configured request above it to the new limit, so a smaller worker
    never asks for more than it may use.
    """
    where = "dask.worker_resources"
    resources = check_resources(c.config.dask.worker_resources, where)
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    for key, value, flag, measure in (
        ("cpu", cpu, "--worker-cpu", cpu_cores),
        ("memory", memory, "--worker-memory", memory_bytes),
    ):
        if value is None:
            continue
        measure(value, flag)
        limits[key] = str(value)
        if key in requests and measure(requests[key], where) > measure(value, flag):
            requests[key] = str(value)
    for key, flag in (("cpu", "--worker-cpu"), ("memory", "--worker-memory")):
        if key not in limits:
            raise PlaybookError(
                f"{where}.limits.{key} is not set: set it or pass {flag}; workers are sized to their limits"
            )
    if memory_bytes(limits["memory"], where) < MIN_WORKER_MEMORY:
        raise PlaybookError(
            f"worker memory {limits['memory']} is too small for a Dask worker: give at least 256Mi (--worker-memory)"
        )
    return {"requests": requests, "limits": limits}


def worker_threads(cpu_limit) -> int:
    """Threads for a CPU limit: rounded up, at least 1, as dask itself counts a fractional CPU quota."""
    return max(1, math.ceil(cpu_cores(cpu_limit, "worker cpu limit")))
