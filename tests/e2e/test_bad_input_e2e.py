"""Bad input against a real API server: exit code 1, one line that names the fix, no traceback,
and the cluster unchanged (the secret scan of every task: test_secret_scan_e2e.py).

The table CASES holds 44 cases, each run in namespace and in vCluster mode unless it names
one (66 runs). They share one namespace per mode (the `deployments` fixture: `up --only
mlflow,dask`, and in vCluster mode the stand-in Dask Gateway chart), so every case meets
running services. Before and after each case the test lists the namespace's objects (kind,
name and resourceVersion: Deployments, Services, Secrets — helm's release records among
them —, ConfigMaps, PVCs, Jobs, RBAC, NetworkPolicies), the helm releases, the cluster-wide
objects a chart could add (CRDs, cluster roles and their bindings) and the namespaces: the
two listings must be equal, and no namespace may appear. Cases that fail before any API
call are run in namespace mode only: the mode cannot change them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from playbooks import registry
from playbooks.helm import LIST_STATES
from tests.conftest import one_error_line
from tests.e2e.conftest import MODES, STANDIN_CHART, Session, new_session

BOTH = tuple(MODES)
NAMESPACE_ONLY = ("namespace",)
NOT_VCLUSTER = "Dask Gateway needs vCluster mode"


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    # Fragments the one line must hold; a dict gives them per mode.
    message: str | tuple[str, ...] | dict[str, str | tuple[str, ...]]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # written to the working folder for the case
    modes: tuple[str, ...] = BOTH


CASES = [
    # ---- credentials, namespaces, modes
    Case(
        "namespace that does not exist",
        ["mlflow.up", "--namespace", "{ns}-missing"],
        {"namespace": "may not create", "vcluster": "namespace {ns}-missing does not exist: create it"},
    ),
    Case(
        "vcluster mode with namespace credentials",
        ["mlflow.up", "--mode", "vcluster"],
        "--mode vcluster needs rights to create CRDs",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "gateway in namespace mode", ["gateway.up", "--chart", str(STANDIN_CHART)], NOT_VCLUSTER, modes=NAMESPACE_ONLY
    ),
    Case(
        "expired token", ["mlflow.up"], ("rejected the credentials", "refresh the kubeconfig"), {"KUBECONFIG": "@stale"}
    ),
    Case("expired token: dask.scale", ["dask.scale", "1"], "rejected the credentials", {"KUBECONFIG": "@stale"}),
    # ---- kubectl and helm
    Case(
        "missing kubectl",
        ["mlflow.up"],
        "/nonexistent/kubectl not found: install kubectl or set tools.kubectl",
        {"INVOKE_TOOLS_KUBECTL": "/nonexistent/kubectl"},
    ),
    Case("kubectl too old", ["mlflow.up"], ("kubectl 1.20.0", "too old"), {"PATH": "@old-kubectl"}),
    Case(
        "missing helm",
        ["gateway.up", "--chart", str(STANDIN_CHART)],
        {"namespace": NOT_VCLUSTER, "vcluster": ("/nonexistent/helm not found", "install helm")},
        {"INVOKE_TOOLS_HELM": "/nonexistent/helm"},
    ),
    Case(
        "helm too old",
        ["gateway.up", "--chart", str(STANDIN_CHART)],
        {"namespace": NOT_VCLUSTER, "vcluster": ("helm", "too old")},
        {"PATH": "@old-helm"},
    ),
    Case("helm too old: gateway.status", ["gateway.status"], ("helm", "too old"), {"PATH": "@old-helm"}),
    Case(
        "chart version that does not exist",
        ["gateway.up"],
        {"namespace": NOT_VCLUSTER, "vcluster": ("has no version 9.9.9", "set gateway.chart_version")},
        {"INVOKE_GATEWAY_REPO_URL": "@chart-repo", "INVOKE_GATEWAY_CHART_VERSION": "9.9.9"},
    ),
    # ---- object storage
    Case(
        "bucket missing on the S3 server",
        ["mlflow.up", "--bucket", "ws-missing"],
        ("bucket ws-missing", "does not exist"),
    ),
    Case("S3 endpoint unreachable", ["mlflow.up"], "cannot reach S3 endpoint", {"AWS_ENDPOINT_URL": "@dead"}),
    Case("half-set AWS credentials", ["mlflow.up"], "export AWS_SECRET_ACCESS_KEY too", {"AWS_SECRET_ACCESS_KEY": ""}),
    Case("no object store to use", ["mlflow.up", "--storage", "local-s3"], "run `invoke storage.up` first"),
    # ---- worker counts and resources
    Case(
        "dask.up --workers -1",
        ["dask.up", "--workers", "-1"],
        "--workers must be a whole number from 0 to 50, got '-1'",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "dask.up --workers 100000",
        ["dask.up", "--workers", "100000"],
        "--workers must be a whole number from 0 to 50",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "dask.scale -2",
        ["dask.scale", "-2"],
        "the worker count must be a whole number from 0 to 50, got '-2'",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "dask.scale of a cluster not deployed",
        ["dask.scale", "0", "--name", "nope"],
        "dask 'nope' is not deployed in namespace {ns}: run `invoke dask.up`",
    ),
    Case(
        "worker memory 'lots'",
        ["dask.up"],
        "limits.memory 'lots' is not a memory quantity",
        {"INVOKE_DASK_WORKER_RESOURCES_LIMITS_MEMORY": "lots"},
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "worker cpu -1 in invoke.yaml",
        ["dask.up"],
        "dask.worker_resources.limits.cpu '-1' is not a CPU quantity",
        files={"invoke.yaml": "dask:\n  worker_resources:\n    limits: {cpu: '-1'}\n"},
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "mlflow memory 'lots' in invoke.yaml",
        ["mlflow.up"],
        "mlflow.resources.limits.memory 'lots' is not a memory quantity",
        files={"invoke.yaml": "mlflow:\n  resources:\n    limits: {memory: lots}\n"},
    ),
    Case(
        "malformed invoke.yaml",
        ["mlflow.up"],
        ("cannot load the configuration", "invoke.yaml"),
        files={"invoke.yaml": "mlflow:\n  bucket: [ws-frank\n"},
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "invoke.yaml: a word for seconds",
        ["dask.up"],
        "setting dask.rollout_timeout is 'soon', which is not a number",
        files={"invoke.yaml": "dask:\n  rollout_timeout: soon\n"},
        modes=NAMESPACE_ONLY,
    ),
    # ---- whole-stack tasks
    Case(
        "up --only nope", ["up", "--only", "nope"], f"unknown service nope: choose from {', '.join(registry.names())}"
    ),
    Case("down --only nope", ["down", "--only", "nope"], "unknown service nope"),
    Case(
        "status --namespace Bad_NS",
        ["status", "--namespace", "Bad_NS"],
        "invalid namespace 'Bad_NS'",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "smoke --namespace Bad_NS",
        ["smoke", "--namespace", "Bad_NS"],
        "invalid namespace 'Bad_NS'",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "target --namespace Bad_NS",
        ["target", "--namespace", "Bad_NS"],
        "invalid namespace 'Bad_NS'",
        modes=NAMESPACE_ONLY,
    ),
    # ---- a bad flag for each service task
    Case(
        "mlflow.down --name",
        ["mlflow.down", "--name", "Bad_Name"],
        "invalid service name 'Bad_Name'",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "mlflow.status --name",
        ["mlflow.status", "--name", "Bad_Name"],
        "invalid service name 'Bad_Name'",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "mlflow.smoke of an instance not deployed",
        ["mlflow.smoke", "--name", "nope"],
        "mlflow 'nope' is not deployed in namespace {ns}",
    ),
    Case(
        "mlflow.logs --lines lots",
        ["mlflow.logs", "--lines", "lots"],
        "--lines 'lots' is not a whole number",
        modes=NAMESPACE_ONLY,
    ),
    Case("dask.down --name", ["dask.down", "--name", "Bad_Name"], "invalid Dask name 'Bad_Name'", modes=NAMESPACE_ONLY),
    Case(
        "dask.status --name",
        ["dask.status", "--name", "Bad_Name"],
        "invalid Dask name 'Bad_Name'",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "dask.smoke of a cluster not deployed",
        ["dask.smoke", "--name", "nope"],
        "dask 'nope' is not deployed in namespace {ns}",
    ),
    Case(
        "dask.logs --lines -5",
        ["dask.logs", "--lines", "-5"],
        "--lines '-5' is not a whole number",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "dask.dashboard of a cluster not deployed",
        ["dask.dashboard", "--name", "nope"],
        "dask 'nope' is not deployed in namespace {ns}",
    ),
    Case("storage.up --bucket", ["storage.up", "--bucket", "Bad_B"], "invalid bucket name 'Bad_B'"),
    Case(
        "storage.down --name",
        ["storage.down", "--name", "Bad_Name"],
        "invalid service name 'Bad_Name'",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "storage.status --name",
        ["storage.status", "--name", "Bad_Name"],
        "invalid service name 'Bad_Name'",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "storage.logs --lines lots",
        ["storage.logs", "--lines", "lots"],
        "--lines 'lots' is not a whole number",
        modes=NAMESPACE_ONLY,
    ),
    Case(
        "gateway.down --timeout -1", ["gateway.down", "--timeout", "-1"], "invalid --timeout '-1'", modes=NAMESPACE_ONLY
    ),
    Case(
        "gateway.smoke of a release not installed",
        ["gateway.smoke", "--release", "nope"],
        "gateway 'nope' is not installed in namespace {ns}",
    ),
]
RUNS = [pytest.param(mode, case, id=f"{mode}-{case.id}") for mode in MODES for case in CASES if mode in case.modes]


# ---------------------------------------------------------------- one namespace per mode, services running


def helm_releases(session: Session) -> list[tuple]:
    out = subprocess.run(
        ["helm", "list", "-n", session.namespace, "--kubeconfig", str(session.cluster.admin_kubeconfig), "-o", "json", *LIST_STATES],
        capture_output=True, text=True, timeout=60, check=True, env=session.env,
    )  # fmt: skip
    return sorted((r["name"], r["revision"], r["status"], r["chart"]) for r in json.loads(out.stdout or "[]"))


def listing(session: Session) -> dict:
    """What a case must not change: the namespace's objects, helm releases, cluster-wide objects, namespaces."""
    kubectl = session.cluster.kubectl

    def versions(*args: str) -> dict[str, str]:
        items = json.loads(kubectl("get", *args, "-o", "json").stdout)["items"]
        return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}

    kinds = "deployments,services,secrets,configmaps,persistentvolumeclaims,jobs,serviceaccounts,roles,rolebindings,networkpolicies"
    return {
        "namespace": versions(kinds, "-n", session.namespace),
        "helm": helm_releases(session),
        "cluster": versions("customresourcedefinitions,clusterroles,clusterrolebindings"),
    }


