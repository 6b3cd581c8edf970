"""cluster.up / cluster.down as a developer runs them (`invoke` in a checkout, in a subprocess), with
a PATH that holds only stand-ins for docker, kind and helm (tests/fakes/cluster_tools.py) and the
strict fake kubectl (tests/fakes/kubectl.py): the stand-ins record their argv and answer as the
real tools do, so the tasks' logic runs end to end without a Docker engine, and the exact commands
are checked.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from devtools.cluster import DEFAULTS as CFG
from devtools.cluster import (
    KIND_NODE_IMAGE,
    KIND_VERSION,
    VCLUSTER_CHART_VERSION,
    kind_config,
    point_kubeconfig,
    vcluster_values,
)
from tests.conftest import QUIET_ENV
from tests.fakes.cluster_tools import vcluster_kubeconfig
from tests.fakes.kubectl import FakeKubectl

ROOT = Path(__file__).resolve().parents[1]
# The checkout's tasks.py, from the world's own working directory.
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(ROOT)]
FAKE = Path(__file__).resolve().parent / "fakes" / "cluster_tools.py"
NAME = "datalab-playbooks"
IMAGE = KIND_NODE_IMAGE
HOST_PORT = 40123


@dataclass
class World:
    """A working directory, a PATH of stand-ins, and what they recorded."""

    cwd: Path
    bin: Path
    folder: Path
    kubectl: FakeKubectl | None = None

    @property
    def kind_kubeconfig(self) -> Path:
        return self.cwd / ".playbooks" / "kind.kubeconfig"

    @property
    def vcluster_kubeconfig(self) -> Path:
        return self.cwd / ".playbooks" / "vcluster.kubeconfig"

    def set_state(self, **state) -> None:
        (self.folder / "state.json").write_text(json.dumps(state))

    def calls(self) -> list[dict]:
        """Every tool's calls, in the order they were made."""
        path = self.folder / "calls.jsonl"
        calls = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if self.kubectl is not None:
            calls += [
                {"tool": "kubectl", "argv": c.argv, "stdin": c.stdin, "time": c.time} for c in self.kubectl.calls()
            ]
        return sorted(calls, key=lambda call: call["time"])

    def expect_vcluster(self, admin: Path, vcluster: Path, name: str = "my-vcluster", context: str = f"kind-{NAME}"):
        """The kubectl calls after the vcluster chart's install: its Secret (the kubeconfig the vCluster
        exported for the host, as the values ask), then the API's /readyz through the written kubeconfig."""
        export = {"server": f"https://127.0.0.1:{HOST_PORT}", "context": "my-vcluster"}
        config = yaml.safe_dump(vcluster_kubeconfig({"exportKubeConfig": export}))
        self.kubectl.expect(
            "get", "secret", f"vc-{name}", "-n", f"vcluster-{name}", "-o", "jsonpath={.data.config}",
            flags=["--kubeconfig", str(admin), "--context", context], stdout=base64.b64encode(config.encode()).decode(),
        )  # fmt: skip
        self.kubectl.expect(
            "get", "--raw", "/readyz", flags=["--kubeconfig", str(vcluster), "--request-timeout=5s"], stdout="ok\n"
        )

    def argvs(self) -> list[list[str]]:
        return [[call["tool"], *call["argv"]] for call in self.calls()]

    def forget_calls(self) -> None:
        (self.folder / "calls.jsonl").unlink(missing_ok=True)
        if self.kubectl is not None:
            self.kubectl.forget_calls()

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = {
            "PATH": str(self.bin),
            "HOME": str(self.cwd / "home"),
            "FAKE_TOOLS_DIR": str(self.folder),
            "PYTHONPATH": str(ROOT),
            # Must not leak into the tools: the tasks pass --kubeconfig explicitly.
            "KUBECONFIG": str(self.cwd / "home" / "not-this-one"),
            **QUIET_ENV,
        }
        return subprocess.run([*INVOKE, *args], cwd=self.cwd, env=env, capture_output=True, text=True, timeout=120)


def make_world(
    tmp_path: Path, tools: tuple[str, ...] = ("docker", "kind", "helm"), kubectl: FakeKubectl | None = None
) -> World:
    """A world whose PATH has these stand-ins, and the fake kubectl if given."""
    world = World(tmp_path / "work", tmp_path / "bin", tmp_path / "fake", kubectl)
    for folder in (world.cwd, world.bin, world.folder, world.cwd / "home"):
        folder.mkdir(parents=True)
    for tool in tools:
        script = world.bin / tool
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" {tool} "$@"\n')
        script.chmod(0o755)
    if kubectl is not None:
        (world.bin / "kubectl").symlink_to(kubectl.path)
    return world


