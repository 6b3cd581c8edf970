"""Kubernetes CPU and memory quantities: checked before anything is applied, converted for the programs that need numbers."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from playbooks.errors import PlaybookError

# Only the forms people write for CPU and memory; the API would accept odder ones ("1Ki" CPUs).
_CPU = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>m?)$")
_MEMORY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_FACTORS = {
    None: 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def cpu_cores(value, what: str) -> Decimal:
    """CPU cores of a quantity such as 500m, 1 or 1.5; `what` names the flag or config key."""
    match = _CPU.match(str(value).strip())
    cores = None
    if match:
        cores = Decimal(match["number"]) / (1000 if match["suffix"] else 1)
    if cores is None or cores <= 0:
        raise PlaybookError(f"{what} {value!r} is not a CPU quantity: use millicores such as 500m or cores such as 1")
    return cores


def memory_bytes(value, what: str) -> int:
    """Bytes of a quantity such as 448Mi, 1Gi or 512M; `what` names the flag or config key."""
    match = _MEMORY.match(str(value).strip())
    size = 0
    if match:
        size = math.ceil(Decimal(match["number"]) * _MEMORY_FACTORS[match["suffix"]])
    if size <= 0:
        raise PlaybookError(f"{what} {value!r} is not a memory quantity: use a size such as 448Mi or 1Gi")
    return size


def format_cpu(cores: Decimal) -> str:
    return f"{cores.normalize():f}"


def format_memory(size: int) -> str:
    for suffix in ("Gi", "Mi", "Ki"):
        factor = _MEMORY_FACTORS[suffix]
        if size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def check_resources(resources, where: str) -> dict:
    """requests and limits of a container: valid quantities, each request within its limit."""
    resources = dict(resources or {})
    unknown = set(resources) - {"requests", "limits"}
    if unknown:
        raise PlaybookError(f"{where} has unknown keys {sorted(unknown)}: use requests and limits")
    parse = {"cpu": cpu_cores, "memory": memory_bytes}
    for part in ("requests", "limits"):
        for key, value in dict(resources.get(part) or {}).items():
            if key not in parse:
                raise PlaybookError(f"{where}.{part} has unknown resource {key!r}: use cpu and memory")
            parse[key](value, f"{where}.{part}.{key}")
    for key, measure in parse.items():
        request = (resources.get("requests") or {}).get(key)
        limit = (resources.get("limits") or {}).get(key)
        if request is not None and limit is not None and measure(request, "") > measure(limit, ""):
            raise PlaybookError(f"{where}: the {key} request {request} is above its limit {limit}; lower the request")
    return resources
