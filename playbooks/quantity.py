"""Kubernetes CPU and memory quantities: checked before anything is applied, converted for the programs that need numbers."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from playbooks.errors import PlaybookError

# A quantity as the API writes it: a decimal number and an optional suffix (the API's
# canonical forms; exponents such as 1e3 are left out, no setting or quota here uses them).
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_FACTORS = {
    None: Decimal(1), "m": Decimal("0.001"),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}  # fmt: skip
# Only the forms people write for CPU and memory; the API would accept odder ones ("1Ki" CPUs).
_CPU_SUFFIXES = (None, "m")
_MEMORY_SUFFIXES = (None, "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti")


def parse(value, suffixes=tuple(_FACTORS)) -> Decimal | None:
    """The number a Kubernetes quantity stands for (cores, bytes, a count), or None when it is not one of these forms."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match["suffix"] not in suffixes:
        return None
    return Decimal(match["number"]) * _FACTORS[match["suffix"]]


def cpu_cores(value, what: str) -> Decimal:
    """CPU cores of a quantity such as 500m, 1 or 1.5; `what` names the flag or config key."""
    cores = parse(value, _CPU_SUFFIXES)
    if cores is None or cores <= 0:
        raise PlaybookError(f"{what} {value!r} is not a CPU quantity: use millicores such as 500m or cores such as 1")
    return cores


def memory_bytes(value, what: str) -> int:
    """Bytes of a quantity such as 448Mi, 1Gi or 512M; `what` names the flag or config key."""
    size = parse(value, _MEMORY_SUFFIXES)
    size = math.ceil(size) if size is not None else 0
    if size <= 0:
        raise PlaybookError(f"{what} {value!r} is not a memory quantity: use a size such as 448Mi or 1Gi")
    return size


def format_cpu(cores: Decimal) -> str:
    return f"{cores.normalize():f}"


def format_memory(size: int) -> str:
    for suffix in ("Gi", "Mi", "Ki"):
        factor = int(_FACTORS[suffix])
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
