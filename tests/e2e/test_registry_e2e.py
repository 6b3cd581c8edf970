"""A service from outside the package, registered by one entry, goes through the root tasks on a real API server."""

from pathlib import Path

from playbooks import registry

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = {registry.PLUGINS_ENV: "tests.plugin.echo_service", "PYTHONPATH": str(ROOT)}


def test_root_up_status_smoke_down_pick_up_a_registered_service(session):
    up = session.run("up", "--only", "echo", env=PLUGIN)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "echo: applied changes" in up.stdout
    assert session.labelled() == ["deployment.apps/echo"]

    status = session.run("status", env=PLUGIN)
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line for line in status.stdout.splitlines()[2:] if line.strip()}
    assert "ready 1/1" in rows["echo"], status.stdout

    smoke = session.run("smoke", env=PLUGIN)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "echo" in smoke.stdout and "PASS" in smoke.stdout

    again = session.run("up", "--only", "echo", env=PLUGIN)
    assert again.returncode == 0 and "echo: no change" in again.stdout, again.stdout + again.stderr

    down = session.run("down", "--only", "echo", env=PLUGIN)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "echo: deleted deployment.apps/echo" in down.stdout
    assert session.labelled() == []
