"""Secret scan over every local-mode task: planted and generated secrets never reach a command
line (sampled from /proc while the tasks run, servers included), a task's output, or a file
of the state folder other than the 0600 files meant to hold them."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import QUIET_ENV, processes_under, state
from tests.secret_scan import ArgvScan, file_leaks, output_texts, planted, text_leaks

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "playbooks")
REFUSED = "--dry-run is for the cluster modes"


class Runner:
    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir, self.env = workdir, env
        self.results: list[tuple[str, subprocess.CompletedProcess]] = []

    def __call__(self, *args: str, ok: bool = True, timeout: float = 240) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [CLI, *args], cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        self.results.append((" ".join(args), result))
        if ok:
            assert result.returncode == 0, f"playbooks {' '.join(args)}\n{result.stdout}{result.stderr}"
        return result

    def refused(self, *args: str) -> None:
        result = self(*args, ok=False, timeout=60)
        assert result.returncode == 1 and REFUSED in result.stderr, f"{args}: {result.stdout}{result.stderr}"
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def environ(pid: int) -> str:
    return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")


def test_no_secret_in_argv_output_or_files_of_any_local_task(workdir, s3_server):
    secrets = planted("local")
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir), **QUIET_ENV, **secrets,
           "AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_REGION": "us-east-1", "WORKSHOP_NAMESPACE": s3_server.bucket}  # fmt: skip
    run = Runner(workdir, env)
    folder = workdir / ".playbooks/local"
    with ArgvScan() as argv:
        run("target", "up", "smoke", "status")  # MLflow on the planted S3 credentials, and Dask
        mlflow_pid = state(workdir, "mlflow")["pid"]
        assert secrets["AWS_SECRET_ACCESS_KEY"] in environ(mlflow_pid), (
            "the planted secret is in play (in the server's environment)"
        )

        # Its own bucket: with WORKSHOP_NAMESPACE's, mlflow.smoke would look for the artifact in this store.
        run(
            "storage.up",
            "--bucket",
            "scan-store",
            "storage.status",
            "storage.logs",
            "gateway.up",
            "gateway.status",
            "gateway.smoke",
            "gateway.logs",
        )
        creds = json.loads((folder / "storage/credentials.json").read_text())
        secrets |= {f"storage {k}": v for k, v in creds.items()}
        secrets["gateway password"] = (folder / "gateway/password").read_text().strip()
        shown = run("gateway.status", "--show-password")  # asked for: the one output that may show it
        run.results.pop()
        assert secrets["gateway password"] in shown.stdout, "the scanned password is the real one"

        # The server keeps the planted credentials (a restart onto the store's adds a minute under load, nothing new:
        # both reach it the same way); the store's credentials are in play in storage.up's own client.
        run("mlflow.up", "mlflow.status", "mlflow.smoke", "mlflow.logs")
        assert state(workdir, "mlflow")["pid"] == mlflow_pid
        run("dask.status", "dask.scale", "1", "dask.smoke", "dask.logs", "dask.dashboard", "dask.up", "--workers", "2")

        for args in (["up", "--dry-run"], ["mlflow.up", "--dry-run"], ["dask.up", "--dry-run"], ["gateway.up", "--dry-run"],
                     ["storage.up", "--dry-run"], ["down", "--purge", "--dry-run"], ["mlflow.down", "--purge", "--dry-run"],
                     ["dask.down", "--dry-run"], ["dask.scale", "3", "--dry-run"], ["gateway.down", "--purge", "--dry-run"],
                     ["storage.down", "--purge", "--dry-run"]):  # fmt: skip
            run.refused(*args)
        assert state(workdir, "mlflow")["pid"] and (folder / "mlflow/mlflow.db").exists(), (
            "a refused dry-run changed nothing"
        )

        run("down", "storage.down", "status")
        holders = [
            folder / "storage" / name for name in ("credentials.json", "aws_access_key_id", "aws_secret_access_key")
        ]
        holders += [folder / "gateway/password"]
        assert (
            stat.S_IMODE((folder / "gateway/config.py").stat().st_mode) == 0o600
        )  # scanned too: it reads the password file
        problems, scanned = file_leaks(folder, secrets, holders)
        run("down", "--purge", "storage.down", "--purge", "gateway.down", "--purge")

    assert not processes_under(workdir), "down stopped everything"
    left = sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.is_relative_to(folder / "dask")
    )
    # The lock file stays: deleting a lock others may be waiting on would let two writers in.
    assert left == [".lock"], "down --purge leaves only Dask's logs and scratch, and the empty lock file"
    assert (folder / ".lock").stat().st_size == 0
    # The scan proves something only if it saw the processes the tasks ran.
    for parts in (["mlflow", "server", "--serve-artifacts"], ["dask", "scheduler"], ["dask", "worker"],
                  ["dask-gateway-server", "--config"], ["dask-gateway-proxy"], ["moto_server"], [CLI, "gateway.smoke"]):  # fmt: skip
        assert argv.saw(*parts), f"the scan never saw {' '.join(parts)!r} in {argv.sweeps} sweeps"
    assert {"mlflow.log", "scheduler.log", "worker-0.log", "gateway.log", "storage.log", "mlflow.db", "config.py"} <= {
        p.name for p in scanned
    }
    assert argv.leaks(secrets) == []
    assert text_leaks(output_texts(run.results), secrets) == []
    assert problems == []


def test_the_scanner_finds_a_planted_leak(tmp_path):
    """The scan can fail: a secret on a command line, in an output, in a file or a holder not 0600."""
    secrets = planted("self")
    value = secrets["AWS_SECRET_ACCESS_KEY"]
    with ArgvScan() as argv:
        child = subprocess.run(
            [sys.executable, "-c", "import time; time.sleep(0.3)", value], capture_output=True, text=True
        )
    assert child.returncode == 0
    assert argv.leaks(secrets) and argv.leaks(secrets)[0].startswith("AWS_SECRET_ACCESS_KEY in argv: ")
    assert text_leaks({"out": f"key={value}"}, secrets) == ["AWS_SECRET_ACCESS_KEY in out"]
    (tmp_path / "app.log").write_text(f"using {value}\n")
    holder = tmp_path / "secret"
    holder.write_text(value)
    holder.chmod(0o644)
    problems, scanned = file_leaks(tmp_path, secrets, [holder])
    assert scanned == [tmp_path / "app.log"]
    assert set(problems) == {
        f"{holder} holds a secret with mode 644, not 600",
        f"AWS_SECRET_ACCESS_KEY in {tmp_path / 'app.log'}",
    }
