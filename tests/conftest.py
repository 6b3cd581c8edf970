"""Real servers for the tests: an S3-protocol server (moto) and MLflow tracking servers, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from playbooks.procs import free_port, http_ok, start, stop_group, wait_until
from tests.fakes.kubectl import FakeKubectl

BIN = Path(sys.executable).parent
# Tools that scripts/setup.sh put in the virtual environment (helm, kubectl) come first.
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
ACCESS_KEY = "AKIAPLAYBOOKSTEST01"
SECRET_KEY = "s3cr3t-Pl4ybooks-t3st-v4lue-9f8e7d6c5b4a"
BUCKET = "ws-frank"

# No well-known ports in tests (local.ports): tests run side by side, and other runs on this
# machine may hold them; tests of the well-known ports set their own.
ANY_PORT = {
    f"INVOKE_{section}_PORTS_{key}": "0"
    for section in ("LOCAL", "FORWARD")
    for key in ("MLFLOW", "DASK", "DASK_DASHBOARD", "STORAGE", "GATEWAY", "GATEWAY_PROXY", "POSTGRES")
}
# No client may talk to an outside host from a test; every environment a test builds has these.
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", **ANY_PORT}


def one_error_line(result, fragments: tuple[str, ...] = ()) -> str:
    """Bad input's promise: exit code 1, no traceback, one `error: ` line holding every fragment."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    print(lines[0])  # pytest -rP shows each case's line
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch):
    for key, value in QUIET_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def fake_kubectl(tmp_path) -> FakeKubectl:
    """The strict fake kubectl (tests/fakes/kubectl.py): script each call the test expects; any other fails the test."""
    return FakeKubectl(tmp_path / "fake-kubectl")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A call the fake kubectl did not expect fails the test, even when the code under test swallowed its error."""
    result = yield
    fake = getattr(item, "funcargs", {}).get("fake_kubectl")
    if fake is not None:
        fake.check()
    return result


# ---------------------------------------------------------------- local mode: a working directory and its processes


def state(workdir: Path, service: str, name: str | None = None) -> dict:
    """The record local mode keeps of a running service (pid, ports, ...)."""
    return json.loads((workdir / ".playbooks" / "local" / service / f"{name or service}.json").read_text())


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie has)."""
    try:
        os.kill(pid, 0)
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return True


def processes_under(folder: Path) -> list[int]:
    """Live processes whose working directory is in folder (the services and whatever they started)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(proc / "cwd")).is_relative_to(folder):
                found.append(int(proc.name))
        except OSError:
            continue
    return [pid for pid in found if not gone(pid)]


def kill_leftovers(workdir: Path) -> None:
    """Whatever a failed test left running: the recorded processes' groups, the processes that carry
    the state folder's marker, then whatever runs in workdir."""
    from playbooks.procs import marked

    root = workdir / ".playbooks" / "local"
    pids = []
    for path in root.glob("*/*.json"):
        try:
            pids.append(json.loads(path.read_text()).get("pid"))
        except (OSError, ValueError, AttributeError):
            continue  # a state file a test damaged on purpose
    pids += list(marked(root.resolve()))
    for pid in [p for p in pids if isinstance(p, int)] + processes_under(workdir):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def workdir(tmp_path):
    """The working directory of a local-mode run; whatever it left running is killed after the test."""
    yield tmp_path
    kill_leftovers(tmp_path)


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )


@contextmanager
def serve_s3(host: str, folder: Path) -> Iterator[S3Server]:
    """A real S3-protocol server (moto's server mode) on host, with the workspace bucket."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    log = folder / "moto.log"
    process = start([tool("moto_server"), "-H", host, "-p", str(port)], {**os.environ, **QUIET_ENV}, log)
    server = S3Server(f"http://{host}:{port}", BUCKET)
    try:
        wait_until(lambda: http_ok(f"{server.endpoint}/moto-api/"), 30, "moto_server", process, log)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        stop_group(process.pid)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server on 127.0.0.1 with the workspace bucket."""
    with serve_s3("127.0.0.1", tmp_path_factory.mktemp("moto")) as server:
        yield server


