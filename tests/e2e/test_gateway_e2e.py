"""gateway.up / status / down with the real helm against a real API server, in both modes.

The chart is a stand-in (tests/e2e/charts/dask-gateway: the real chart's names, labels,
CRD and cluster role) unless GATEWAY_E2E_CHART names a real dask-gateway chart directory.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from playbooks.chart_files import chart_digest
from tests.e2e.conftest import STANDIN_CHART as STANDIN

CRD = "customresourcedefinition.apiextensions.k8s.io/daskclusters.gateway.dask.org"


@pytest.fixture
def chart(tmp_path) -> Path:
    """A copy of the chart, so a test may change it between two `up`s."""
    source = Path(os.environ.get("GATEWAY_E2E_CHART") or STANDIN)
    copy = tmp_path / "chart" / "dask-gateway"
    shutil.copytree(source, copy)
    return copy


@pytest.fixture
def gw(session):
    """The session, with helm found beside the interpreter (scripts/setup.sh puts it there) or on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{session.env['PATH']}"
    if not shutil.which("helm", path=path):
        pytest.skip("helm is not installed: run scripts/setup.sh")
    session.env["PATH"] = path
    return session


def helm_releases(session) -> list[dict]:
    out = subprocess.run(
        ["helm", "--kubeconfig", str(session.cluster.admin_kubeconfig), "list", "-n", session.namespace, "-o", "json"],
        capture_output=True, text=True, timeout=60, check=True, env=session.env,
    )  # fmt: skip
    return json.loads(out.stdout)


