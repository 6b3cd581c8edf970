"""postgres: the manifests and their contract, the pod's start script run for real, and local mode end to
end against a real PostgreSQL server (Debian's packages here, else whatever postgres_local finds).

PostgreSQL refuses to run as root: where the tests run as root, the servers and the CLI runs that start
them run as `nobody`, in a folder of its own.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from playbooks import registry
from playbooks.errors import PlaybookError
from playbooks.procs import free_port, stop_group
from playbooks.render import redacted, to_yaml
from playbooks.services import postgres_cluster, postgres_local
from playbooks.services.postgres_local import Connection
from tests.conftest import QUIET_ENV, kill_leftovers, one_error_line
from tests.manifests import FakeContext, config, target, validate_all
from tests.secret_scan import ArgvScan, file_leaks, output_texts, text_leaks

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "playbooks")


def binaries() -> Path | None:
    try:
        return postgres_local.bin_dir(FakeContext(config()))[0]
    except PlaybookError:
        return None


needs_server = pytest.mark.skipif(binaries() is None, reason=f"no PostgreSQL server here: {postgres_local.INSTALL}")


def as_user() -> list[str]:
    """The prefix that runs a command as a user PostgreSQL accepts: nobody when we are root."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def home():
    """A working folder the (possibly unprivileged) servers may write; whatever runs there is killed after."""
    folder = Path(tempfile.mkdtemp(prefix="pb-pg-"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    yield folder
    kill_leftovers(folder)
    shutil.rmtree(folder, ignore_errors=True)


def cli(folder: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    environment = {
        "PATH": os.environ["PATH"], "HOME": str(folder), "PYTHONPATH": str(ROOT), **QUIET_ENV,
        "INVOKE_LOCAL_PORTS_POSTGRES": "0", **(env or {}),
    }  # fmt: skip
    return subprocess.run(
        [*as_user(), CLI, *args], cwd=folder, env=environment, capture_output=True, text=True, timeout=timeout
    )


def ctx(folder: Path) -> FakeContext:
    return FakeContext(config({"local": {"state_dir": str(folder / ".playbooks" / "local")}}))


def query(found: Connection, sql: str, **params) -> list:
    import pg8000.native

    connection = pg8000.native.Connection(
        found.user, host=found.host, port=found.port, database=found.dbname,
        password=found.password_file.read_text().strip(), timeout=10,
    )  # fmt: skip
    try:
        return connection.run(sql, **params)
    finally:
        connection.close()


# ---------------------------------------------------------------- manifests


def docs(mode: str = "namespace", overrides=None) -> dict[str, dict]:
    c = FakeContext(config(overrides))
    plan = postgres_cluster.build_plan(c, target(mode), "postgres", "pw-planted-123")
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in plan.docs}


@pytest.mark.parametrize("mode", ["namespace", "vcluster"])
def test_the_manifests_are_valid_and_keep_the_contract(mode):
    found = docs(mode)
    validate_all(list(found.values()))
    assert set(found) == {
        "Secret/postgres-app", "ConfigMap/postgres-config", "PersistentVolumeClaim/postgres-data",
        "Service/postgres", "StatefulSet/postgres",
    }  # fmt: skip
    secret = postgres_cluster.app_values(FakeContext(config()), "postgres", "pw-planted-123")
    assert secret == {"username": "mlflow", "password": "pw-planted-123", "dbname": "mlflow", "host": "postgres",
                      "port": "5432"}  # fmt: skip
    service = found["Service/postgres"]
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"][0]["port"] == 5432
    for doc in found.values():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "postgres" and labels["app.kubernetes.io/instance"] == "postgres"
        assert labels["app.kubernetes.io/managed-by"] == "datalab-playbooks"
    sts = found["StatefulSet/postgres"]["spec"]
    pod = sts["template"]["spec"]
    [container] = pod["containers"]
    assert sts["replicas"] == 1 and "volumeClaimTemplates" not in sts
    assert container["image"].startswith("docker.io/library/postgres:16.")
    assert container["command"] == ["sh", "/etc/postgres/config/start.sh"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready"
    assert pod["enableServiceLinks"] is False and pod["securityContext"]["fsGroup"] == 1000
    assert container["resources"]["limits"] == {"cpu": "250m", "memory": "256Mi"}
    # The password reaches the pod only as a mounted file.
    assert "pw-planted-123" not in to_yaml([found["StatefulSet/postgres"], found["ConfigMap/postgres-config"]])
    assert "pw-planted-123" not in to_yaml(redacted(list(found.values())))
    passwd = found["ConfigMap/postgres-config"]["data"]["passwd"]
    assert passwd.startswith("postgres:x:1000:1000:")


def test_a_changed_setting_rolls_the_pod_and_bad_settings_are_one_line():
    before = docs()["StatefulSet/postgres"]["spec"]["template"]["metadata"]["annotations"]
    after = docs(overrides={"postgres": {"shared_buffers": "32MB"}})["StatefulSet/postgres"]["spec"]["template"]
    assert after["metadata"]["annotations"] != before
    assert (
        "shared_buffers=32MB"
        in docs(overrides={"postgres": {"shared_buffers": "32MB"}})["ConfigMap/postgres-config"]["data"]["start.sh"]
    )
    for overrides, words in [
        ({"postgres": {"user": "Robert'); DROP"}}, "setting postgres.user is"),
        ({"postgres": {"database": "1abc"}}, "setting postgres.database is"),
        ({"postgres": {"shared_buffers": "lots"}}, "postgres.shared_buffers"),
        ({"postgres": {"max_connections": 2}}, "postgres.max_connections"),
    ]:
        with pytest.raises(PlaybookError, match=re.escape(words)):
            docs(overrides=overrides)
    for uid in (None, 0):
        with pytest.raises(PlaybookError, match=r"postgres needs security\.pod\.runAsUser set to a non-root uid"):
            postgres_cluster.pod_user(FakeContext(config({"security": {"pod": {"runAsUser": uid}}})))


def test_the_registry_starts_it_only_when_named_and_stops_it_with_the_others():
    names = registry.names()
    assert names.index("storage") < names.index("postgres") < names.index("mlflow")
    postgres = registry.get("postgres")
    for mode in ("namespace", "vcluster", "local"):
        assert postgres not in registry.choose(None, mode, "up")
        assert postgres in registry.choose(None, mode, "down")
        assert postgres in registry.choose("postgres", mode, "up")


# ---------------------------------------------------------------- the pod's start script, run here


@needs_server
def test_the_start_script_initialises_once_and_keeps_the_data(home):
    """The script of the ConfigMap, with its paths moved into a folder here: initdb with --pwfile, the database
    created, postgres exec'd; a second start keeps the data; a folder of something else is refused."""
    c = FakeContext(config())
    port = free_port()
    script = postgres_cluster.start_script(c)
    script = script.replace("/etc/postgres/config/pg_hba.conf", str(home / "pg_hba.conf"))
    script = script.replace("unix_socket_directories=/tmp", f"unix_socket_directories={home}")
    script = script.replace("port=5432", f"port={port}")
    hba = yaml.safe_load((ROOT / "manifests/postgres/20-configmap.yaml").read_text())["data"]["pg_hba.conf"]
    secret = "pw-" + os.urandom(8).hex()
    for name, text in {"start.sh": script, "pg_hba.conf": hba, "password": secret}.items():
        (home / name).write_text(text)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "nobody:nogroup", str(home)], check=True)
    (home / "data").mkdir()
    (home / "data").chmod(0o777)  # as the lab's volumes are
    env = {
        "PATH": f"{binaries()}:{os.environ['PATH']}", "PGDATA": str(home / "data" / "pgdata"),
        "POSTGRES_USER_NAME": "mlflow", "POSTGRES_DATABASE": "mlflow", "PASSWORD_FILE": str(home / "password"),
        "HOME": str(home),
    }  # fmt: skip
    found = Connection("127.0.0.1", port, "mlflow", "mlflow", home / "password")

    def start(log: str) -> subprocess.Popen:
        out = open(home / log, "wb")  # noqa: SIM115  closed with the process
        return subprocess.Popen(
            [*as_user(), "sh", str(home / "start.sh")], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def ready(process: subprocess.Popen, log: str) -> None:
        deadline = time.monotonic() + 60
        while not postgres_local.ready(binaries(), port, "mlflow", "mlflow"):
            assert process.poll() is None and time.monotonic() < deadline, (home / log).read_text()
            time.sleep(0.2)

    with ArgvScan() as argv:
        first = start("first.log")
        try:
            ready(first, "first.log")
            query(found, "CREATE TABLE kept (note text)")
            query(found, "INSERT INTO kept VALUES (:note)", note="kept")
        finally:
            if first.poll() is None:
                os.kill(first.pid, signal.SIGINT)  # what the preStop hook's pg_ctl stop -m fast sends
            first.wait(30)
    assert argv.saw("initdb", "--pwfile"), "the scan saw no initdb: it proves nothing"
    assert argv.leaks({"password": secret}) == []
    assert "initialising a new database cluster" in (home / "first.log").read_text()
    assert not (home / "data" / "pgdata.init").exists()

    second = start("second.log")
    try:
        ready(second, "second.log")
        assert query(found, "SELECT note FROM kept") == [["kept"]]
    finally:
        stop_group(second.pid)
    assert "initialising" not in (home / "second.log").read_text()

    shutil.rmtree(home / "data" / "pgdata")
    (home / "data" / "pgdata").mkdir()
    (home / "data" / "pgdata" / "something-else").write_text("x")
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "nobody:nogroup", str(home / "data")], check=True)
    third = start("third.log")
    assert third.wait(30) == 1
    assert "holds files but no database" in (home / "third.log").read_text()


