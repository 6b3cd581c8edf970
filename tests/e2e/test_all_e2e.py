"""`up`, `status` and `down` for every service the mode allows, together, against a real API server."""

import pytest

from playbooks import registry


def test_up_status_down_for_all_services(all_services):
    session = all_services
    up = session.run("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert up.stdout.count("target:") == 1, "detection once per run"
    assert "mlflow: applied changes" in up.stdout and "dask: applied changes" in up.stdout
    assert ("gateway" in up.stdout.lower()) == (session.mode == "vcluster")

    status = session.run("status")
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line for line in status.stdout.splitlines()[2:] if line.strip()}
    assert "ready 1/1" in rows["mlflow"] and "ready 3/3" in rows["dask"]
    assert f"tcp://dask-scheduler.{session.namespace}.svc:8786" in rows["dask"]
    assert ("gateway" in rows) == (session.mode == "vcluster")

    again = session.run("up")
    assert again.returncode == 0, again.stderr
    assert "mlflow: no change" in again.stdout and "dask: no change" in again.stdout

    down = session.run("down", "--purge")
    assert down.returncode == 0, down.stdout + down.stderr
    assert session.labelled() == []
    assert "nothing deployed" in session.run("status").stdout


def test_only_picks_services_and_rejects_unknown_ones(session):
    unknown = session.run("up", "--only", "mlflow,spark")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == f"error: unknown service spark: choose from {', '.join(registry.names())}"
    assert session.labelled() == []
    only = session.run("up", "--only", "dask")
    assert only.returncode == 0, only.stderr
    assert {name.split("/")[0] for name in session.labelled()} == {"deployment.apps", "service"}
    assert "mlflow" not in only.stdout


def test_gateway_is_refused_in_namespace_mode_before_anything_is_applied(session):
    if session.mode != "namespace":
        pytest.skip("the refusal is a namespace-mode property")
    result = session.run("up", "--only", "mlflow,gateway")
    assert result.returncode == 1
    assert "Dask Gateway needs vCluster mode" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert session.labelled() == []