@pytest.fixture
def world(tmp_path, fake_kubectl) -> World:
    return make_world(tmp_path, kubectl=fake_kubectl)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def create_argv(world: World) -> list[str]:
    return [
        "kind", "create", "cluster", "--name", NAME, "--image", IMAGE,
        "--kubeconfig", str(world.kind_kubeconfig), "--wait", "120s", "--config", "-",
    ]  # fmt: skip


# ---------------------------------------------------------------- no Docker, no kind


def test_up_without_docker_and_kind_says_so_in_one_line_and_creates_nothing(tmp_path):
    world = make_world(tmp_path, tools=())
    result = world.run("cluster.up")
    line = one_error_line(result)
    assert "kind is not on PATH" in line and "docker is not on PATH" in line
    assert line.endswith("install Docker and kind, or use an existing cluster")
    assert result.stdout == ""
    assert list(world.cwd.iterdir()) == [world.cwd / "home"]


def test_up_with_docker_not_answering_stops_before_kind(world):
    world.set_state(docker_down=True)
    result = world.run("cluster.up", "--vcluster")
    line = one_error_line(result)
    assert "Docker is not answering (Cannot connect to the Docker daemon" in line
    assert line.endswith(": install Docker and kind, or use an existing cluster")
    assert world.argvs() == [["docker", "info", "--format", "{{.ServerVersion}}"]]
    assert not (world.cwd / ".playbooks").exists()


def test_up_without_kind_names_it(tmp_path):
    world = make_world(tmp_path, tools=("docker",))
    line = one_error_line(world.run("cluster.up"))
    assert "kind is not on PATH: install Docker and kind" in line
    assert not (world.cwd / ".playbooks").exists()


def test_up_vcluster_without_helm_refuses_before_creating_anything(tmp_path, fake_kubectl):
    world = make_world(tmp_path, tools=("docker", "kind"), kubectl=fake_kubectl)
    line = one_error_line(world.run("cluster.up", "--vcluster"))
    assert "not on PATH: helm" in line
    assert [argv[:2] for argv in world.argvs()] == [["docker", "info"]]
    assert not (world.cwd / ".playbooks").exists()


@pytest.mark.parametrize("task", ["cluster.up", "cluster.down"])
def test_bad_cluster_name_is_refused_before_any_command(world, task):
    line = one_error_line(world.run(task, "--name", "Not_A_Name"))
    assert "invalid cluster name 'Not_A_Name'" in line
    assert world.argvs() == []


def test_the_playbooks_script_has_no_developer_tasks(world):
    """cluster.* and test.* are tasks of a checkout (tasks.py), not of the installed `playbooks` script."""
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "playbooks"), "--list"], cwd=world.cwd, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert "mlflow.up" in listed.stdout
    assert "cluster." not in listed.stdout and "test." not in listed.stdout
    checkout = world.run("--list")
    assert "cluster.up" in checkout.stdout and "test.e2e" in checkout.stdout and "mlflow.up" in checkout.stdout


# ---------------------------------------------------------------- kind cluster


def test_up_creates_the_cluster_with_the_pinned_image_then_reuses_it(world):
    result = world.run("cluster.up")
    assert result.returncode == 0, result.stderr
    assert world.argvs() == [
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        ["kind", "get", "clusters"],
        ["kind", "version"],
        create_argv(world),
    ]
    config = yaml.safe_load(world.calls()[-1]["stdin"])
    assert config == {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "nodes": [
            {
                "role": "control-plane",
                "extraPortMappings": [{"containerPort": 31443, "listenAddress": "127.0.0.1", "protocol": "TCP"}],
            }
        ],
    }
    assert world.kind_kubeconfig.exists()
    assert f"kind cluster {NAME}: created from {IMAGE}" in result.stdout
    assert f'kind: Creating cluster "{NAME}" ...' in result.stdout  # kind's progress is shown
    assert f"use it:  export KUBECONFIG={world.kind_kubeconfig}" in result.stdout

    world.forget_calls()
    again = world.run("cluster.up")
    assert again.returncode == 0, again.stderr
    assert world.argvs() == [
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        ["kind", "get", "clusters"],
        ["kind", "export", "kubeconfig", "--name", NAME, "--kubeconfig", str(world.kind_kubeconfig)],
    ]
    assert "already there, reused" in again.stdout
    assert f"export KUBECONFIG={world.kind_kubeconfig}" in again.stdout