def namespaces(session: Session) -> set[str]:
    return set(session.cluster.kubectl("get", "namespaces", "-o", "name").stdout.split())


@pytest.fixture(scope="module")
def chart_repository(tmp_path_factory):
    """The stand-in chart in a chart repository served on 127.0.0.1 (as https://helm.dask.org serves it)."""
    from playbooks.procs import free_port, http_ok, start, stop_group, wait_until

    folder = tmp_path_factory.mktemp("chart-repo")
    env = {**os.environ, "HOME": str(folder)}
    subprocess.run(
        ["helm", "package", str(STANDIN_CHART), "-d", str(folder)], check=True, capture_output=True, timeout=60, env=env
    )
    url = f"http://127.0.0.1:{free_port()}"
    subprocess.run(
        ["helm", "repo", "index", str(folder), "--url", url], check=True, capture_output=True, timeout=60, env=env
    )
    log = folder.parent / f"{folder.name}.log"
    port = url.rpartition(":")[2]
    server = start([sys.executable, "-m", "http.server", port, "--bind", "127.0.0.1", "-d", str(folder)], env, log)
    try:
        wait_until(lambda: http_ok(f"{url}/index.yaml"), 20, "chart repository", server, log)
        yield url
    finally:
        stop_group(server.pid)


def deploy(mode: str, target, s3_server, tmp: Path, cleanups: list) -> Session:
    """A session of the mode whose namespace runs MLflow and Dask, and in vCluster mode the gateway."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    namespace = f"pb-{worker}-bad-{uuid.uuid4().hex[:6]}"
    cleanups.append(lambda: target.kubectl("delete", "namespace", namespace, "--wait=false", check=False))
    if mode == "namespace":
        cleanups.append(
            lambda: target.kubectl(
                "delete", "clusterrole,clusterrolebinding", f"{namespace}-namespace-reader", check=False
            )
        )
    session = new_session(target, mode, namespace, tmp, s3_server)
    ups = [session.run("up", "--only", "mlflow,dask", "--workers", "1")]
    if mode == "vcluster":
        ups.append(session.run("gateway.up", "--chart", str(STANDIN_CHART), timeout=400))
    assert all(r.returncode == 0 for r in ups), "\n".join(session.outputs)
    return session


@pytest.fixture(scope="module")
def deployments(request, cluster, s3_server, tmp_path_factory):
    """mode -> its session, deployed on first use and kept for the module.

    Not a parametrized fixture: pytest sets those up again for every parameter set of the test.
    """
    if shutil.which("helm") is None:
        pytest.skip("helm is not installed: run scripts/setup.sh")
    made: dict[str, Session | BaseException] = {}
    cleanups: list = []

    def get(mode: str) -> Session:
        if mode not in made:
            target = request.getfixturevalue("vcluster_target") if mode == "vcluster" else cluster
            try:
                made[mode] = deploy(mode, target, s3_server, tmp_path_factory.mktemp(f"bad-input-{mode}"), cleanups)
            except BaseException as error:
                made[mode] = error
        if isinstance(made[mode], BaseException):
            raise made[mode]
        return made[mode]

    yield get
    for cleanup in cleanups:
        cleanup()


# ---------------------------------------------------------------- stand-ins for a user's broken setup


def stale_kubeconfig(session: Session, folder: Path) -> str:
    config = yaml.safe_load(Path(session.kubeconfig).read_text())
    for user in config["users"]:
        user["user"] = {"token": "expired-or-revoked"}
    path = folder / "stale.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def old_tool(folder: Path, name: str, version_args: str, answer: str, path: str) -> str:
    """A `name` first on PATH that reports an old version and hands everything else to the real one."""
    real = shutil.which(name, path=path)
    assert real, f"{name} is not installed"
    script = folder / "old-tools" / name
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        f"#!/bin/sh\ncase \"$*\" in\n  {version_args}) printf '%s\\n' '{answer}'; exit 0;;\nesac\nexec {real} \"$@\"\n"
    )
    script.chmod(0o755)
    return f"{script.parent}{os.pathsep}{path}"


OLD_KUBECTL = json.dumps(
    {"clientVersion": {"major": "1", "minor": "20", "gitVersion": "v1.20.0", "platform": "linux/amd64"}}
)


def case_env(case: Case, session: Session, folder: Path, request) -> dict[str, str]:
    env = {}
    path = session.env["PATH"]
    for key, value in case.env.items():
        if value == "@stale":
            value = stale_kubeconfig(session, folder)
        elif value == "@old-kubectl":
            value = old_tool(folder, "kubectl", "*version*--client*|*--client*version*", OLD_KUBECTL, path)
        elif value == "@old-helm":
            value = old_tool(folder, "helm", "version*", "v3.5.0+g32c2223", path)
        elif value == "@chart-repo":
            value = request.getfixturevalue("chart_repository")
        elif value == "@dead":
            from playbooks.procs import free_port

            value = f"http://127.0.0.1:{free_port()}"
        env[key] = value
    return env


# ---------------------------------------------------------------- the matrix


@pytest.mark.parametrize(("mode", "case"), RUNS)
def test_bad_input_is_one_clear_line_and_changes_nothing(mode: str, case: Case, deployments, request, tmp_path):
    session = deployments(mode)
    expected = case.message[mode] if isinstance(case.message, dict) else case.message
    fragments = [f.format(ns=session.namespace) for f in ((expected,) if isinstance(expected, str) else expected)]
    args = [a.format(ns=session.namespace) for a in case.argv]
    env = case_env(case, session, tmp_path, request)
    written = [session.tmp / name for name in case.files]
    for path, text in zip(written, case.files.values(), strict=True):
        path.write_text(text)
    before, spaces = listing(session), namespaces(session)
    assert before["namespace"] and (mode == "namespace" or before["helm"]), (
        "nothing deployed to compare: it proves nothing"
    )
    try:
        result = session.run(*args, env=env, timeout=120)
    finally:
        for path in written:
            path.unlink()
    one_error_line(result, fragments)
    assert listing(session) == before, "the cluster changed"
    assert namespaces(session) <= spaces, "a namespace appeared"


@pytest.mark.parametrize("mode", MODES)
def test_the_listing_sees_a_change(mode: str, deployments):
    """The control: a good `dask.scale` shows in the listing, so an unchanged one means something."""
    session = deployments(mode)
    before = listing(session)
    scaled = session.run("dask.scale", "2")
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    assert listing(session)["namespace"] != before["namespace"]
    back = session.run("dask.scale", "1")
    assert back.returncode == 0, back.stdout + back.stderr


def test_cases_name_their_count():
    count = int(re.search(r"holds (\d+) cases", __doc__)[1])
    runs = int(re.search(r"\((\d+) runs\)", __doc__)[1])
    assert (count, runs) == (len(CASES), len(RUNS))


# ---------------------------------------------------------------- secrets