# ---------------------------------------------------------------- local mode


@needs_server
def test_local_postgres_end_to_end(home):
    """up, status, smoke, env, the connection contract; a row kept across down and up; --purge leaves nothing."""
    c = ctx(home)
    with ArgvScan() as argv:
        up = cli(home, "postgres.up")
        assert up.returncode == 0, up.stdout + up.stderr
        status = cli(home, "postgres.status")
        smoke = cli(home, "postgres.smoke")
        table = cli(home, "status")
        env = cli(home, "env")
    assert argv.saw("postgres", "-D", "listen_addresses=127.0.0.1"), "the scan saw no server: it proves nothing"
    secret = postgres_local.password_file(c).read_text().strip()
    assert argv.leaks({"password": secret}) == []
    results = [("up", up), ("status", status), ("smoke", smoke), ("table", table), ("env", env)]
    assert text_leaks(output_texts(results), {"password": secret}) == []
    holders = [postgres_local.password_file(c), postgres_local.pgpass_file(c)]
    leaks, scanned = file_leaks(home / ".playbooks", {"password": secret}, holders)
    assert leaks == [] and scanned
    assert status.returncode == 0 and "postgres: healthy" in status.stdout, status.stdout + status.stderr
    assert smoke.returncode == 0 and "postgres: PASS" in smoke.stdout, smoke.stdout + smoke.stderr
    assert "a wrong password is refused" in smoke.stdout
    assert re.search(r"^postgres\s+postgres\s+healthy \(pid \d+\)\s+postgresql://127\.0\.0\.1:\d+$", table.stdout, re.M)

    found = postgres_local.connection(c)
    assert found is not None and (found.host, found.user, found.dbname) == ("127.0.0.1", "mlflow", "mlflow")
    assert f"export PGPORT={found.port}" in env.stdout and f"PGPASSFILE={postgres_local.pgpass_file(c)}" in env.stdout
    assert oct(found.password_file.stat().st_mode & 0o777) == "0o600"
    query(found, "CREATE TABLE kept (note text)")
    query(found, "INSERT INTO kept VALUES ('across down and up')")
    # The server listens on 127.0.0.1 only, its socket in the state folder.
    assert list(postgres_local.folder(c).glob(".s.PGSQL.*"))

    again = cli(home, "postgres.up")
    assert again.returncode == 0 and "no change" in again.stdout, again.stdout + again.stderr

    down = cli(home, "down")
    assert down.returncode == 0 and "postgres: stopped postgres (pid" in down.stdout, down.stdout + down.stderr
    assert "kept the database" in down.stdout
    assert postgres_local.connection(c) is None
    assert "database system is shut down" in postgres_local.logs(c, 5)

    back = cli(home, "postgres.up")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "initialising" not in back.stdout
    found = postgres_local.connection(c)
    assert found.port == int(re.search(r"127\.0\.0\.1:(\d+)/", back.stdout).group(1))
    assert query(found, "SELECT note FROM kept") == [["across down and up"]]

    purge = cli(home, "postgres.down", "--purge")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not postgres_local.folder(c).exists()
    assert cli(home, "postgres.smoke").returncode == 1