def test_another_kind_release_gets_a_note_not_a_failure(world):
    world.set_state(kind_version="kind v0.31.0 go1.25.5 linux/amd64")
    result = world.run("cluster.up")
    assert result.returncode == 0, result.stderr
    assert (
        f"note: this is kind v0.31.0; {IMAGE} was picked from the images built for kind {KIND_VERSION}" in result.stdout
    )


def test_name_and_image_flags_win_over_the_configuration(world):
    result = world.run("cluster.up", "--name", "other", "--image", "kindest/node:v1.35.8")
    assert result.returncode == 0, result.stderr
    assert world.argvs()[-1][:7] == ["kind", "create", "cluster", "--name", "other", "--image", "kindest/node:v1.35.8"]


# ---------------------------------------------------------------- vCluster


def test_up_vcluster_installs_the_pinned_chart_and_writes_a_kubeconfig_that_reaches_it(world):
    world.expect_vcluster(world.kind_kubeconfig, world.vcluster_kubeconfig)
    result = world.run("cluster.up", "--vcluster")
    assert result.returncode == 0, result.stderr
    calls = world.calls()
    helm = next(call for call in calls if call["tool"] == "helm")
    values_path = helm["argv"][helm["argv"].index("--values") + 1]
    admin = str(world.kind_kubeconfig)
    assert world.argvs() == [
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        ["kind", "get", "clusters"],
        ["kind", "version"],
        create_argv(world),
        ["kind", "get", "nodes", "--name", NAME],
        ["docker", "port", f"{NAME}-control-plane", "31443/tcp"],
        [
            "helm", "upgrade", "--install", "my-vcluster", "vcluster",
            "--repo", "https://charts.loft.sh", "--version", VCLUSTER_CHART_VERSION,
            "--namespace", "vcluster-my-vcluster", "--create-namespace", "--values", values_path,
            "--wait", "--timeout", "600s", "--kubeconfig", admin, "--kube-context", f"kind-{NAME}",
        ],
        [
            "kubectl", "--kubeconfig", admin, "--context", f"kind-{NAME}", "get", "secret", "vc-my-vcluster",
            "-n", "vcluster-my-vcluster", "-o", "jsonpath={.data.config}",
        ],
        ["kubectl", "--kubeconfig", str(world.vcluster_kubeconfig), "--request-timeout=5s", "get", "--raw", "/readyz"],
    ]  # fmt: skip
    # The values: a NodePort at the mapped node port, the kubeconfig exported for the host.
    values = yaml.safe_load(helm["files"][values_path])
    assert values["controlPlane"]["service"] == {"spec": {"type": "NodePort"}, "httpsNodePort": 31443}
    assert values["exportKubeConfig"] == {"server": f"https://127.0.0.1:{HOST_PORT}", "context": "my-vcluster"}
    assert not Path(values_path).exists()  # the temporary values file is gone

    config = yaml.safe_load(world.vcluster_kubeconfig.read_text())
    assert config["current-context"] == "my-vcluster"
    assert [c["cluster"]["server"] for c in config["clusters"]] == [f"https://127.0.0.1:{HOST_PORT}"]
    assert stat.S_IMODE(os.stat(world.vcluster_kubeconfig).st_mode) == 0o600
    assert (
        f"vcluster my-vcluster: ready in namespace vcluster-my-vcluster (chart vcluster {VCLUSTER_CHART_VERSION})"
        in result.stdout
    )
    assert f"use the vCluster:  export KUBECONFIG={world.vcluster_kubeconfig}" in result.stdout
    assert 'helm: Release "my-vcluster" does not exist. Installing it now.' in result.stdout


def test_vcluster_on_a_kind_cluster_without_the_port_mapping_is_refused_before_helm(world):
    world.set_state(clusters=[NAME], publish=False)
    line = one_error_line(world.run("cluster.up", "--vcluster"))
    assert "does not publish node port 31443 on this host" in line
    assert "invoke cluster.down" in line
    assert "helm" not in [argv[0] for argv in world.argvs()]


# ---------------------------------------------------------------- down


def test_down_with_nothing_there_says_so_and_exits_0(world):
    result = world.run("cluster.down")
    assert result.returncode == 0, result.stderr
    assert f"kind cluster {NAME}: not found, nothing to delete" in result.stdout
    assert "no kubeconfig files of cluster.up to remove" in result.stdout
    assert world.argvs() == [["kind", "get", "clusters"]]


