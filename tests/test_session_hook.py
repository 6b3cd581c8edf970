"""A session's start-up hook, `env` and `--json`, for real in local mode: the CLI starts real servers on 127.0.0.1.

The snippet is README's, run by bash as a start-up script would run it: twice, with its output
and exit codes checked; the variables it exports are then used by the real clients with no argument.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import QUIET_ENV, one_error_line, state
from tests.test_local_mode import ANY_PORT, CLI, run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)
# README, "A session's start-up script": keep the two identical.
SNIPPET = 'playbooks up --quiet --deadline 300 && playbooks forward --quiet && eval "$(playbooks env)"'


def schema(task: str) -> dict:
    return json.loads((ROOT / "docs" / "schemas" / f"{task}.v1.json").read_text())


def document(result: subprocess.CompletedProcess, task: str) -> dict:
    """--json's promise: stdout is exactly one JSON document, valid against the task's schema."""
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, schema(task))
    assert doc["schema"] == f"datalab-playbooks/{task}/v1"
    return doc


def shell(workdir: Path, script: str, timeout: float = 400) -> subprocess.CompletedProcess:
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(workdir),
        "TMPDIR": str(tmp),
        **QUIET_ENV,
        **ANY_PORT,
    }
    return subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


# Run by the shell after the snippet: the clients find the services from the environment alone.
CLIENTS = f"""{sys.executable} - <<'PY'
import os
from distributed import Client
from mlflow import MlflowClient
with Client(timeout=20) as client:  # no address: DASK_SCHEDULER_ADDRESS
    print("dask", client.scheduler.address, client.submit(sum, [1, 2, 3]).result())