@needs_server
def test_local_refusals_change_nothing(home):
    """Settings or a lost password that do not match the kept database: one line, nothing changed."""
    c = ctx(home)
    assert cli(home, "postgres.up").returncode == 0
    assert cli(home, "postgres.down").returncode == 0

    def snapshot() -> dict:
        return {str(p): p.stat().st_mtime_ns for p in postgres_local.folder(c).rglob("*") if p.suffix != ".log"}

    before = snapshot()
    one_error_line(cli(home, "postgres.up", env={"INVOKE_POSTGRES_USER": "alice"}),
                   ("postgres.user is 'alice'", "made with 'mlflow'", "--purge"))  # fmt: skip
    one_error_line(cli(home, "postgres.up", env={"INVOKE_POSTGRES_SHARED_BUFFERS": "plenty"}),
                   ("postgres.shared_buffers",))  # fmt: skip
    one_error_line(cli(home, "postgres.up", "--port", "80"), ("--port is '80'",))
    one_error_line(cli(home, "postgres.up", env={"INVOKE_POSTGRES_BIN_DIR": str(home)}),
                   ("postgres.bin_dir", "lacks postgres, initdb, pg_isready"))  # fmt: skip
    assert snapshot() == before
    postgres_local.password_file(c).unlink()
    before = snapshot()
    one_error_line(cli(home, "postgres.up"), ("made with the password in", "which is gone", "--purge"))
    assert snapshot() == before and postgres_local.connection(c) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root is refused")