def test_down_without_kind_on_path_exits_0(tmp_path):
    world = make_world(tmp_path, tools=())
    result = world.run("cluster.down")
    assert result.returncode == 0, result.stderr
    assert "kind is not on PATH, so there is no kind cluster to delete" in result.stdout


def test_down_deletes_the_cluster_and_the_kubeconfigs_up_wrote(world):
    world.expect_vcluster(world.kind_kubeconfig, world.vcluster_kubeconfig)
    assert world.run("cluster.up", "--vcluster").returncode == 0
    assert world.vcluster_kubeconfig.exists()
    world.forget_calls()
    result = world.run("cluster.down")
    assert result.returncode == 0, result.stderr
    assert world.argvs() == [
        ["kind", "get", "clusters"],
        ["kind", "delete", "cluster", "--name", NAME, "--kubeconfig", str(world.kind_kubeconfig)],
    ]
    assert f"kind cluster {NAME}: deleted" in result.stdout
    assert not world.kind_kubeconfig.exists() and not world.vcluster_kubeconfig.exists()
    assert not (world.cwd / ".playbooks").exists()

    again = world.run("cluster.down")
    assert again.returncode == 0
    assert "not found, nothing to delete" in again.stdout


def test_down_with_docker_not_answering_fails_in_one_line_and_keeps_the_files(world):
    assert world.run("cluster.up").returncode == 0
    world.set_state(clusters=[NAME], docker_down=True)
    line = one_error_line(world.run("cluster.down"))
    assert "kind get clusters failed" in line and "is Docker running?" in line
    assert world.kind_kubeconfig.exists()


# ---------------------------------------------------------------- pieces


def test_exported_kubeconfig_is_pointed_at_the_host_port_and_renamed():
    exported = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "Default", "cluster": {"server": "https://localhost:8443", "certificate-authority-data": "VkNB"}}
        ],
        "contexts": [{"name": "Default", "context": {"cluster": "Default", "user": "Default"}}],
        "current-context": "Default",
        "users": [{"name": "Default", "user": {"client-certificate-data": "Qw==", "client-key-data": "Sw=="}}],
    }
    pointed = point_kubeconfig(exported, "https://127.0.0.1:40123", "my-vcluster")
    assert pointed["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:40123",
        "certificate-authority-data": "VkNB",
    }
    assert pointed["current-context"] == "my-vcluster"
    assert pointed["contexts"][0] == {"name": "my-vcluster", "context": {"cluster": "Default", "user": "Default"}}
    assert exported["current-context"] == "Default"  # the input is left alone


def test_kind_config_maps_every_node_port_to_loopback_with_a_port_kind_picks():
    mappings = kind_config([31400, 31401])["nodes"][0]["extraPortMappings"]
    assert mappings == [
        {"containerPort": 31400, "listenAddress": "127.0.0.1", "protocol": "TCP"},
        {"containerPort": 31401, "listenAddress": "127.0.0.1", "protocol": "TCP"},
    ]
    assert all("hostPort" not in m for m in mappings)


def test_defaults_pin_exact_versions():
    # Exact releases: a tag, not a digest (kind's release notes list both) or a range.
    assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+", CFG["node_image"]), CFG["node_image"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", CFG["kind_version"]), CFG["kind_version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", CFG["vcluster"]["chart_version"]), CFG["vcluster"]["chart_version"]
    assert CFG["vcluster"]["repo_url"] == "https://charts.loft.sh"
    values = vcluster_values(31443, "https://127.0.0.1:1", "my-vcluster")
    # Fake nodes, as in a Datalab (they carry vcluster.loft.sh/fake-node=true).
    assert values["sync"]["fromHost"]["nodes"]["enabled"] is False


# ---------------------------------------------------------------- the e2e kind provider


class FakeTmpPathFactory:
    def __init__(self, base: Path):
        self.base = base
        base.mkdir(parents=True, exist_ok=True)

    def getbasetemp(self) -> Path:
        return self.base


class FakeConfig:
    def __init__(self, base: Path):
        self._tmp_path_factory = FakeTmpPathFactory(base)


@pytest.fixture
def on_fake_path(world, monkeypatch):
    """The stand-ins on this process's PATH, for code that runs in the test process."""
    monkeypatch.setenv("PATH", str(world.bin))
    monkeypatch.setenv("FAKE_TOOLS_DIR", str(world.folder))
    return world