print("mlflow", MlflowClient().tracking_uri, len(MlflowClient().search_experiments()))  # no URI: MLFLOW_TRACKING_URI
print("dashboard", os.environ["DASK_DASHBOARD_URL"])
PY"""


def test_start_up_snippet_twice_then_env_json_and_smoke(workdir):
    first = shell(workdir, f"{SNIPPET} && {CLIENTS}")
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 2, first.stderr
    assert lines[0].startswith("up: mlflow, dask up on this machine; started or changed: dask, mlflow in "), lines[0]
    mlflow, scheduler = state(workdir, "mlflow"), state(workdir, "dask", "scheduler")
    http, tcp, dashboard = mlflow["ports"]["http"], scheduler["ports"]["tcp"], scheduler["ports"]["dashboard"]
    # forward: nothing to do in local mode, and one line that says where the services are.
    assert lines[1].startswith("forward: local mode needs no forward: "), lines[1]
    assert f"mlflow/mlflow http://127.0.0.1:{http}" in lines[1] and f"tcp://127.0.0.1:{tcp}" in lines[1], lines[1]
    assert first.stdout.splitlines() == [
        f"dask tcp://127.0.0.1:{tcp} 6",
        f"mlflow http://127.0.0.1:{http} 1",
        f"dashboard http://127.0.0.1:{dashboard}/status",
    ]
    assert not list((workdir / "tmp").glob("datalab-playbooks-up-*")), "a passing run keeps no log"

    second = shell(workdir, f"{SNIPPET} && {CLIENTS}")
    assert second.returncode == 0, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("up: mlflow, dask up on this machine; no change in "), lines
    assert lines[1] == first.stderr.strip().splitlines()[1]
    assert state(workdir, "mlflow")["pid"] == mlflow["pid"]
    assert state(workdir, "dask", "scheduler")["pid"] == scheduler["pid"]
    assert second.stdout == first.stdout

    # env: the lines the shell evaluated, and the same as one JSON document.
    exported = run(workdir, "env")
    assert exported.returncode == 0 and exported.stderr == "", exported.stderr
    assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{http}" in exported.stdout.splitlines()
    assert f"export DASK_SCHEDULER_ADDRESS=tcp://127.0.0.1:{tcp}" in exported.stdout.splitlines()
    assert "# gateway: not running on this machine" in exported.stdout
    env = run(workdir, "env", "--json")
    doc = document(env, "env")
    assert doc["ok"] and doc["mode"] == "local" and doc["reach"] == "local"
    assert {v["name"]: v["value"] for v in doc["variables"]} == {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{http}",
        "DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{tcp}",
        "DASK_DASHBOARD_URL": f"http://127.0.0.1:{dashboard}/status",
    }
    assert env.stderr.startswith("target: local mode")

    # status: full URLs, in the table and in the document.
    table = run(workdir, "status")
    assert f"http://127.0.0.1:{http}" in table.stdout and f"tcp://127.0.0.1:{tcp}" in table.stdout
    status = document(run(workdir, "status", "--json"), "status")
    assert {(s["service"], s["instance"], s["ok"]) for s in status["services"]} >= {
        ("mlflow", "mlflow", True),
        ("dask", "scheduler", True),
    }
    assert next(s for s in status["services"] if s["service"] == "mlflow")["address"] == f"http://127.0.0.1:{http}"
    target = document(run(workdir, "target", "--json"), "target")
    assert target["mode"] == "local" and target["state_dir"] == str(workdir / ".playbooks" / "local")

    # smoke --json: one document; the user's MLflow workspace is as before it.
    from mlflow import MlflowClient

    client = MlflowClient(f"http://127.0.0.1:{http}")
    before = [(e.experiment_id, e.name) for e in client.search_experiments()]
    smoke = run(workdir, "smoke", "--json")
    assert smoke.returncode == 0, smoke.stderr
    doc = document(smoke, "smoke")
    assert doc["ok"] and doc["failed"] == 0 and {r["service"] for r in doc["reports"]} == {"mlflow", "dask"}
    assert "service  result" in smoke.stderr, "the human table goes to stderr"
    assert [(e.experiment_id, e.name) for e in client.search_experiments()] == before
    kept = document(run(workdir, "smoke", "--keep", "--json"), "smoke")
    mlflow_steps = next(r for r in kept["reports"] if r["service"] == "mlflow")["steps"]
    assert mlflow_steps[-1]["detail"].startswith("skipped: --keep")
    assert "datalab-playbooks-smoke" in [e.name for e in client.search_experiments()]

    # The gateway joins the environment: Gateway() with no argument lists clusters (it authenticates).
    assert run(workdir, "gateway.up").returncode == 0
    password = (workdir / ".playbooks/local/gateway/password").read_text().strip()
    exported = run(workdir, "env")
    assert password not in exported.stdout + exported.stderr
    gateway = shell(
        workdir,
        f'eval "$(playbooks env)" && {sys.executable} -c '
        '"from dask_gateway import Gateway; print(Gateway().list_clusters())"',
    )
    assert gateway.returncode == 0 and gateway.stdout.strip() == "[]", gateway.stdout + gateway.stderr
    assert password not in gateway.stdout + gateway.stderr

    down = run(workdir, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    from playbooks import registry

    local_services = [service for service in registry.services() if service.supports("local")]
    assert run(workdir, "env").stdout.count("not running") == len(local_services)


def test_hook_stops_at_its_deadline_with_one_line(workdir):
    """MLflow cannot be ready within 2 s: one error line, exit 1, and the process ends by its deadline."""
    start = time.monotonic()
    late = run(workdir, "up", "--quiet", "--deadline", "2")
    elapsed = time.monotonic() - start
    line = one_error_line(late, ("did not finish within its 2s deadline", "raise --deadline"))
    assert late.stdout == ""
    assert elapsed < 2 + 5, f"{elapsed:.1f}s: the interpreter's start (~1-2 s) plus the deadline"
    log = Path(line.split("(output in ")[1].split(")")[0])
    assert "target: local mode" in log.read_text()
    log.unlink()
    # What it was starting is taken over by the next run, quietly.
    again = run(workdir, "up", "--quiet")
    assert again.returncode == 0 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert run(workdir, "down").returncode == 0


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--deadline", "0"), ("--deadline must be a number of seconds from 1 to 3600", "--deadline 300")),
        (("--deadline", "soon"), ("--deadline must be a number of seconds",)),
        (("--dry-run",), ("--quiet hides what --dry-run shows",)),
    ],
)
def test_hook_bad_input_is_one_line_and_changes_nothing(workdir, args, fragments):
    result = run(workdir, "up", "--quiet", *args)
    one_error_line(result, fragments)
    assert not (workdir / ".playbooks" / "local" / "mlflow").exists()


def test_json_failure_is_still_one_document(workdir):
    """A failing --json run: exit 1, one error: line on stderr, and a document saying the same on stdout."""
    smoke = run(workdir, "smoke", "--json")
    doc = document(smoke, "smoke")
    assert smoke.returncode == 1 and doc["ok"] is False
    assert smoke.stderr.strip().splitlines()[-1] == f"error: {doc['error']}"
    assert "run `invoke up` first" in doc["error"]
    (workdir / "invoke.yaml").write_text("mlflow:\n  prot: 5001\n")  # a typo: refused before the task runs
    bad = run(workdir, "status", "--json")
    doc = document(bad, "status")
    assert bad.returncode == 1 and doc == {
        "schema": "datalab-playbooks/status/v1",
        "ok": False,
        "error": doc["error"],
        "mode": None,
    }
    assert bad.stderr.strip() == f"error: {doc['error']}" and "mlflow.prot" in doc["error"]
    # A configuration invoke itself cannot load: the same.
    (workdir / "invoke.yaml").write_text("mlflow: [unclosed\n")
    broken = run(workdir, "env", "--json")
    doc = document(broken, "env")
    assert broken.returncode == 1 and doc["ok"] is False and broken.stderr.strip() == f"error: {doc['error']}"


def test_cli_is_the_one_the_tests_run():
    assert Path(CLI).parent == Path(BIN)