def test_as_root_local_postgres_is_refused_in_one_line(tmp_path):
    result = subprocess.run(
        [CLI, "postgres.up"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **QUIET_ENV, "INVOKE_LOCAL_PORTS_POSTGRES": "0"},
    )  # fmt: skip
    one_error_line(result, ("PostgreSQL refuses to run as root",))
    assert not (tmp_path / ".playbooks").exists()


def test_the_binaries_are_looked_for_in_order(monkeypatch, tmp_path):
    c = FakeContext(config())
    wheel = tmp_path / "site" / "pgserver"
    (wheel / "pginstall" / "bin").mkdir(parents=True)
    (wheel / "__init__.py").write_text("")

    class Spec:
        origin = str(wheel / "__init__.py")

    monkeypatch.setattr("importlib.util.find_spec", lambda name: Spec() if name == "pgserver" else None)
    found = postgres_local.candidates(c)
    assert found[-1] == (wheel / "pginstall" / "bin", "the pgserver wheel")
    debian = [path for path, origin in found if origin == "Debian's packages"]
    assert debian == sorted(debian, key=postgres_local._version, reverse=True)
    for name in postgres_local.REQUIRED:
        (wheel / "pginstall" / "bin" / name).write_text("#!/bin/sh\n")
        (wheel / "pginstall" / "bin" / name).chmod(0o755)
    monkeypatch.setattr(postgres_local, "candidates", lambda c: [(tmp_path / "nothing", "x"), *found[-1:]])
    assert postgres_local.bin_dir(c) == (wheel / "pginstall" / "bin", "the pgserver wheel")
    monkeypatch.setattr(postgres_local, "candidates", lambda c: [])
    with pytest.raises(PlaybookError, match="no PostgreSQL server found"):
        postgres_local.bin_dir(c)