def test_kind_provider_shares_one_cluster_between_workers_and_the_controller_deletes_it(on_fake_path, tmp_path):
    from tests.e2e import kind as provider

    world = on_fake_path
    run_root = tmp_path / "pytest-7"
    gw0 = FakeTmpPathFactory(run_root / "popen-gw0")
    gw1 = FakeTmpPathFactory(run_root / "popen-gw1")
    admin = provider.kind_cluster(gw0, "gw0", keep=False)
    assert admin == run_root / "kind-admin.kubeconfig" and admin.exists()
    create = world.calls()[-1]
    assert create["argv"][:4] == ["create", "cluster", "--name", "datalab-playbooks-e2e"]
    ports = [m["containerPort"] for m in yaml.safe_load(create["stdin"])["nodes"][0]["extraPortMappings"]]
    assert ports == list(range(31400, 31400 + provider.VCLUSTER_SLOTS))

    world.forget_calls()
    assert provider.kind_cluster(gw1, "gw1", keep=False) == admin
    assert world.argvs() == []  # the second worker reuses the file the first one wrote

    provider.release_kind_cluster(FakeConfig(run_root))
    assert world.argvs() == [
        ["kind", "delete", "cluster", "--name", "datalab-playbooks-e2e", "--kubeconfig", str(admin)]
    ]


def test_kind_provider_keeps_the_cluster_with_keep_cluster(on_fake_path, tmp_path):
    from tests.e2e import kind as provider

    world = on_fake_path
    world.set_state(clusters=["datalab-playbooks-e2e"])  # kept by an earlier run
    run_root = tmp_path / "pytest-8"
    admin = provider.kind_cluster(FakeTmpPathFactory(run_root / "popen-gw0"), "gw0", keep=True)
    assert [
        "kind",
        "export",
        "kubeconfig",
        "--name",
        "datalab-playbooks-e2e",
        "--kubeconfig",
        str(admin),
    ] in world.argvs()
    world.forget_calls()
    provider.release_kind_cluster(FakeConfig(run_root))
    assert world.argvs() == []


def test_kind_provider_installs_a_vcluster_per_worker_on_its_own_node_port(on_fake_path, tmp_path, monkeypatch):
    from tests.e2e import kind as provider

    world = on_fake_path
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    admin = provider.kind_cluster(FakeTmpPathFactory(tmp_path / "run" / "popen-gw3"), "gw3", keep=True)
    world.expect_vcluster(admin, admin.parent / "vc-gw3.kubeconfig", "vc-gw3", context="kind-datalab-playbooks-e2e")
    path = provider.install_vcluster(admin, "vc-gw3", "vcluster-vc-gw3")
    helm = next(call for call in world.calls() if call["tool"] == "helm")
    assert helm["argv"][:4] == ["upgrade", "--install", "vc-gw3", "vcluster"]
    values = yaml.safe_load(next(iter(helm["files"].values())))
    assert values["controlPlane"]["service"]["httpsNodePort"] == 31403
    assert ["docker", "port", "datalab-playbooks-e2e-control-plane", "31403/tcp"] in world.argvs()
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "my-vcluster"
    assert config["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{HOST_PORT}"

    monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{provider.VCLUSTER_SLOTS}")
    with pytest.raises(RuntimeError, match="run with fewer workers"):
        provider.install_vcluster(admin, "vc-too-many", "vcluster-vc-too-many")


def test_kind_provider_says_why_it_is_unavailable(tmp_path, monkeypatch):
    from tests.e2e import kind as provider

    monkeypatch.setenv("PATH", str(tmp_path))
    assert provider.kind_available() == "not on PATH: kind, kubectl"


def test_token_kubeconfig_keeps_the_admin_server_and_ca(tmp_path):
    from tests.e2e import kind as provider

    admin = tmp_path / "admin.kubeconfig"
    admin.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "kind-x",
                        "cluster": {"server": "https://127.0.0.1:39211", "certificate-authority-data": "Q0E="},
                    }
                ],
                "contexts": [{"name": "kind-x", "context": {"cluster": "kind-x", "user": "kind-x"}}],
                "current-context": "kind-x",
                "users": [{"name": "kind-x", "user": {"client-certificate-data": "Qw==", "client-key-data": "Sw=="}}],
            }
        )
    )
    path = provider.token_kubeconfig(admin, tmp_path / "session.kubeconfig", "t0ken", "pb-gw0-abc123")
    config = yaml.safe_load(path.read_text())
    assert config["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:39211",
        "certificate-authority-data": "Q0E=",
    }
    assert config["users"] == [{"name": "session", "user": {"token": "t0ken"}}]
    assert config["contexts"][0]["context"]["namespace"] == "pb-gw0-abc123"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
