"""`forward`, `forward.stop`, `forward.status`: port-forwards to every running service that outlive
the terminal and reconnect on their own (playbooks/forwards.py; the supervisor: forwarder.py)."""

from __future__ import annotations

import sys

from invoke import Collection

from playbooks import registry
from playbooks.backends import backend_for
from playbooks.errors import PlaybookError, task
from playbooks.jsonout import progress_dropped

TARGET_HELP = {
    "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
    "mode": "namespace, vcluster or local; overrides detection.",
}


def _local_addresses(backend, quiet: bool = False) -> None:
    rows = [row for row in backend.status_rows(registry.services()) if row[3]]
    if not rows:
        say("forward: local mode needs no forward, and nothing runs on this machine: run `invoke up`", quiet)
        return
    if quiet:
        say("forward: local mode needs no forward: " + ", ".join(f"{s}/{p} {a}" for s, p, _, a in rows), quiet)
        return
    print("forward: local mode needs no forward; the services listen on 127.0.0.1:")
    for service, process, _, address in rows:
        print(f"  {service}/{process}  {address}")


def say(line: str, quiet: bool) -> None:
    """--quiet's one line goes to stderr, as `up --quiet`'s does: stdout stays free for what the script evals."""
    print(line, file=sys.stderr if quiet else sys.stdout, flush=True)


@task(
    default=True,
    help={
        "timeout": "Seconds to wait until every forward answers (default: forward.timeout).",
        "quiet": "One line: the addresses, or one error: line (for a session's start-up script).",
        **TARGET_HELP,
    },
)
def start(c, timeout=None, quiet=False, namespace=None, mode=None):
    """Forward every running service to 127.0.0.1 in the background (MLflow :5000, Dask :8786/:8787,
    Gateway :8000), reconnecting when a pod is replaced; local mode: print the addresses."""
    from playbooks import forwards

    seconds = float(timeout if timeout is not None else c.config.forward.timeout)
    if seconds <= 0 or seconds > 3600:
        raise PlaybookError(f"--timeout {timeout}: give seconds between 1 and 3600")
    with progress_dropped(quiet):
        backend = backend_for(c, namespace, mode)
        if backend.mode != "local":
            wants = forwards.wanted(backend, registry.services())
            if not wants:
                raise PlaybookError(f"nothing to forward: no service runs {backend.where()}; run `invoke up` first")
            entries = forwards.start(backend, wants, seconds)
    if backend.mode == "local":
        _local_addresses(backend, quiet)
        return
    if quiet:
        say("forward: " + ", ".join(f"{e['name']} {forwards.url(e['scheme'], e['local'])}" for e in entries), quiet)
        return
    print("\n".join(forwards.table(entries)))
    print("forward: runs in the background; `invoke forward.stop` (or `invoke down`) ends it")


@task(help=TARGET_HELP)
def stop(c, namespace=None, mode=None):
    """Stop the port-forwards of `invoke forward` (local mode: nothing to stop)."""
    from playbooks import forwards

    backend = backend_for(c, namespace, mode)
    if backend.mode == "local":
        print("forward: local mode has no forwards")
        return
    if forwards.stop(backend):
        print(f"forward: stopped {backend.where()}")
    else:
        print(f"forward: none running {backend.where()}")


@task(help=TARGET_HELP)
def status(c, namespace=None, mode=None):
    """Show each port-forward, its local address and whether it is connected."""
    from playbooks import forwards

    backend = backend_for(c, namespace, mode)
    if backend.mode == "local":
        _local_addresses(backend)
        return
    running, entries = forwards.current(backend)
    if running is None:
        print(f"forward: none running {backend.where()}: `invoke forward` starts them")
        return
    print("\n".join(forwards.table(entries)))
    print(f"forward: supervisor pid {running.pid}")
    if any(entry.get("state") != "connected" for entry in entries):
        raise PlaybookError("a forward is not connected: its state above says why; the supervisor keeps retrying")


ns = Collection("forward", start, stop, status)
