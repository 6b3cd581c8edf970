"""The Dask Gateway smoke check: through Traefik with BasicAuth, start a cluster, compute, shut it down."""

from __future__ import annotations

import asyncio
import os
import time
import warnings
from contextlib import contextmanager

from playbooks.report import CheckFailed, Report

SMOKE_USER = "datalab-smoke"
WORKERS = 2
STOP_SECONDS = 60
# Shown for each side; a difference in any of CRITICAL (python: major.minor) is a skew.
SHOWN = ("distributed", "dask", "python")
CRITICAL = ("distributed", "dask", "python", "cloudpickle", "msgpack")


class _Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the check's {self.seconds:.0f}s deadline passed")
        return left

    async def wait(self, awaitable, what: str):
        """Await with the time left; a timeout says what was being waited for."""
        left = self.left()
        try:
            return await asyncio.wait_for(awaitable, left)
        except TimeoutError:
            raise TimeoutError(f"{what} did not finish within {left:.0f}s (the check's deadline)") from None


def explain(error: BaseException, address: str) -> str:
    """One line for the usual ways a gateway says no."""
    status = getattr(error, "status", None)
    text = str(error).strip()
    if status == 401:
        return "the gateway refused the password (401): read it with `invoke gateway.status --show-password`"
    if "wrong version number" in text:
        return (
            "TLS 'wrong version number': the proxy address points at the API service, "
            "not Traefik; use the traefik-<release> service"
        )
    if "Cannot connect" in text or "Connection refused" in text:
        return f"no gateway answers at {address}"
    if isinstance(error, OSError):
        return f"no gateway answers at {address}: {text or type(error).__name__}"
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def _explained(address: str):
    """Turn a client error into the one line `explain` gives; the check's own failures pass through."""
    try:
        yield
    except (AssertionError, TimeoutError):
        raise
    except Exception as error:
        raise RuntimeError(explain(error, address)) from error


def run_check(
    address: str,
    proxy_address: str,
    password: str,
    timeout: float,
    username: str = SMOKE_USER,
    service: str = "dask-gateway",
) -> Report:
    """Run the check; the report says which step failed and why. Never raises for a failed check."""
    report = Report(service)
    try:
        asyncio.run(_check(report, address, proxy_address, password, username, _Deadline(timeout)))
    except CheckFailed:
        pass
    return report


async def _check(report: Report, address: str, proxy: str, password: str, username: str, deadline: _Deadline):
    with report.step("import client"):
        from dask_gateway import BasicAuth, Gateway

    async with Gateway(address, proxy_address=proxy, auth=BasicAuth(username, password), asynchronous=True) as gateway:
        with report.step("connect", f"{address} as {username}") as info, _explained(address):
            clusters = await deadline.wait(gateway.list_clusters(), "listing clusters")
            info["detail"] += f", {len(clusters)} clusters running"
        with report.step("password enforced", "a wrong password gets 401"):
            await _refused(address, proxy, username, deadline)
        name, cluster, client = None, None, None
        try:
            with report.step("create cluster") as info, _explained(address):
                # submit() returns the name at once, so the finally below can always stop it.
                name = await deadline.wait(gateway.submit(), "submitting a cluster")
                cluster = gateway.connect(name, shutdown_on_close=True)
                await deadline.wait(cluster, f"starting cluster {name}")
                info["detail"] = name
            with report.step(f"scale to {WORKERS} workers"), _explained(address):
                client = await _client(cluster, deadline)
                await deadline.wait(cluster.scale(WORKERS), "scaling")
                await deadline.wait(client.wait_for_workers(WORKERS), f"waiting for {WORKERS} workers")
            with report.step("versions") as info, _explained(address):
                info["detail"] = await _versions(client, deadline)
            with report.step("compute", "sum(range(101)) on the cluster") as info, _explained(address):
                future = client.submit(sum, range(101), key=f"smoke-{os.urandom(4).hex()}")
                result = await deadline.wait(future, "the computation")
                if result != 5050:
                    raise AssertionError(f"sum(range(101)) returned {result!r}, expected 5050")
                info["detail"] = f"= {result}"
        finally:
            if client is not None:
                await asyncio.wait_for(client.close(), 30)
            if name is not None:
                await _stop(report, gateway, cluster, name)


