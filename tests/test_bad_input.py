"""Bad input, offline and in local mode: exit code 1, one line that names the fix, no traceback, nothing changed.

The table CASES holds 105 cases, plus those service_cases() derives from the registry. Each runs the `playbooks` CLI in a fresh folder, or (`running`)
in one folder per module where `storage.up` and `dask.up --workers 1` run real local servers.
Before and after each case it takes a snapshot of that folder (every file and directory with
its size and mtime: the state folder .playbooks/, the kubeconfig, HOME) and of the processes
started from it (cwd or command line under it): the two must be equal. Cluster cases here fail
before the API is asked, or meet an unreachable API (then the files are all there is to list);
the cases that need an API server are in tests/e2e/test_bad_input_e2e.py. Every task has a
case in one of the two tables; the developer tasks of the checkout (devtools/: cluster.*, test.*) are
not the playbooks' (tests/test_cluster.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from playbooks import registry
from playbooks.procs import free_port
from tests.conftest import QUIET_ENV, one_error_line

CLI = str(Path(sys.executable).parent / "playbooks")
STANDIN_CHART = Path(__file__).parent / "e2e" / "charts" / "dask-gateway"
# An unreachable cluster: these inputs must be refused before the API is even asked.
CLUSTER = {"KUBECONFIG": "@unreachable"}
CREDS = {**CLUSTER, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example-secret"}
# The moto S3 server of tests/conftest.py, and an S3 endpoint nothing listens on.
S3 = {"AWS_ACCESS_KEY_ID": "@s3", "AWS_SECRET_ACCESS_KEY": "@s3", "AWS_ENDPOINT_URL": "@s3", "AWS_REGION": "us-east-1"}
DEAD_S3 = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example-secret", "AWS_ENDPOINT_URL": "@dead"}
UNREACHABLE = "cannot reach the Kubernetes API"


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    message: str | tuple[str, ...]  # every fragment must be in the one line
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # written to the working folder first
    running: bool = False  # in the folder where local storage and Dask run


CASES = [
    # ---- buckets and AWS_* variables
    Case("no bucket", ["mlflow.up"], "no bucket given: pass --bucket", CREDS),
    Case("bucket with capitals", ["mlflow.up", "--bucket", "WS_Frank"], "invalid bucket name 'WS_Frank'", CREDS),
    Case("bucket too short", ["mlflow.up", "--bucket", "ab"], "must be 3 to 63 characters", CREDS),
    Case("bucket like an IP", ["mlflow.up", "--bucket", "192.168.1.1"], "must not look like an IP", CREDS),
    Case("bad default bucket", ["mlflow.up"], "invalid bucket name", {**CREDS, "WORKSHOP_NAMESPACE": "Bad..Name"}),
    Case(
        "no credentials, no store",
        ["mlflow.up", "--storage", "env", "--bucket", "ws-frank"],
        "no S3 credentials: export AWS_ACCESS_KEY_ID",
        CLUSTER,
    ),
    Case("unknown storage", ["mlflow.up", "--storage", "nfs"], "unknown --storage 'nfs'", CREDS),
    Case(
        "half credentials: key only",
        ["mlflow.up", "--bucket", "ws-frank"],
        "export AWS_SECRET_ACCESS_KEY too",
        {**CLUSTER, "AWS_ACCESS_KEY_ID": "k"},
    ),
    Case(
        "half credentials: secret only",
        ["mlflow.up", "--bucket", "ws-frank"],
        "export AWS_ACCESS_KEY_ID too",
        {**CLUSTER, "AWS_SECRET_ACCESS_KEY": "s"},
    ),
    Case(
        "endpoint with bucket",
        ["mlflow.up", "--bucket", "ws-frank"],
        "is not an endpoint",
        {**CREDS, "AWS_ENDPOINT_URL": "http://s3:9000/ws-frank"},
    ),
    Case(
        "endpoint without scheme",
        ["mlflow.up", "--bucket", "ws-frank"],
        "is not an endpoint",
        {**CREDS, "AWS_ENDPOINT_URL": "s3.example.com"},
    ),
    Case(
        "local: bucket missing on the S3 server",
        ["mlflow.up", "--bucket", "ws-missing"],
        ("bucket ws-missing", "does not exist"),
        S3,
    ),
    Case("local: S3 endpoint unreachable", ["mlflow.up", "--bucket", "ws-frank"], "cannot reach S3 endpoint", DEAD_S3),
    Case("local: invalid --bucket", ["mlflow.up", "--bucket", "Bad_B"], "invalid bucket name 'Bad_B'"),
    Case("local: unknown storage", ["mlflow.up", "--storage", "nfs"], "unknown --storage 'nfs'"),
    Case("local: storage not up", ["mlflow.up", "--storage", "local-s3"], "run `invoke storage.up` first"),
    # ---- names, namespaces, modes, kubeconfigs
    Case(
        "invalid namespace",
        ["mlflow.up", "--bucket", "ws-frank", "--namespace", "Bad_NS"],
        "invalid namespace 'Bad_NS'",
        CREDS,
    ),
    Case("target: invalid namespace", ["target", "--namespace", "Bad_NS"], "invalid namespace 'Bad_NS'", CLUSTER),
    Case("invalid name", ["mlflow.up", "--bucket", "ws-frank", "--name", "My.Server"], "invalid service name", CREDS),
    Case("bad prefix", ["mlflow.up", "--bucket", "ws-frank", "--prefix", "a b"], "invalid artifact prefix", CREDS),
    Case("local: dry-run", ["mlflow.up", "--dry-run"], "--dry-run is for the cluster modes"),
    Case(
        "missing kubeconfig file",
        ["target"],
        "KUBECONFIG points to /nonexistent/config, which does not exist",
        {"KUBECONFIG": "/nonexistent/config"},
    ),
    Case("unknown mode", ["target", "--mode", "cluster"], "unknown mode 'cluster'"),
    Case("status: unknown mode", ["status", "--mode", "cluster"], "unknown mode 'cluster'"),
    Case("env: unknown mode", ["env", "--mode", "cluster"], "unknown mode 'cluster'"),
    Case("unreachable API: env", ["env"], UNREACHABLE, CLUSTER),
    Case("forward: timeout 0", ["forward.start", "--timeout", "0"], "--timeout 0: give seconds between 1 and 3600"),
    Case("unreachable API: forward", ["forward.start"], UNREACHABLE, CLUSTER),
    Case("forward.stop: unknown mode", ["forward.stop", "--mode", "cluster"], "unknown mode 'cluster'"),
    Case(
        "forward.status: invalid namespace", ["forward.status", "--namespace", "Bad_NS"], "invalid namespace 'Bad_NS'"
    ),
    Case("unknown mode with a cluster", ["target", "--mode", "kind"], "unknown mode 'kind'", CLUSTER),
    Case(
        "unknown context",
        ["target"],
        "context 'nope' is not in kubeconfig",
        {**CLUSTER, "INVOKE_TARGET_CONTEXT": "nope"},
    ),
    # ---- an unreachable API, task by task
    Case("unreachable API: target", ["target"], UNREACHABLE, CLUSTER),
    Case("unreachable API: up", ["up", "--bucket", "ws-frank"], UNREACHABLE, CREDS),
    Case("unreachable API: down", ["down"], UNREACHABLE, CLUSTER),
    Case("unreachable API: status", ["status"], UNREACHABLE, CLUSTER),
    Case("unreachable API: smoke", ["smoke"], UNREACHABLE, CLUSTER),
    Case(
        "unreachable API: mlflow.up",
        ["mlflow.up", "--bucket", "ws-frank"],
        f"{UNREACHABLE} at https://127.0.0.1:",
        CREDS,
    ),
    Case("unreachable API: mlflow.status", ["mlflow.status"], UNREACHABLE, CLUSTER),
    Case("unreachable API: mlflow.logs", ["mlflow.logs"], UNREACHABLE, CLUSTER),
    Case("unreachable API: dask.up", ["dask.up", "--workers", "2"], UNREACHABLE, CLUSTER),
    Case("unreachable API: dask.scale", ["dask.scale", "2"], UNREACHABLE, CLUSTER),
    Case("unreachable API: dask.dashboard", ["dask.dashboard"], UNREACHABLE, CLUSTER),
    Case("unreachable API: gateway.up", ["gateway.up", "--chart", str(STANDIN_CHART)], UNREACHABLE, CLUSTER),
    Case("unreachable API: gateway.status", ["gateway.status"], UNREACHABLE, CLUSTER),
    Case("unreachable API: storage.up", ["storage.up"], UNREACHABLE, {**CLUSTER, "INVOKE_TARGET_MODE": "namespace"}),
    Case("unreachable API: storage.status", ["storage.status"], UNREACHABLE, CLUSTER),
    # ---- whole-stack tasks in local mode
    Case(
        "local: up --only nope",
        ["up", "--only", "nope"],
        f"unknown service nope: choose from {', '.join(registry.names())}",
    ),
    Case("local: down --only nope", ["down", "--only", "nope"], "unknown service nope"),
    Case("local: up --workers -1", ["up", "--workers", "-1"], "--workers must be a whole number from 0 to 50"),
    Case("local: up --bucket Bad_B", ["up", "--bucket", "Bad_B"], "invalid bucket name 'Bad_B'"),
    Case(
        "local: smoke with nothing running", ["smoke"], "no service is deployed on this machine: run `invoke up` first"
    ),
    # ---- Dask, while a local Dask runs
    Case(
        "dask.up --workers -1",
        ["dask.up", "--workers", "-1"],
        "--workers must be a whole number from 0 to 50, got '-1'",
        running=True,
    ),
    Case(
        "dask.up --workers 100000",
        ["dask.up", "--workers", "100000"],
        "--workers must be a whole number from 0 to 50",
        running=True,
    ),
    Case(
        "dask.up --worker-memory lots",
        ["dask.up", "--worker-memory", "lots"],
        "--worker-memory 'lots' is not a memory quantity",
        running=True,
    ),
    Case(
        "dask.up --worker-cpu -1",
        ["dask.up", "--worker-cpu", "-1"],
        "--worker-cpu '-1' is not a CPU quantity",
        running=True,
    ),
    Case(
        "dask.up --worker-memory 100Mi",
        ["dask.up", "--worker-memory", "100Mi"],
        "too small for a Dask worker: give at least 256Mi",
        running=True,
    ),
    Case(
        "dask.up on a taken port",
        ["dask.up", "--port", "{storage}"],
        "port {storage} is already taken on 127.0.0.1",
        running=True,
    ),
    Case(
        "dask.scale -3",
        ["dask.scale", "-3"],
        "the worker count must be a whole number from 0 to 50, got '-3'",
        running=True,
    ),
    Case("dask.scale 51", ["dask.scale", "51"], "from 0 to 50, got '51'", running=True),
    Case("dask.scale lots", ["dask.scale", "lots"], "got 'lots'", running=True),
    Case("dask.down --name", ["dask.down", "--name", "Bad_Name"], "invalid Dask name 'Bad_Name'", running=True),
    Case("dask.status --name", ["dask.status", "--name", "9lives"], "invalid Dask name '9lives'", running=True),
    Case(
        "dask.smoke --timeout 0",
        ["dask.smoke", "--timeout", "0"],
        "--timeout must be a number of seconds from 1 to 3600",
        running=True,
    ),
    Case(
        "dask.smoke --in-cluster",
        ["dask.smoke", "--in-cluster"],
        "--in-cluster needs a Kubernetes cluster",
        running=True,
    ),
    Case("dask.logs --lines -5", ["dask.logs", "--lines", "-5"], "--lines '-5' is not a whole number", running=True),
    Case(
        "dask.dashboard, nothing running",
        ["dask.dashboard"],
        "the local Dask scheduler is not running: run `invoke dask.up` first",
    ),
    # ---- MLflow
    Case(
        "mlflow.up on a taken port",
        ["mlflow.up", "--port", "{scheduler}"],
        "port {scheduler} is already taken",
        running=True,
    ),
    Case(
        "mlflow.up on a privileged port",
        ["mlflow.up", "--port", "80"],
        "--port is '80': use a port from 1024 to 65535",
    ),
    Case("mlflow.down --name", ["mlflow.down", "--name", "Bad_Name"], "invalid service name 'Bad_Name'", running=True),
    Case("mlflow.status --name", ["mlflow.status", "--name", "Bad_Name"], "invalid service name 'Bad_Name'"),
    Case(
        "mlflow.smoke, nothing running",
        ["mlflow.smoke"],
        "mlflow is not running on this machine: run `invoke mlflow.up`",
    ),
    Case("mlflow.logs --lines lots", ["mlflow.logs", "--lines", "lots"], "--lines 'lots' is not a whole number"),
    # ---- MLflow's backend store, and its backups
    Case("mlflow.up --backend mysql", ["mlflow.up", "--backend", "mysql"], "unknown --backend 'mysql': use sqlite"),
    Case("mlflow.up --backend mysql, cluster", ["mlflow.up", "--backend", "mysql"], "unknown --backend 'mysql'", CREDS),
    Case(
        "mlflow.up --database with a space",
        ["mlflow.up", "--backend", "postgres", "--database", "a b"],
        "--database 'a b': name a database the platform declares",
    ),
    Case(
        "mlflow.up, a malformed DATABASE_URL",
        ["mlflow.up", "--backend", "postgres"],
        ("DATABASE_URL is not a usable PostgreSQL URL (no host)", "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"),
        {"DATABASE_URL": "postgresql://frank:pw-not-shown@/mlflow"},
    ),
    Case(
        "mlflow.up, several platform databases",
        ["mlflow.up", "--backend", "postgres"],
        "the platform declares several PostgreSQL databases (a/x, a/y)",
        {"POSTGRES_A_HOST": "h", "POSTGRES_A_USER": "u", "POSTGRES_A_DATABASES": "x,y"},
    ),
    Case(
        "mlflow.up, SQLite with 2 workers",
        ["mlflow.up"],
        "mlflow.workers is 2, but SQLite takes one worker",
        {"INVOKE_MLFLOW_WORKERS": "2"},
    ),
    Case(
        "mlflow.backup, nothing here", ["mlflow.backup"], "no MLflow database on this machine: run `invoke mlflow.up`"
    ),
    Case("mlflow.backup --name", ["mlflow.backup", "--name", "Bad_Name"], "invalid service name 'Bad_Name'"),
    Case(
        "mlflow.restore, nothing here",
        ["mlflow.restore", "--from", "mlflow-mlflow-20261130T000000Z.sqlite"],
        "no MLflow database on this machine",
    ),
    Case("mlflow.restore --name", ["mlflow.restore", "--name", "Bad_Name"], "invalid service name 'Bad_Name'"),
    # ---- storage, while the local S3 server runs
    Case(
        "storage.up on a taken port",
        ["storage.up", "--port", "{scheduler}"],
        "port {scheduler} is already taken",
        running=True,
    ),
    Case("storage.up --bucket", ["storage.up", "--bucket", "Bad_B"], "invalid bucket name 'Bad_B'", running=True),
    Case(
        "storage.down --name", ["storage.down", "--name", "Bad_Name"], "invalid service name 'Bad_Name'", running=True
    ),
    Case(
        "storage.status --name",
        ["storage.status", "--name", "Bad_Name"],
        "invalid service name 'Bad_Name'",
        running=True,
    ),
    Case(
        "storage.logs --lines lots",
        ["storage.logs", "--lines", "lots"],
        "--lines 'lots' is not a whole number",
        running=True,
    ),
    # ---- Gateway in local mode
    Case(
        "gateway.up, one port twice",
        ["gateway.up", "--port", "{free}", "--proxy-port", "{free}"],
        "are both {free}: give two different ports",
    ),
    Case("gateway.up --timeout 0", ["gateway.up", "--timeout", "0"], "invalid --timeout '0'"),
    Case("gateway.up --chart nope", ["gateway.up", "--chart", "nope"], "invalid chart 'nope'"),
    Case("gateway.down --timeout -1", ["gateway.down", "--timeout", "-1"], "invalid --timeout '-1'"),
    Case("gateway.status --release", ["gateway.status", "--release", "Bad_R"], "invalid release name 'Bad_R'"),
    Case(
        "gateway.smoke, nothing running",
        ["gateway.smoke"],
        "Dask Gateway is not running on this machine: run `invoke gateway.up`",
    ),
    Case("gateway.logs --lines lots", ["gateway.logs", "--lines", "lots"], "--lines 'lots' is not a whole number"),
    # ---- a malformed invoke.yaml, bad INVOKE_* variables
    Case(
        "invoke.yaml: not YAML",
        ["status"],
        ("cannot load the configuration", "invoke.yaml"),
        files={"invoke.yaml": "dask:\n  workers: [1\n"},
    ),
    Case(
        "invoke.yaml: a list",
        ["target"],
        ("cannot load the configuration", "fix invoke.yaml"),
        files={"invoke.yaml": "- dask\n- mlflow\n"},
    ),
    Case(
        "invoke.yaml: a section as a number",
        ["dask.up"],
        ("cannot load the configuration", "fix invoke.yaml"),
        files={"invoke.yaml": "dask: 3\n"},
    ),
    Case(
        "invoke.yaml: a word for seconds",
        ["mlflow.up"],
        "setting local.start_timeout is 'soon', which is not a number",
        files={"invoke.yaml": "local:\n  start_timeout: soon\n"},
    ),
    Case(
        "invoke.yaml: job execution as a word",
        ["mlflow.up"],
        "setting mlflow.job_execution is 'off please', which is not true or false: fix it in invoke.yaml or INVOKE_MLFLOW_JOB_EXECUTION",
        files={"invoke.yaml": "mlflow:\n  job_execution: off please\n"},
    ),
    Case(
        "invoke.yaml: memory limit 'lots'",
        ["dask.up"],
        "dask.worker_resources.limits.memory 'lots' is not a memory quantity",
        files={"invoke.yaml": "dask:\n  worker_resources:\n    limits: {memory: lots}\n"},
    ),
    Case(
        "invoke.yaml: cpu limit -1",
        ["dask.up"],
        "dask.worker_resources.limits.cpu '-1' is not a CPU quantity",
        files={"invoke.yaml": "dask:\n  worker_resources:\n    limits: {cpu: '-1'}\n"},
    ),
    Case(
        "INVOKE_DASK_WORKER_RESOURCES_LIMITS_MEMORY=lots",
        ["dask.up"],
        "limits.memory 'lots' is not a memory quantity",
        {"INVOKE_DASK_WORKER_RESOURCES_LIMITS_MEMORY": "lots"},
    ),
    Case(
        "INVOKE_DASK_WORKERS=-1",
        ["dask.up"],
        "dask.workers must be a whole number from 0 to 50",
        {"INVOKE_DASK_WORKERS": "-1"},
    ),
    Case(
        "INVOKE_LOCAL_START_TIMEOUT=soon",
        ["mlflow.up"],
        ("cannot load the configuration", "fix INVOKE_LOCAL_START_TIMEOUT"),
        {"INVOKE_LOCAL_START_TIMEOUT": "soon"},
    ),
]


def service_cases(services) -> list[Case]:
    """What every registered service gets, task by task: a bad namespace and an unknown mode, each one line."""
    cases = []
    for service in services:
        for name, task in sorted(service.collection.tasks.items()):
            if "namespace" not in task.argspec(task.body).parameters or task.positional:
                continue
            argv = [f"{service.name}.{name}"]
            cases += [
                Case(
                    f"{argv[0]}: invalid namespace",
                    [*argv, "--namespace", "Bad_NS"],
                    "invalid namespace 'Bad_NS'",
                    CLUSTER,
                ),
                Case(f"{argv[0]}: unknown mode", [*argv, "--mode", "cluster"], "unknown mode 'cluster'"),
            ]
    return cases


CASES += service_cases(registry.services())


# ---------------------------------------------------------------- state snapshots


def files_of(root: Path) -> dict[str, tuple]:
    """Every file and directory under root: (type, size, mtime); a changed file or a new entry shows."""
    found = {}
    for path in root.rglob("*"):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if path.suffix == ".log":
            # A running server logs the health probes a task makes (read-only): only its presence counts.
            found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), None, None)
            continue
        size = 0 if stat.S_ISDIR(info.st_mode) else info.st_size
        found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), size, info.st_mtime_ns)
    return found


def processes_of(root: Path) -> dict[int, str]:
    """pid -> command line of every process whose cwd or command line is under root."""
    inside = f"{root}{os.sep}"
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            raw = (proc / "cmdline").read_bytes()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if text and (cwd == str(root) or cwd.startswith(inside) or inside in text or f" {root} " in f" {text} "):
            found[int(proc.name)] = text
    return found


def snapshot(root: Path) -> dict:
    return {"files": files_of(root), "processes": processes_of(root)}


def stop_new_processes(before: dict, after: dict) -> None:
    """A failing case may have started servers: stop those (only those) so they do not outlive the test."""
    for pid in set(after["processes"]) - set(before["processes"]):
        try:
            os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# ---------------------------------------------------------------- running the CLI


def base_env(home: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), **QUIET_ENV}


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args], env={**base_env(cwd), **env}, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def unreachable_kubeconfig(folder: Path) -> str:
    path = folder / "unreachable.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": f"https://127.0.0.1:{free_port()}", "insecure-skip-tls-verify": True},
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


@dataclass
class Running:
    """A folder where `storage.up` and `dask.up --workers 1` run, with their ports and pids."""

    folder: Path
    ports: dict[str, int]
    pids: set[int]


def read_state(folder: Path, service: str, process: str) -> dict:
    return json.loads((folder / ".playbooks" / "local" / service / f"{process}.json").read_text())


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    folder = tmp_path_factory.mktemp("running")
    try:
        for args in (["storage.up"], ["dask.up", "--workers", "1"]):
            started = run(args, {}, folder, timeout=300)
            assert started.returncode == 0, started.stdout + started.stderr
        scheduler, storage = read_state(folder, "dask", "scheduler"), read_state(folder, "storage", "storage")
        worker = read_state(folder, "dask", "worker-0")
        ports = {
            "scheduler": scheduler["ports"]["tcp"],
            "dashboard": scheduler["ports"]["dashboard"],
            "storage": storage["ports"]["http"],
        }
        yield Running(folder, ports, {scheduler["pid"], storage["pid"], worker["pid"]})
    finally:
        run(["down"], {}, folder)
        run(["storage.down"], {}, folder)


# ---------------------------------------------------------------- the matrix


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(case: Case, request, tmp_path):
    assert not (case.running and case.files), "a case with files gets a folder of its own"
    if case.running:
        live: Running = request.getfixturevalue("running")
        folder, values = live.folder, {**live.ports}
    else:
        live, folder, values = None, tmp_path, {}
    values["free"] = free_port()
    env = {}
    for key, value in case.env.items():
        if value == "@unreachable":
            value = unreachable_kubeconfig(folder)
        elif value == "@s3":
            value = request.getfixturevalue("s3_server").env()[key]
        elif value == "@dead":
            value = f"http://127.0.0.1:{free_port()}"
        env[key] = value
    for name, text in case.files.items():
        (folder / name).write_text(text)
    args = [arg.format(**values) for arg in case.argv]
    fragments = [m.format(**values) for m in ((case.message,) if isinstance(case.message, str) else case.message)]

    before = snapshot(folder)
    if live is not None:
        assert live.pids <= set(before["processes"]), "the snapshot does not see the running servers: it proves nothing"
    try:
        result = run(args, env, folder)
    finally:
        after = snapshot(folder)
        stop_new_processes(before, after)

    one_error_line(result, fragments)
    assert after["processes"] == before["processes"], "processes were started or stopped"
    assert after["files"] == before["files"], "the state folder changed"


def test_the_snapshot_sees_a_change(running: Running):
    """The control: a good `dask.scale` shows in the snapshot, so an unchanged one means something."""
    before = snapshot(running.folder)
    scaled = run(["dask.scale", "2"], {}, running.folder)
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    after = snapshot(running.folder)
    assert after["processes"] != before["processes"] and after["files"] != before["files"]
    back = run(["dask.scale", "1"], {}, running.folder)
    assert back.returncode == 0, back.stdout + back.stderr
    assert set(snapshot(running.folder)["processes"]) == set(before["processes"])


def test_every_task_has_a_case():
    from playbooks.collection import ns
    from tests.e2e.test_bad_input_e2e import CASES as CLUSTER_CASES

    tasks = set(ns.task_names)
    covered = {case.argv[0] for case in CASES} | {case.argv[0] for case in CLUSTER_CASES}
    assert tasks - covered == set()
    count = re.search(r"holds (\d+) cases", __doc__)
    derived = service_cases(registry.services())
    assert count and int(count[1]) == len(CASES) - len(derived), "keep the count in the docstring true"