@dataclass
class MlflowServer:
    url: str
    bucket: str
    prefix: str
    log: Path


def start_mlflow(
    tmp: Path, s3: S3Server, prefix: str, allowed_hosts: str | None = None, database: dict | None = None
) -> tuple:
    """database: MLFLOW_BACKEND_STORE_URI and PGPASSWORD of a PostgreSQL one (default: SQLite in tmp)."""
    port = free_port()
    log = tmp / "mlflow.log"
    argv = [
        tool("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--serve-artifacts", "--artifacts-destination", f"s3://{s3.bucket}/{prefix}",
    ]  # fmt: skip
    if allowed_hosts:
        argv += ["--allowed-hosts", allowed_hosts]
    # As the playbooks run it: no job consumers (~135-245 MB each, slow to stop).
    env = {
        **os.environ,
        **QUIET_ENV,
        **s3.env(),
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # As the playbooks give it: the URI in the environment, not on the command line.
        **(database or {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp / 'mlflow.db'}"}),
    }
    process = start(argv, env, log, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/health"), 90, "mlflow server", process, log)
    except BaseException:
        stop_group(process.pid)
        raise
    return process, MlflowServer(url, s3.bucket, prefix, log)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, s3_server):
    """A real `mlflow server`: SQLite, --serve-artifacts to the moto bucket."""
    process, server = start_mlflow(tmp_path_factory.mktemp("mlflow"), s3_server, "mlflow")
    yield server
    stop_group(process.pid)


@pytest.fixture(scope="session")
def pg_session(tmp_path_factory):
    """One real PostgreSQL server for the session's tests (tests/pgserver.py)."""
    from tests.pgserver import pg_server

    with pg_server(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_pg_server(tmp_path_factory, s3_server, pg_session):
    """A real `mlflow server` on PostgreSQL (its own database), --serve-artifacts to the moto bucket."""
    pg_session.create_database("roundtrip")
    database = {
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{pg_session.user}@127.0.0.1:{pg_session.port}/roundtrip",
        "PGPASSWORD": pg_session.password,
    }
    process, server = start_mlflow(tmp_path_factory.mktemp("mlflow-pg"), s3_server, "mlflow-pg", database=database)
    yield server
    stop_group(process.pid)


@pytest.fixture(scope="session")
def strict_mlflow_server(tmp_path_factory, s3_server):
    """A real server whose --allowed-hosts does not include the address the client uses."""
    process, server = start_mlflow(
        tmp_path_factory.mktemp("mlflow-strict"), s3_server, "strict", allowed_hosts="mlflow.example,mlflow.example:*"
    )
    yield server
    stop_group(process.pid)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real Dask scheduler with one real worker."""
    from tests.test_dask_check import start_scheduler, start_worker

    tmp = tmp_path_factory.mktemp("dask")
    scheduler_process, scheduler = start_scheduler(tmp)
    try:
        worker_process = start_worker(tmp, scheduler)
        try:
            yield scheduler
        finally:
            stop_group(worker_process.pid)
    finally:
        stop_group(scheduler_process.pid)


def pytest_addoption(parser):
    group = parser.getgroup("e2e", "end-to-end tests on real Kubernetes")
    group.addoption(
        "--provider",
        default="auto",
        choices=["auto", "envtest", "kind", "existing"],
        help="where the e2e tests get Kubernetes (default: the first one available)",
    )
    group.addoption("--kubeconfig", default=None, help="kubeconfig of the existing provider")
    group.addoption("--keep-cluster", action="store_true", help="keep the kind cluster after the run")


@pytest.fixture
def pg(tmp_path):
    """A real PostgreSQL server (tests/pgserver.py): user and database `mlflow`, a password, a free port."""
    from tests.pgserver import pg_server

    with pg_server(tmp_path) as server:
        yield server
