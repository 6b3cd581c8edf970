"""The Dask smoke check: connect, wait for a worker, compare versions, run two small jobs.

This module imports only the standard library and playbooks.report at module level: the
in-cluster smoke Job runs this very file (`python -m playbooks.dask_check ADDRESS`) in the
service's own image, where playbooks is not installed, and prints its report as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
import warnings

from playbooks.report import CheckFailed, Report, Step

REPORT_MARKER = "DATALAB-PLAYBOOKS-REPORT "
# A mismatch of these breaks or corrupts work (pickled functions, the wire protocol);
# other differences (numpy, pandas, python micro releases) are only shown.
CRITICAL_PACKAGES = ("python", "dask", "distributed", "cloudpickle", "msgpack")
SHOWN_PACKAGES = ("dask", "distributed", "python")


def run_check(address: str, timeout: float, min_workers: int = 1, service: str = "dask") -> Report:
    """Run every step against the scheduler at address within timeout seconds; never raises for a failed check."""
    report = Report(service)
    with contextlib.suppress(CheckFailed):
        _steps(report, address, float(timeout), min_workers)
    return report


def _steps(report: Report, address: str, timeout: float, min_workers: int) -> None:
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(deadline - time.monotonic(), 0.5)

    with report.step("connect", address):
        client = _connect(address, left(), timeout)
    try:
        with report.step("workers") as info:
            info["detail"] = _wait_for_workers(client, address, min_workers, left(), timeout)
        with report.step("versions") as info:
            info["detail"] = _versions(client)
        with report.step("sum job") as info:
            total = _result(client.submit(sum, range(101), pure=False), left(), "the sum job")
            if total != 5050:
                raise CheckFailed(f"sum(range(101)) came back as {total!r}, expected 5050")
            info["detail"] = "sum(range(101)) = 5050"
        with report.step("array sum") as info:
            da = _dask_array()
            total = _result(client.compute(da.ones((1000, 1000), chunks=250).sum()), left(), "the array sum")
            if total != 1_000_000:
                raise CheckFailed(f"the sum of a 1000x1000 array of ones came back as {total!r}, expected 1000000")
            info["detail"] = "ones((1000, 1000), chunks=250).sum() = 1000000 (16 chunks)"
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=5)


def _connect(address: str, seconds: float, timeout: float):
    try:
        from distributed import Client
    except ImportError:
        raise CheckFailed(
            "the Dask client is not installed: pip install 'dask[distributed]' at the image's release"
        ) from None
    try:
        # The versions step reports a mismatch in one line; the client's own warning is a table.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Client(address, timeout=seconds, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise CheckFailed(f"no Dask scheduler answers at {address} within {timeout:.0f}s") from error


def _dask_array():
    """dask.array, or a failed step that names the fix: it needs numpy, which dask[distributed] lacks."""
    try:
        import dask.array as da
    except ImportError as error:
        # dask.array re-raises numpy's ImportError with a long text of its own: the cause names the module.
        missing = getattr(error, "name", None) or getattr(error.__cause__, "name", None)
        if missing in (None, "numpy"):
            raise CheckFailed("numpy is not installed here, and dask.array needs it: pip install numpy") from None
        reason = str(error).strip().splitlines()[0]
        raise CheckFailed(f"dask.array cannot be imported here ({reason}): pip install 'dask[array]'") from None
    return da


def _wait_for_workers(client, address: str, wanted: int, seconds: float, timeout: float) -> str:
    try:
        client.wait_for_workers(wanted, timeout=seconds)
    except TimeoutError:
        joined = len(client.nthreads())
        if joined == 0:
            raise CheckFailed(f"no worker joined the scheduler at {address} within {timeout:.0f}s") from None
        raise CheckFailed(
            f"only {joined} of {wanted} workers joined the scheduler at {address} within {timeout:.0f}s"
        ) from None
    threads = client.nthreads()
    return f"{len(threads)} worker(s), {sum(threads.values())} thread(s)"


def _result(future, seconds: float, what: str):
    try:
        return future.result(timeout=seconds)
    except TimeoutError:
        raise CheckFailed(f"{what} gave no result within {seconds:.0f}s: the workers are busy or stuck") from None


def _versions(client) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        versions = client.get_versions(check=True)
    problem = version_problem(versions)
    if problem:
        raise CheckFailed(problem)
    return version_summary(versions)


def _package_versions(versions: dict) -> dict[str, dict[str, str]]:
    """{package: {"client": v, "scheduler": v, "workers": "v1, v2"}}, python reduced to x.y.z."""
    sides = {"client": versions.get("client"), "scheduler": versions.get("scheduler")}
    sides.update({f"worker {w}": info for w, info in (versions.get("workers") or {}).items()})
    table: dict[str, dict[str, str]] = {}
    for side, info in sides.items():
        packages = (info or {}).get("packages") or {}
        for package, version in packages.items():
            version = str(version)
            if package == "python":
                version = ".".join(version.split(".")[:3])
            table.setdefault(package, {})[side] = version
    return table


def _where(per_side: dict[str, str]) -> str:
    """client 2026.8.0, scheduler 2026.3.0, workers 2026.3.0 (workers grouped)."""
    parts = [f"{side} {per_side[side]}" for side in ("client", "scheduler") if side in per_side]
    workers = sorted({v for side, v in per_side.items() if side.startswith("worker ")})
    if workers:
        parts.append(f"workers {'/'.join(workers)}")
    return ", ".join(parts)


def _differs(package: str, per_side: dict[str, str]) -> bool:
    values = set(per_side.values())
    if package == "python":
        values = {".".join(v.split(".")[:2]) for v in values}
    return len(values) > 1


def version_problem(versions: dict) -> str | None:
    """One line naming every critical package whose versions differ, or None."""
    table = _package_versions(versions)
    bad = [f"{p} {_where(table[p])}" for p in CRITICAL_PACKAGES if p in table and _differs(p, table[p])]
    if not bad:
        return None
    return f"version mismatch: {'; '.join(bad)}: pin the client to the image's release (dask.image) or change the image"


def version_summary(versions: dict) -> str:
    table = _package_versions(versions)
    same = ", ".join(f"{p} {next(iter(table[p].values()))}" for p in SHOWN_PACKAGES if p in table)
    minor = [f"{p} {_where(v)}" for p, v in sorted(table.items()) if len(set(v.values())) > 1]
    return f"{same}; also differs: {'; '.join(minor)}" if minor else f"{same} everywhere"


# ---------------------------------------------------------------- the in-cluster Job


def encode_report(report: Report) -> str:
    steps = [{**dataclasses.asdict(step), "seconds": round(step.seconds, 3)} for step in report.steps]
    return REPORT_MARKER + json.dumps({"service": report.service, "steps": steps})


def decode_report(logs: str) -> Report | None:
    """The report a Job printed, from its logs; None when it printed none (it crashed or never ran)."""
    for line in reversed(logs.splitlines()):
        if line.startswith(REPORT_MARKER):
            data = json.loads(line[len(REPORT_MARKER) :])
            return Report(data["service"], [Step(**step) for step in data["steps"]])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m playbooks.dask_check", description="Dask smoke check")
    parser.add_argument("address", help="scheduler address, e.g. tcp://dask-scheduler:8786")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--min-workers", type=int, default=1)
    parser.add_argument("--service", default="dask")
    args = parser.parse_args(argv)
    report = run_check(args.address, args.timeout, args.min_workers, args.service)
    print(report.render(), file=sys.stderr, flush=True)
    print(encode_report(report), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
