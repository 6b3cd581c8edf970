"""`invoke forward` on real pods, in both modes: the pod under a forward is killed, and the same
local address answers again within seconds of its replacement being ready; `smoke --json`,
`env` and `status` there; `down` ends the forwards."""

from __future__ import annotations

import calendar
import json
import time
import urllib.request

import jsonschema
import pytest

from playbooks import procs
from tests.e2e.test_real_pods_e2e import CORE_IMAGES, need_images
from tests.e2e.user_clients import DASK_GROUPBY, GROUPBY_SUMS, user_python
from tests.test_session_hook import schema

pytestmark = pytest.mark.timeout(1800)
AGAIN_WITHIN = 15.0  # seconds from the new pod's readiness to the old address answering


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def forwarded(session) -> dict[str, dict]:
    status = session.run("status", "--json")
    doc = json.loads(status.stdout)
    jsonschema.validate(doc, schema("status"))
    return {f"{f['service']}/{f['port'] or f['instance']}": f for f in doc.get("forwards", [])}


def ready_since(session, selector: str, after: float) -> float | None:
    """When a pod of selector created after `after` became Ready (epoch seconds), or None."""
    out = session.cluster.kubectl("get", "pods", "-n", session.namespace, "-l", selector, "-o", "json").stdout
    for pod in json.loads(out)["items"]:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        for condition in pod.get("status", {}).get("conditions", []):
            if condition["type"] == "Ready" and condition["status"] == "True":
                since = calendar.timegm(time.strptime(condition["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ"))
                if since >= after - 1:
                    return since
    return None


def kill_and_measure(session, selector: str, url: str, deadline: float = 600) -> tuple[float, float]:
    """Delete the pods of selector; (seconds until a new one is Ready, seconds after that until url answers)."""
    killed = time.time()
    session.cluster.kubectl("delete", "pods", "-n", session.namespace, "-l", selector, "--wait=false")
    ready = answered = None
    while time.time() - killed < deadline:
        ready = ready or ready_since(session, selector, killed)
        if ready and answers(url):
            answered = time.time()
            break
        time.sleep(0.5)
    assert ready and answered, f"{url} did not answer within {deadline}s of the kill"
    return ready - killed, max(0.0, answered - ready)


def test_a_forward_outlives_the_pod_under_it(real_session):
    session = real_session
    need_images(session, CORE_IMAGES)
    session.env["INVOKE_FORWARD_STATE_DIR"] = str(session.tmp / "forwards")
    try:
        up = session.run("up", "--only", "mlflow,dask", timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        started = session.run("forward", timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        found = forwarded(session)
        mlflow, scheduler = found["mlflow/mlflow"]["address"], found["dask/scheduler"]["address"]
        assert all(f["connected"] for f in found.values()), found
        assert answers(f"{mlflow}/health")

        # A user's shell: `env` names the forwarded addresses, and the user's own clients work through them.
        env = json.loads(session.run("env", "--json").stdout)
        values = {v["name"]: v["value"] for v in env["variables"]}
        assert values["MLFLOW_TRACKING_URI"] == mlflow and values["DASK_SCHEDULER_ADDRESS"] == scheduler
        assert json.loads(user_python(session.env, DASK_GROUPBY, scheduler)) == GROUPBY_SUMS

        smoke = session.run("smoke", "--json", timeout=900)
        doc = json.loads(smoke.stdout)
        jsonschema.validate(doc, schema("smoke"))
        assert smoke.returncode == 0 and doc["ok"] and doc["passed"] == 2 and doc["failed"] == 0, smoke.stderr

        to_ready, to_answer = kill_and_measure(session, "app.kubernetes.io/name=mlflow", f"{mlflow}/health")
        print(f"{session.mode}: mlflow pod killed; new pod ready after {to_ready:.0f}s, "
              f"{mlflow} answered {to_answer:.1f}s later")  # fmt: skip
        assert to_answer <= AGAIN_WITHIN
        dashboard = found["dask/dashboard"]["address"]
        selector = "app.kubernetes.io/name=dask,app.kubernetes.io/component=scheduler"
        to_ready, to_answer = kill_and_measure(session, selector, f"{dashboard}/health")
        print(f"{session.mode}: dask scheduler pod killed; new pod ready after {to_ready:.0f}s, "
              f"{dashboard} answered {to_answer:.1f}s later")  # fmt: skip
        assert to_answer <= AGAIN_WITHIN
        # The scheduler's TCP port too: the same address, a new scheduler behind it.
        assert json.loads(user_python(session.env, DASK_GROUPBY, scheduler)) == GROUPBY_SUMS
        after = forwarded(session)
        assert {k: f["address"] for k, f in after.items()} == {k: f["address"] for k, f in found.items()}
        assert after["mlflow/mlflow"]["reconnects"] >= 1

        supervisor = session.run("forward.status")
        assert supervisor.returncode == 0, supervisor.stdout + supervisor.stderr
        pid = int(supervisor.stdout.rsplit("pid", 1)[1].split()[0])
        down = session.run("down", timeout=600)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "forward: stopped (nothing left to forward)" in down.stdout
        assert procs.identity(pid) is None
        assert not answers(f"{mlflow}/health")
    finally:
        session.run("forward.stop")
        session.run("down", "--purge", timeout=600)


def test_a_forward_that_cannot_connect_says_why_within_its_timeout_and_down_ends_it(session):
    """envtest: the API server is real, the pods are not (no kubelet answers): kubectl's own error
    is the one line, the supervisor keeps retrying and says so, and `down` stops it."""
    session.env["INVOKE_FORWARD_STATE_DIR"] = str(session.tmp / "forwards")
    if session.cluster.provider != "envtest":
        pytest.skip("the pods here run: test_a_forward_outlives_the_pod_under_it covers this cluster")
    up = session.run("up", "--only", "dask")
    assert up.returncode == 0, up.stdout + up.stderr
    started = time.monotonic()
    result = session.run("forward", "--timeout", "8")
    assert result.returncode == 1 and time.monotonic() - started < 30, result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "not connected within 8s" in line and "forward.status" in line, line
    assert "Traceback" not in result.stderr
    status = json.loads(session.run("status", "--json").stdout)
    jsonschema.validate(status, schema("status"))
    assert {f["port"] for f in status["forwards"]} == {"scheduler", "dashboard"}
    assert not all(f["connected"] for f in status["forwards"])
    down = session.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "forward: stopped (nothing left to forward)" in down.stdout
    assert json.loads(session.run("status", "--json").stdout)["forwards"] == []
