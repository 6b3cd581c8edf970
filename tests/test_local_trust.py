"""Local mode you can trust (issue 12): each class of fault as a table, against real servers.

Every case asserts the message a user sees and that nothing foreign was signalled and nothing
lost: the processes with our marker (procs.marked) are counted per process, foreign
processes are checked alive afterwards, objects are read back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import invoke
import pytest
from botocore.config import Config

from playbooks import procs, security
from playbooks.config_check import config_problem
from playbooks.defaults import DEFAULTS
from playbooks.procs import free_port
from tests.conftest import QUIET_ENV, one_error_line
from tests.test_local_mode import ANY_PORT, CLI, run

pytestmark = pytest.mark.slow


def root_of(workdir: Path) -> Path:
    return workdir / ".playbooks" / "local"


def kill_marked(workdir: Path) -> None:
    for pid in procs.marked(root_of(workdir).resolve()):
        procs.signal_pid(pid, signal.SIGKILL)


def leaders(workdir: Path) -> dict[str, list[int]]:
    """ "<service>/<process>" -> the pids of its running process-group leaders (one per running copy)."""
    found: dict[str, list[int]] = {}
    for pid, label in procs.marked(root_of(workdir).resolve()).items():
        member = procs.identity(pid)
        if member is not None and member.pgid == pid:
            found.setdefault(label, []).append(pid)
    return found


def state_file(workdir: Path, service: str, name: str | None = None) -> Path:
    return root_of(workdir) / service / f"{name or service}.json"


def s3_client(workdir: Path):
    folder = root_of(workdir) / "storage"
    port = json.loads((folder / "ports.json").read_text())["storage"]["http"]
    return boto3.client(
        "s3",
        config=Config(signature_version="s3v4"),
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=(folder / "aws_access_key_id").read_text(),
        aws_secret_access_key=(folder / "aws_secret_access_key").read_text(),
        region_name="us-east-1",
    )


def wait_gone(pid: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while procs.identity(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs.identity(pid) is None, f"pid {pid} still runs"


def popen(workdir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    full = {"PATH": os.environ["PATH"], "HOME": str(workdir), **QUIET_ENV, **ANY_PORT, **(env or {})}
    return subprocess.Popen(
        [CLI, *args], cwd=workdir, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def foreign_group() -> tuple[int, subprocess.Popen]:
    """An unrelated program whose process group's leader is gone: (that group's id, a member)."""
    shell = subprocess.Popen(["setsid", "sh", "-c", "sleep 120 & echo $!; exit 0"], stdout=subprocess.PIPE, text=True)
    member = int(shell.stdout.readline())
    shell.wait()
    pgid = procs.identity(member).pgid
    wait_gone(pgid)
    return pgid, member


# ---------------------------------------------------------------- one writer at a time

CONCURRENT = [
    ("storage.up", ["storage/storage"]),
    ("dask.up --workers 1", ["dask/scheduler", "dask/worker-0"]),
]


@pytest.mark.parametrize("command, expected", CONCURRENT, ids=[case[0] for case in CONCURRENT])
def test_two_concurrent_ups_leave_exactly_one_set_of_processes(workdir, command, expected):
    first, second = popen(workdir, *command.split()), popen(workdir, *command.split())
    outputs = [p.communicate(timeout=240) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    text = "".join(out + err for out, err in outputs)
    assert "Traceback" not in text
    assert "local: waiting for pid " in text, text  # the second names the holder
    assert "which holds the state folder" in text
    running = leaders(workdir)
    assert {label: len(pids) for label, pids in running.items()} == dict.fromkeys(expected, 1), running
    down = run(workdir, command.split()[0].replace(".up", ".down"))
    assert down.returncode == 0, down.stderr
    assert leaders(workdir) == {}


def test_a_held_lock_times_out_with_the_holder_named_and_status_needs_no_lock(workdir):
    root = root_of(workdir)
    root.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(root / ".lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        result = run(workdir, "storage.up", env={"INVOKE_LOCAL_LOCK_TIMEOUT": "2"})
        assert time.monotonic() - started < 15
        line = one_error_line(result, (f"is still locked by pid {holder.pid} (python -c", "after 2s"))
        assert "local.lock_timeout" in line
        assert f"local: waiting for pid {holder.pid}" in result.stdout
        assert leaders(workdir) == {} and not state_file(workdir, "storage").exists()
        status = run(workdir, "status", timeout=20)  # reads only: no wait for the lock
        assert status.returncode == 0 and "waiting" not in status.stdout, status.stdout + status.stderr
        assert holder.poll() is None, "the holder is never signalled"
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- process identity


def _forge(workdir: Path, record: dict, pid: int, pgid: int, start_time: int) -> None:
    """The state file of a stopped server, its identity fields pointing at someone else."""
    state_file(workdir, "storage").write_text(
        json.dumps({**record, "pid": pid, "pgid": pgid, "start_time": start_time})
    )


IDENTITY = ["pid of an unrelated program", "group id of an unrelated group whose leader is gone"]


@pytest.mark.parametrize("case", IDENTITY)
def test_a_stale_pid_file_never_makes_a_foreign_process_ours(workdir, case):
    assert run(workdir, "storage.up").returncode == 0
    record = json.loads(state_file(workdir, "storage").read_text())
    assert run(workdir, "storage.down").returncode == 0
    if case == IDENTITY[0]:
        other = subprocess.Popen(["sleep", "120"], start_new_session=True)
        victim, recorded = other.pid, other.pid
        _forge(workdir, record, other.pid, other.pid, procs.identity(other.pid).start_time - 1)
    else:
        pgid, victim = foreign_group()
        recorded = pgid
        _forge(workdir, record, pgid, pgid, 12345)
    path = state_file(workdir, "storage")
    saved = path.read_text()
    try:
        status = run(workdir, "status")
        assert "Traceback" not in status.stdout + status.stderr
        why = f"PID {recorded} now belongs to another program" if case == IDENTITY[0] else f"process {recorded} is gone"
        assert why in status.stdout, status.stdout
        assert "processes it started still run" not in status.stdout, status.stdout
        path.write_text(saved)
        down = run(workdir, "down")
        path.write_text(saved)
        storage_down = run(workdir, "storage.down")
        assert down.returncode == 0 and storage_down.returncode == 0, down.stderr + storage_down.stderr
        assert "storage: nothing running" in storage_down.stdout, storage_down.stdout
        path.write_text(saved)
        up = run(workdir, "storage.up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "stale state" in up.stdout
        assert run(workdir, "storage.down").returncode == 0
        assert procs.identity(victim) is not None, f"{case}: the foreign process {victim} was signalled"
    finally:
        procs.signal_pid(victim, signal.SIGKILL)


# ---------------------------------------------------------------- damaged state files

CORRUPT = [
    ("storage", "storage", "truncated", lambda text: text[: len(text) // 2]),
    ("storage", "storage", "pid is a string", lambda text: text.replace('"pid": ', '"pid": "abc", "x": ', 1)),
    ("storage", "storage", "missing key", lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "pgid"})),
    ("storage", "storage", "a list", lambda text: "[1, 2]"),
    ("storage", "storage", "empty", lambda text: ""),
    ("dask", "worker-0", "truncated", lambda text: text[:40]),
]  # fmt: skip


@pytest.mark.parametrize("service, name, case, damage", CORRUPT, ids=[f"{c[1]}-{c[2]}" for c in CORRUPT])
def test_a_damaged_state_file_is_one_warning_and_never_a_duplicate(workdir, service, name, case, damage):
    up = ["storage.up"] if service == "storage" else ["dask.up", "--workers", "1"]
    assert run(workdir, *up).returncode == 0
    before = leaders(workdir)[f"{service}/{name}"]
    path = state_file(workdir, service, name)
    path.write_text(damage(path.read_text()))

    for args in (["status"], [f"{service}.status"], up):
        result = run(workdir, *args)
        output = result.stdout + result.stderr
        assert "Traceback" not in output, output
        assert output.count(f"warning: state file {path.resolve()}") == 1, output
        if args == up:
            assert result.returncode == 0, output
            assert "stopping process(es) of ours that no state file tracks" in output
    running = leaders(workdir)
    assert len(running[f"{service}/{name}"]) == 1, running  # never two copies (dask: "name taken")
    assert running[f"{service}/{name}"] != before
    assert all(procs.identity(pid) is None for pid in before)
    if service == "dask":
        status = run(workdir, "dask.status")
        assert "the scheduler counts 1 worker(s)" in status.stdout, status.stdout
    path.write_text(damage(path.read_text()))  # damaged again: down still finds it by its marker
    down = run(workdir, f"{service}.down")
    assert down.returncode == 0 and "Traceback" not in down.stderr, down.stdout + down.stderr
    assert leaders(workdir) == {}


# ---------------------------------------------------------------- read-only state folder


def test_a_read_only_state_folder_is_refused_before_anything_stops(workdir):
    assert run(workdir, "dask.up", "--workers", "1").returncode == 0
    running = leaders(workdir)
    states = {p: p.read_bytes() for p in (root_of(workdir) / "dask").glob("*.json")}
    # As root, permissions do not stop writes; a read-only bind mount does (EROFS), as it would for anyone.
    folder = str(root_of(workdir) / "dask")
    mount = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
                            f"cd {workdir} && exec env {' '.join(f'{k}={v}' for k, v in {**QUIET_ENV, **ANY_PORT}.items())} "
                            f"HOME={workdir} PATH={os.environ['PATH']} {CLI} down"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    if "mount" in mount.stderr and "error:" not in mount.stderr:
        pytest.skip(f"no mount namespace here: {mount.stderr.strip()}")
    one_error_line(mount, (f"the state folder {Path(folder).resolve()} is not writable", "nothing was changed"))
    assert leaders(workdir) == running, "nothing was stopped"
    assert {p: p.read_bytes() for p in (root_of(workdir) / "dask").glob("*.json")} == states
    assert run(workdir, "down").returncode == 0
    assert leaders(workdir) == {}


# ---------------------------------------------------------------- mode overrides

OVERRIDES = [
    ["down", "--mode", "vcluster"],
    ["down", "--mode", "namespace"],
    ["target", "--mode", "vcluster"],
    ["status", "--mode", "namespace"],
    ["up", "--mode", "namespace"],
    ["storage.down", "--mode", "vcluster"],
    ["mlflow.down", "--mode", "namespace"],
    ["dask.status", "--mode", "vcluster"],
]


@pytest.fixture(scope="module")
def running_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("override")
    assert run(folder, "storage.up").returncode == 0
    yield folder
    kill_marked(folder)


@pytest.mark.parametrize("args", OVERRIDES, ids=[" ".join(a) for a in OVERRIDES])
def test_a_cluster_mode_without_a_cluster_is_an_error_and_touches_nothing_local(running_store, args):
    before = leaders(running_store)
    result = run(running_store, *args)
    mode = args[-1]
    one_error_line(result, (f"--mode {mode} needs a Kubernetes cluster", "or use --mode local"))
    assert leaders(running_store) == before == {"storage/storage": before["storage/storage"]}


# ---------------------------------------------------------------- durable objects, privacy, stable addresses

RESTARTS = [  # how the store goes away before `storage.up`, and whether the objects stay
    ("storage.down", True),
    ("kill -9", True),
    ("down", True),  # the root task: leaves the store running and says so
    ("storage.down --purge", False),
]


@pytest.mark.parametrize("restart, kept", RESTARTS, ids=[r[0] for r in RESTARTS])
def test_objects_survive_a_restart_unless_purged_and_stay_private(workdir, restart, kept):
    assert run(workdir, "storage.up").returncode == 0
    client = s3_client(workdir)
    client.put_object(Bucket="datalab", Key="runs/model.bin", Body=b"weights" * 1000)
    url = client.generate_presigned_url("get_object", Params={"Bucket": "datalab", "Key": "runs/model.bin"})
    assert procs.http_ok(url)
    endpoint = client.meta.endpoint_url
    pid = leaders(workdir)["storage/storage"][0]
    if restart.startswith("kill"):
        os.killpg(pid, signal.SIGKILL)
        wait_gone(pid)
        crashed = run(workdir, "storage.status")
        assert crashed.returncode == 1 and "storage crashed" in crashed.stderr, crashed.stdout + crashed.stderr
    else:
        stop = run(workdir, *restart.split())
        assert stop.returncode == 0, stop.stderr
        if restart == "down":
            assert "storage: left running (pid " in stop.stdout and "`invoke storage.down` stops it" in stop.stdout
            assert run(workdir, "storage.down").returncode == 0
        elif kept:
            assert "storage: kept the objects in" in stop.stdout
    up = run(workdir, "storage.up")
    assert up.returncode == 0, up.stdout + up.stderr
    again = s3_client(workdir)
    if kept:  # --purge forgets the port too
        assert again.meta.endpoint_url == endpoint, "the address stays the same across down/up"
    keys = [o["Key"] for o in again.list_objects_v2(Bucket="datalab").get("Contents", [])]
    if kept:
        assert keys == ["runs/model.bin"]
        assert again.get_object(Bucket="datalab", Key="runs/model.bin")["Body"].read() == b"weights" * 1000
    else:
        assert keys == []
    # Private by default: folders 0700, files 0600, and no key in any log we keep.
    root = root_of(workdir)
    secrets = [(root / "storage" / name).read_text() for name in ("aws_access_key_id", "aws_secret_access_key")]
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"
        if path.suffix == ".log":
            assert not any(secret in path.read_text() for secret in secrets), path
    assert run(workdir, "storage.down", "--purge").returncode == 0


def test_ports_well_known_then_last_time_and_port_0_only_moves_a_stopped_service(workdir):
    well_known = free_port()
    env = {"INVOKE_LOCAL_PORTS_STORAGE": str(well_known)}
    steps = []
    first = run(workdir, "storage.up", env=env)
    steps.append(("well-known port when free", first, well_known))
    pid = leaders(workdir)["storage/storage"][0]
    again = run(workdir, "storage.up", "--port", "0", env=env)
    steps.append(("--port 0 on a running service keeps it", again, well_known))
    assert leaders(workdir)["storage/storage"] == [pid], "a healthy server is not restarted"
    assert run(workdir, "storage.down").returncode == 0
    moved = run(workdir, "storage.up", "--port", "0", env=env)
    port = json.loads((root_of(workdir) / "storage" / "ports.json").read_text())["storage"]["http"]
    steps.append(("--port 0 on a stopped service: any free port", moved, port))
    assert port != well_known
    assert run(workdir, "storage.down").returncode == 0
    steps.append(("then the port of last time, not the well-known one", run(workdir, "storage.up", env=env), port))
    for what, result, expected in steps:
        assert result.returncode == 0, (what, result.stderr)
        assert f"S3 endpoint http://127.0.0.1:{expected}," in result.stdout, (what, result.stdout)
    assert run(workdir, "storage.down").returncode == 0


# ---------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("args", [["mlflow.up"], ["up"]], ids=["mlflow.up", "up (threads)"])
def test_ctrl_c_during_a_start_ends_within_a_second_and_the_next_up_converges(workdir, args):
    start = popen(workdir, *args)
    deadline = time.monotonic() + 60
    while "mlflow/mlflow" not in leaders(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)  # MLflow takes several seconds before it answers
    sent = time.monotonic()
    start.send_signal(signal.SIGINT)
    out, err = start.communicate(timeout=30)
    took = time.monotonic() - sent
    assert took < 1.5, f"{args}: Ctrl-C took {took:.1f}s"
    assert start.returncode != 0
    assert "mlflow: interrupted while starting; left pid " in out, out + err
    converge = run(workdir, *args)
    assert converge.returncode == 0, converge.stdout + converge.stderr
    assert len(leaders(workdir)["mlflow/mlflow"]) == 1
    assert run(workdir, "down").returncode == 0
    assert leaders(workdir) == {}


# ---------------------------------------------------------------- strict configuration and bad flags

CONFIG = [
    ("mlflow: {prot: 1}", {}, ("setting mlflow.prot is not a known setting", "mlflow has backend, bucket")),
    ("local: {state_dir: 5}", {}, ("setting local.state_dir is 5, which is not a string",)),
    ("mlflow: [1, 2]", {}, ("cannot load the configuration", "fix invoke.yaml")),
    ("local: {ports: {mlflow: soon}}", {}, ("setting local.ports.mlflow is 'soon', which is not a number",)),
    ("", {"INVOKE_SECURITY_NETWORK_POLICY": "maybe"}, ("INVOKE_SECURITY_NETWORK_POLICY is 'maybe'", "true/false")),
    ("", {"INVOKE_MLFLOW_JOB_EXECUTION": "off"}, ("INVOKE_MLFLOW_JOB_EXECUTION is 'off'",)),
]


@pytest.mark.parametrize("program", ["playbooks", "invoke"])
@pytest.mark.parametrize("yaml_text, env, fragments", CONFIG, ids=[c[0] or next(iter(c[1])) for c in CONFIG])
def test_bad_configuration_is_one_error_line_under_both_programs(tmp_path, program, yaml_text, env, fragments):
    if yaml_text:
        (tmp_path / "invoke.yaml").write_text(yaml_text + "\n")
    (tmp_path / "tasks.py").write_text("from playbooks.collection import ns\n")
    binary = str(Path(CLI).with_name(program))
    # The tests' INVOKE_LOCAL_PORTS_* (QUIET_ENV) would override the invoke.yaml under test.
    quiet = {k: v for k, v in QUIET_ENV.items() if not k.startswith("INVOKE_LOCAL_PORTS_")}
    full = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **quiet, **env}
    result = subprocess.run([binary, "status"], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60)
    one_error_line(result, fragments)
    assert not (tmp_path / ".playbooks").exists(), "nothing ran"


@pytest.mark.parametrize(
    "raw, expected", [("true", True), ("false", False), ("1", True), ("0", False), ("yes", True), ("no", False)]
)
def test_environment_booleans_mean_what_they_say(monkeypatch, raw, expected):
    monkeypatch.setenv("INVOKE_SECURITY_NETWORK_POLICY", raw)
    config = invoke.Config(defaults={**invoke.Config.global_defaults(), **DEFAULTS})
    config.load_shell_env()
    assert config_problem(config) is None
    assert security.network_policy(invoke.Context(config)) is expected


FLAGS = [
    (["dask.up", "--worker-cpu", "999"], ("--worker-cpu 999 is more CPUs than this machine has",)),
    (["up", "--only", ""], ("unknown service '': choose from",)),
    (["down", "--only", ""], ("unknown service ''",)),
]


@pytest.mark.parametrize("args, fragments", FLAGS, ids=[" ".join(a[0]) for a in FLAGS])
def test_bad_flags_are_refused_before_anything_starts(workdir, args, fragments):
    one_error_line(run(workdir, *args), fragments)
    assert leaders(workdir) == {}
