"""Developer tasks of a checkout: the test suites (not part of the `playbooks` script)."""

from __future__ import annotations

import shlex
import sys

from invoke import Collection

from playbooks.errors import PlaybookError, task

PROVIDERS = ("auto", "envtest", "kind", "existing")


def _pytest(c, args: list[str]) -> None:
    command = shlex.join([sys.executable, "-m", "pytest", *args])
    result = c.run(command, echo=True, pty=False, warn=True)
    if result.exited not in (0, 5):
        raise PlaybookError(f"tests failed (pytest exit {result.exited})")


@task(default=True, help={"workers": "pytest-xdist workers (default: 2; `auto` for one per core)."})
def fast(c, workers="2"):
    """The fast suite: everything but the end-to-end tests."""
    _pytest(c, ["-m", "not e2e", "-n", str(workers)])


@task(
    help={
        "provider": "auto (the first available), envtest, kind or existing.",
        "kubeconfig": "The cluster of the existing provider.",
        "workers": "pytest-xdist workers (default: auto).",
        "keep-cluster": "kind: keep the cluster for the next run.",
    }
)
def e2e(c, provider="auto", kubeconfig=None, workers="auto", keep_cluster=False):
    """The end-to-end suite on real Kubernetes, both modes, in parallel."""
    if provider not in PROVIDERS:
        raise PlaybookError(f"unknown provider {provider!r}: use one of {', '.join(PROVIDERS)}")
    if provider == "existing" and not kubeconfig:
        raise PlaybookError("--provider existing needs --kubeconfig PATH")
    args = ["tests/e2e", "--provider", provider, "-n", str(workers)]
    if kubeconfig:
        args += ["--kubeconfig", kubeconfig]
    if keep_cluster:
        args.append("--keep-cluster")
    _pytest(c, args)


ns = Collection("test", fast, e2e)