def helm_history(session, release: str = "dask-gateway") -> list[dict]:
    out = subprocess.run(
        ["helm", "--kubeconfig", str(session.cluster.admin_kubeconfig), "history", release, "-n", session.namespace, "-o", "json"],
        capture_output=True, text=True, timeout=60, check=True, env=session.env,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.parametrize("session", ["namespace"], indirect=True)
def test_namespace_mode_refuses_and_leaves_nothing(gw, chart):
    result = gw.run("gateway.up", "--chart", str(chart))
    assert result.returncode == 1
    assert "Dask Gateway needs vCluster mode" in result.stderr and "CRDs and cluster roles" in result.stderr
    assert helm_releases(gw) == []
    assert gw.labelled("app.kubernetes.io/instance=dask-gateway") == []


@pytest.mark.parametrize("session", ["vcluster"], indirect=True)
def test_up_upgrade_status_down_with_crds_and_password(gw, chart):
    ns = gw.namespace
    first = gw.run("gateway.up", "--chart", str(chart), "--namespace", ns, timeout=400)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"address          http://traefik-dask-gateway.{ns}.svc:80" in first.stdout
    (release,) = helm_releases(gw)
    assert release["status"] == "deployed" and release["chart"] == "dask-gateway-2026.3.0"
    traefik = gw.cluster.kubectl("get", "service", "traefik-dask-gateway", "-n", ns, "-o", "json")
    assert json.loads(traefik.stdout)["spec"]["type"] == "ClusterIP"
    secret = json.loads(gw.cluster.kubectl("get", "secret", "dask-gateway-password", "-n", ns, "-o", "json").stdout)
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert len(password) >= 32 and password not in first.stdout + first.stderr

    # helm never upgrades CRDs: the second up must apply the changed one itself.
    crd_file = chart / "crds" / "daskclusters.yaml"
    changed = yaml.safe_load(crd_file.read_text())
    changed["spec"]["names"]["shortNames"] = ["dgc"]
    crd_file.write_text(yaml.safe_dump(changed))
    second = gw.run("gateway.up", "--chart", str(chart), "--namespace", ns, timeout=400)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "CRDs: updated" in second.stdout
    crd = json.loads(gw.cluster.kubectl("get", CRD, "-o", "json").stdout)
    assert crd["spec"]["names"].get("shortNames") == ["dgc"]
    again = json.loads(gw.cluster.kubectl("get", "secret", "dask-gateway-password", "-n", ns, "-o", "json").stdout)
    assert again["data"]["password"] == secret["data"]["password"], "the password is reused"

    status = gw.run("gateway.status", "--namespace", ns)
    assert "release deployed" in status.stdout and "3/3 pods ready" in status.stdout
    assert password not in status.stdout
    assert password in gw.run("gateway.status", "--namespace", ns, "--show-password").stdout

    down = gw.run("gateway.down", "--chart", str(chart), "--namespace", ns)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "uninstalled release" in down.stdout and "kept the chart's CRDs" in down.stdout
    assert helm_releases(gw) == []
    assert gw.cluster.kubectl("get", "secret", "dask-gateway-password", "-n", ns, check=False).returncode != 0
    assert gw.cluster.kubectl("get", CRD, check=False).returncode == 0

    purge = gw.run("gateway.down", "--chart", str(chart), "--namespace", ns, "--purge")
    assert purge.returncode == 0 and f"deleted {CRD}" in purge.stdout
    nothing = gw.run("gateway.down", "--chart", str(chart), "--namespace", ns)
    assert nothing.returncode == 0 and "nothing installed" in nothing.stdout


@pytest.mark.parametrize("session", ["vcluster"], indirect=True)
def test_local_chart_is_left_alone_until_a_chart_file_changes(gw, chart):
    """The chart directory's digest, recorded in the release's description, makes a second up a no-op."""
    ns = gw.namespace

    def up() -> subprocess.CompletedProcess:
        result = gw.run("gateway.up", "--chart", str(chart), "--namespace", ns, timeout=400)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    up()
    (first,) = helm_history(gw)
    assert first["revision"] == 1 and first["description"].endswith(f"chart files sha256:{chart_digest(chart)}")

    again = up()
    assert "with these values; no change" in again.stdout and "helm upgrade --install" not in again.stdout
    assert [h["revision"] for h in helm_history(gw)] == [1]

    os.utime(chart / "values.yaml")  # touched, same contents
    touched = up()
    assert "no change" in touched.stdout
    assert [h["revision"] for h in helm_history(gw)] == [1]

    values = chart / "values.yaml"
    values.write_text(values.read_text() + "# changed\n")
    changed = up()
    assert "no change" not in changed.stdout and "helm upgrade --install" in changed.stdout
    history = helm_history(gw)
    assert [h["revision"] for h in history] == [1, 2]
    assert history[-1]["status"] == "deployed"
    assert history[-1]["description"].endswith(f"chart files sha256:{chart_digest(chart)}")
    assert "no change" in up().stdout
    assert gw.run("gateway.down", "--purge", "--namespace", ns).returncode == 0


@pytest.fixture
def chart_repository(gw, chart, tmp_path):
    """The chart packaged into a chart repository served on 127.0.0.1 (as https://helm.dask.org serves it)."""
    from playbooks.procs import free_port, http_ok, start, stop_group, wait_until

    repo = tmp_path / "repo"
    repo.mkdir()
    helm = ["helm", "--repository-config", str(tmp_path / "repositories.yaml")]
    subprocess.run(
        [*helm, "package", str(chart), "-d", str(repo)], check=True, capture_output=True, timeout=60, env=gw.env
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    subprocess.run(
        [*helm, "repo", "index", str(repo), "--url", url], check=True, capture_output=True, timeout=60, env=gw.env
    )
    log = tmp_path / "http.log"
    server = start(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(repo)], gw.env, log
    )
    try:
        wait_until(lambda: http_ok(f"{url}/index.yaml"), 20, "chart repository", server, log)
        yield url
    finally:
        stop_group(server.pid)


@pytest.mark.parametrize("session", ["vcluster"], indirect=True)
def test_repository_chart_is_added_once_and_installed(gw, chart_repository):
    env = {"INVOKE_GATEWAY_REPO_URL": chart_repository}
    first = gw.run("gateway.up", "--namespace", gw.namespace, env=env, timeout=400)
    assert first.returncode == 0, first.stdout + first.stderr
    repos = subprocess.run(
        ["helm", "repo", "list", "-o", "json"], capture_output=True, text=True, env=gw.env, check=True
    )
    assert json.loads(repos.stdout) == [{"name": "dask", "url": chart_repository}]
    (release,) = helm_releases(gw)
    assert release["chart"] == "dask-gateway-2026.3.0"
    again = gw.run("gateway.up", "--namespace", gw.namespace, env=env, timeout=400)
    assert again.returncode == 0 and "already deployed with these values; no change" in again.stdout
    assert gw.run("gateway.down", "--purge", "--namespace", gw.namespace, env=env).returncode == 0