async def _refused(address: str, proxy: str, username: str, deadline: _Deadline) -> None:
    from dask_gateway import BasicAuth, Gateway

    wrong = f"not-the-password-{os.urandom(16).hex()}"
    async with Gateway(address, proxy_address=proxy, auth=BasicAuth(username, wrong), asynchronous=True) as other:
        try:
            await deadline.wait(other.list_clusters(), "listing clusters with a wrong password")
        except Exception as error:
            if getattr(error, "status", None) == 401:
                return
            raise
    raise AssertionError("a wrong password was accepted: simple auth is not enforced (no password set on the server)")


async def _client(cluster, deadline: _Deadline):
    """A client of the cluster; distributed's VersionMismatchWarning (a table on stderr) is left
    out: the versions step says the same in one line."""
    from distributed.versions import VersionMismatchWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VersionMismatchWarning)
        return await deadline.wait(cluster.get_client(set_as_default=False), "connecting to the scheduler")


async def _versions(client, deadline: _Deadline) -> str:
    """The versions on the client, the scheduler and the workers, in one line; a skew is reported, not failed."""
    versions = await deadline.wait(client.get_versions(check=False), "reading versions")
    return versions_line(versions)


def _version(package: str, version) -> str:
    text = str(version)
    return ".".join(text.split(".")[:3]) if package == "python" else text


def _comparable(package: str, version: str) -> str:
    return ".".join(version.split(".")[:2]) if package == "python" else version


def versions_line(versions: dict) -> str:
    """client / scheduler / workers versions of distributed, dask and python, and what differs.

    versions: Client.get_versions()'s answer. Workers that agree are shown once.
    """

    def packages(info) -> dict[str, str]:
        found = (info or {}).get("packages") or {}
        return {p: _version(p, v) for p, v in found.items() if p in CRITICAL and v is not None}

    client, scheduler = packages(versions.get("client")), packages(versions.get("scheduler"))
    workers = [packages(info) for info in (versions.get("workers") or {}).values()]

    def side(found: list[dict[str, str]]) -> str:
        shown = []
        for package in SHOWN:
            values = sorted({f.get(package, "?") for f in found}) or ["?"]
            shown.append(f"{package} {'/'.join(values)}")
        return ", ".join(shown)

    count = f"{len(workers)} worker{'s' if len(workers) != 1 else ''}"
    line = f"client {side([client])}; scheduler {side([scheduler])}; {count} {side(workers) if workers else '-'}"
    skewed = [
        package
        for package in CRITICAL
        if len({_comparable(package, f[package]) for f in [client, scheduler, *workers] if package in f}) > 1
    ]
    if not skewed:
        return f"{line}: the same release everywhere"
    image = scheduler.get("distributed", "?")
    python = _comparable("python", scheduler.get("python", "?"))
    return (
        f"{line}: version skew in {', '.join(skewed)}: a client of this gateway needs its image's release "
        f"(dask[distributed]=={image} on Python {python})"
    )


async def _stop(report: Report, gateway, cluster, name: str) -> None:
    """Always stop the cluster, whatever failed before; a failure here fails the check too."""
    try:
        with report.step("shut down", name):
            if cluster is not None:
                await asyncio.wait_for(cluster.close(shutdown=False), 30)
            await asyncio.wait_for(gateway.stop_cluster(name), 60)
            try:
                await asyncio.wait_for(_stopped(gateway, name), STOP_SECONDS)
            except TimeoutError:
                raise TimeoutError(
                    f"cluster {name} still running after {STOP_SECONDS}s: stop it from a client with "
                    f"Gateway(...).stop_cluster({name!r})"
                ) from None
    except CheckFailed:
        pass


async def _stopped(gateway, name: str) -> None:
    """Poll until the gateway reports the cluster stopped (or failed)."""
    while True:
        report = await gateway.get_cluster(name)
        if report.status.name in ("STOPPED", "FAILED"):
            return
        await asyncio.sleep(0.5)
