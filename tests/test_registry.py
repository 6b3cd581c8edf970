"""The registry is the extension point: a service from outside the package (tests/plugin/echo_service.py,
one module + one manifest folder + one registry entry) is picked up by the root tasks, the CLI,
the bad-input table and the pod-security table, with no other edit."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from playbooks import registry
from tests import test_bad_input, test_pod_security
from tests.conftest import one_error_line

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = {registry.PLUGINS_ENV: "tests.plugin.echo_service", "PYTHONPATH": str(ROOT)}


@pytest.fixture
def with_echo(monkeypatch):
    for key, value in PLUGIN.items():
        monkeypatch.setenv(key, value)
    [echo] = [s for s in registry.services() if s.name == "echo"]
    return echo


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return test_bad_input.run(list(args), env, cwd)


def test_the_root_tasks_choose_it_in_the_modes_it_supports(with_echo):
    assert registry.names()[-1] == "echo"
    assert with_echo in registry.choose(None, "namespace") and with_echo in registry.choose(None, "vcluster")
    assert with_echo not in registry.choose(None, "local")
    assert with_echo in registry.choose(None, "namespace", "down")
    assert registry.choose("echo,mlflow", "vcluster") == [registry.get("mlflow"), with_echo]
    with pytest.raises(registry.PlaybookError, match="echo needs a Kubernetes cluster and local mode has none"):
        registry.choose("echo", "local")


def test_the_cli_lists_its_tasks_and_the_root_up_offers_it(tmp_path):
    listed = cli("--list", env=PLUGIN, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "echo.up" in listed.stdout and "echo.down" in listed.stdout
    helped = cli("up", "--help", env=PLUGIN, cwd=tmp_path)
    assert "(storage, postgres, mlflow, dask, gateway, echo)" in " ".join(helped.stdout.split())
    without = cli("--list", env={}, cwd=tmp_path)
    assert "echo." not in without.stdout


def test_in_local_mode_it_is_refused_in_one_line_and_nothing_starts(tmp_path):
    result = cli("up", "--only", "echo", env=PLUGIN, cwd=tmp_path)
    one_error_line(result, ("echo needs a Kubernetes cluster and local mode has none",))
    assert not (tmp_path / ".playbooks").exists()


def test_the_bad_input_table_gets_its_cases(with_echo, tmp_path):
    cases = test_bad_input.service_cases([with_echo])
    assert {case.argv[0] for case in cases} == {"echo.up", "echo.down"}
    assert len(cases) == 4
    for case in cases:
        env = dict(PLUGIN)
        if case.env.get("KUBECONFIG") == "@unreachable":
            env["KUBECONFIG"] = test_bad_input.unreachable_kubeconfig(tmp_path)
        one_error_line(cli(*case.argv, env=env, cwd=tmp_path), (case.message,))


def test_the_pod_security_table_checks_its_pods(with_echo):
    pods = test_pod_security.pods(mode="vcluster")
    assert "echo" in pods
    test_pod_security.assert_restricted(pods["echo"])


def test_a_plugin_module_without_a_service_is_one_line(tmp_path):
    env = {registry.PLUGINS_ENV: "json", "PYTHONPATH": str(ROOT)}
    result = cli("status", env=env, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "DATALAB_PLAYBOOKS_SERVICES names json, which has no SERVICE_SPEC" in result.stderr


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_root_tasks_import_no_service():
    for module in ("root", "backends", "registry", "parts", "collection"):
        services = {name for name in imports(ROOT / "playbooks" / f"{module}.py") if "services" in name}
        assert services == set(), f"playbooks/{module}.py imports {services}"
