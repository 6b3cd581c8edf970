"""Dask Gateway: the values and helm argv gateway.up builds, its refusals, and the smoke check
against a real dask-gateway-server (local backend, simple auth) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from invoke import Context
from invoke.exceptions import Exit

import playbooks.backends
import playbooks.target
from playbooks.backends import ClusterBackend
from playbooks.chart_files import (
    BadPattern,
    chart_digest,
    chart_files,
    glob_regex,
    ignored,
    parse_rules,
)
from playbooks.defaults import DEFAULTS, GATEWAY_VERSION
from playbooks.gateway_check import run_check, versions_line
from playbooks.helm import Helm, merge_values, parse_version, redact_values, values_file
from playbooks.procs import free_port, http_ok, start, stop_group, wait_until
from playbooks.render import REDACTED, common_labels, manifests_dir
from playbooks.services import gateway, gateway_chart
from tests.conftest import QUIET_ENV, tool
from tests.fakes.helm import FakeHelm
from tests.fakes.kubectl import FakeKubectl, client_version, kube_list
from tests.manifests import FakeContext, config, target, validate_all

ROOT = Path(__file__).resolve().parent.parent
VALUES = str(manifests_dir() / "gateway" / "values.yaml")
NS = "ws-frank-s1"
HELM_FLAGS = ["--kubeconfig", "/dev/null", "--kube-context", "ctx", "--namespace", NS]
KUBECTL_FLAGS = ["--kubeconfig", "/dev/null", "--context", "ctx", "--namespace", NS]
LIST = [
    "list",
    "-o",
    "json",
    "--filter",
    "^dask-gateway$",
    "--deployed",
    "--failed",
    "--pending",
    "--uninstalling",
    "--superseded",
]
TMP_VALUES = re.compile(r"^.+/playbooks-helm-[^/]+/overrides\.yaml$")
TRAEFIK_TAG = DEFAULTS["gateway"]["traefik_image"].rpartition(":")[2]
DEPLOYED = {"name": "dask-gateway", "status": "deployed", "chart": f"dask-gateway-{GATEWAY_VERSION}", "revision": "3"}
KNOWN_PASSWORD = "kn0wn-Gateway-pa55word-for-the-tests"


# ---------------------------------------------------------------- values


def extra(overrides=None, password=KNOWN_PASSWORD):
    return gateway.overrides(FakeContext(config(overrides)), "dask-gateway", password)


def test_values_file_and_overrides_make_the_chart_values():
    values = merge_values(gateway.file_values(), extra())
    gw = values["gateway"]
    assert gw["auth"]["type"] == "simple"
    assert "simple" not in gw["auth"], "the chart would copy a password into a ConfigMap"
    pull = {"pullPolicy": "IfNotPresent"}  # nodes that cannot pull use what they have
    assert gw["image"] == {"name": "ghcr.io/dask/dask-gateway-server", "tag": GATEWAY_VERSION, **pull}
    assert values["controller"]["image"] == gw["image"]
    assert gw["backend"]["image"] == {"name": "ghcr.io/dask/dask-gateway", "tag": GATEWAY_VERSION, **pull}
    assert values["traefik"]["image"] == {"name": "docker.io/traefik", "tag": TRAEFIK_TAG, **pull}
    assert values["traefik"]["service"]["type"] == "ClusterIP"
    assert gw["env"] == [
        {
            "name": "DATALAB_GATEWAY_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "dask-gateway-password", "key": "password"}},
        }
    ]
    assert sorted(gw["extraConfig"]) == ["datalab-10-password", "datalab-20-commands"]
    for part in ("gateway", "controller", "traefik"):
        assert values[part]["resources"]["limits"]["memory"]


def test_cluster_pods_get_the_restricted_security_context_and_resources():
    backend = extra()["gateway"]["backend"]
    for role in ("scheduler", "worker"):
        pod = backend[role]["extraPodConfig"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}
        container = backend[role]["extraContainerConfig"]["securityContext"]
        assert container == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        }
        assert backend[role]["memory"]["limit"]
    assert backend["worker"]["threads"] == 1


def test_overrides_follow_configuration():
    changed = extra(
        {
            "gateway": {
                "worker": {"memory": {"request": "2G", "limit": "2G"}},
                "traefik_image": f"mirror.local/traefik:{TRAEFIK_TAG}",
            }
        }
    )
    assert changed["gateway"]["backend"]["worker"]["memory"] == {"request": "2G", "limit": "2G"}
    assert changed["traefik"]["image"] == {
        "name": "mirror.local/traefik",
        "tag": TRAEFIK_TAG,
        "pullPolicy": "IfNotPresent",
    }


def test_no_password_in_the_values_only_a_digest_that_changes_with_it():
    text = json.dumps(merge_values(gateway.file_values(), extra()))
    assert KNOWN_PASSWORD not in text
    digest = extra()["gateway"]["annotations"][gateway.DIGEST_ANNOTATION]
    assert digest == extra()["gateway"]["annotations"][gateway.DIGEST_ANNOTATION]
    assert digest != extra(password="another")["gateway"]["annotations"][gateway.DIGEST_ANNOTATION]


def test_untagged_image_is_refused():
    with pytest.raises(gateway.PlaybookError, match="has no tag: pin it"):
        extra({"gateway": {"server_image": "ghcr.io/dask/dask-gateway-server"}})


def test_extra_config_reads_the_password_and_refuses_an_empty_one(monkeypatch):
    traitlets = pytest.importorskip("traitlets.config", reason="traitlets comes with dask-gateway-server (test extra)")
    snippets = gateway.file_values()["gateway"]["extraConfig"]
    c = traitlets.Config()
    monkeypatch.setenv("DATALAB_GATEWAY_PASSWORD", "from-the-secret")
    for key in sorted(snippets):
        exec(snippets[key], {"c": c})
    assert c.SimpleAuthenticator.password == "from-the-secret"
    assert c.KubeClusterConfig.scheduler_cmd == ["dask", "scheduler"]
    assert c.KubeClusterConfig.worker_cmd == ["dask", "worker"]
    monkeypatch.setenv("DATALAB_GATEWAY_PASSWORD", "")
    with pytest.raises(ValueError, match="DATALAB_GATEWAY_PASSWORD is empty"):
        exec(snippets["datalab-10-password"], {"c": traitlets.Config()})


def test_password_secret_is_labelled_valid_and_redacted():
    docs = gateway.password_docs("dask-gateway", NS, KNOWN_PASSWORD)
    validate_all(docs)
    (secret,) = docs
    assert secret["metadata"]["name"] == "dask-gateway-password"
    assert common_labels("gateway-auth", "dask-gateway").items() <= secret["metadata"]["labels"].items()
    assert base64.b64decode(secret["data"]["password"]).decode() == KNOWN_PASSWORD


def test_redact_values_hides_secret_keys_at_any_depth():
    shown = redact_values(
        {"gateway": {"auth": {"simple": {"password": "x"}, "jupyterhub": {"apiToken": None}}}, "a": [{"token": "t"}]}
    )
    assert shown == {
        "gateway": {"auth": {"simple": {"password": REDACTED}, "jupyterhub": {"apiToken": None}}},
        "a": [{"token": REDACTED}],
    }


@pytest.mark.parametrize(
    ("release", "traefik"),
    [
        ("dask-gateway", "traefik-dask-gateway"),
        ("gw", "traefik-gw-dask-gateway"),
        ("team-dask-gateway-2", "traefik-team-dask-gateway-2"),
        ("a" * 53, "traefik-" + ("a" * 53 + "-dask-gateway")[:55]),
    ],
)
def test_service_names_follow_the_chart_helpers(release, traefik):
    assert gateway.traefik_service(release) == traefik
    assert len(traefik) <= 63


@pytest.mark.parametrize("name", ["Dask", "-gw", "a" * 54, "gw_1"])
def test_bad_release_names_are_refused(name):
    with pytest.raises(gateway.PlaybookError, match="invalid release name"):
        gateway.validate_release(name)


# ---------------------------------------------------------------- chart sources and argv


def cfg():
    return config().gateway


def test_chart_sources(tmp_path):
    assert gateway.chart_source("dask/dask-gateway", cfg()) == gateway.ChartSource(
        "repo", "dask/dask-gateway", GATEWAY_VERSION, ("dask", "https://helm.dask.org")
    )
    oci = gateway.chart_source("oci://registry.example/charts/dask-gateway", cfg())
    assert oci.argv() == ["oci://registry.example/charts/dask-gateway", "--version", GATEWAY_VERSION]
    (tmp_path / "Chart.yaml").write_text(f"name: dask-gateway\nversion: {GATEWAY_VERSION}\n")
    local = gateway.chart_source(str(tmp_path), cfg())
    assert local.kind == "local" and local.argv() == [str(tmp_path)]
    assert gateway.chart_source("mirror/dask-gateway", cfg()).repo is None


@pytest.mark.parametrize(
    ("chart", "message"),
    [
        ("./no-such-chart", "is not a chart directory"),
        ("oci://", "invalid OCI reference"),
        ("dask-gateway", "invalid chart"),
        ("a/b/c", "invalid chart"),
    ],
)
def test_bad_chart_is_refused_with_the_fix(chart, message):
    with pytest.raises(gateway.PlaybookError, match=message) as error:
        gateway.chart_source(chart, cfg())
    assert "oci://" in str(error.value)


def test_upgrade_and_uninstall_argv_exactly():
    helm = Helm(target("vcluster"))
    chart = gateway.ChartSource("repo", "dask/dask-gateway", GATEWAY_VERSION).argv()
    assert helm.argv(*helm.upgrade_argv("dask-gateway", chart, [VALUES, "/tmp/x/overrides.yaml"], 600)) == [
        "helm", "upgrade", "--install", "dask-gateway", "dask/dask-gateway", "--version", GATEWAY_VERSION,
        "--values", VALUES, "--values", "/tmp/x/overrides.yaml", "--wait", "--timeout", "600s", *HELM_FLAGS,
    ]  # fmt: skip
    assert helm.argv(*helm.uninstall_argv("dask-gateway", 120)) == [
        "helm",
        "uninstall",
        "dask-gateway",
        "--wait",
        "--timeout",
        "120s",
        *HELM_FLAGS,
    ]
    assert helm.argv("repo", "list", cluster=False) == ["helm", "repo", "list"]


def test_values_file_is_private_and_removed():
    with values_file({"gateway": {"x": 1}}) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert "x: 1" in path.read_text()
    assert not path.exists() and not path.parent.exists()


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("v3.19.0+g3d8990f", (3, 19, 0)),
        ("v4.1.4+g05fa379", (4, 1, 4)),
        ("Client: v2.16.12+g47f0b88", (2, 16, 12)),
        ("", None),
    ],
)
def test_parse_version(text, version):
    assert parse_version(text) == version


# ---------------------------------------------------------------- the tasks, with recording helm and kubectl


SELECTOR = "app.kubernetes.io/name=dask-gateway,app.kubernetes.io/instance=dask-gateway"
APPLY = ["--server-side", "--field-manager=datalab-playbooks", "--force-conflicts", "-f", "-"]


def pod(ready: bool) -> dict:
    return {
        "kind": "Pod",
        "metadata": {"name": "api-dask-gateway-1"},
        "status": {
            "phase": "Running" if ready else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [] if ready else [{"state": {"waiting": {"reason": "ContainerCreating"}}}],
        },
    }


def secret(password: str) -> dict:
    return {"kind": "Secret", "data": {"password": base64.b64encode(password.encode()).decode()}}


def applied_password(call) -> str:
    (doc,) = [d for d in yaml.safe_load_all(call.stdin) if d and d["kind"] == "Secret"]
    return base64.b64decode(doc["data"]["password"]).decode()


class Fakes:
    """The helm stand-in (tests/fakes/helm.py) and the strict fake kubectl, scripted with the gateway's calls."""

    def __init__(self, folder: Path, kubectl: FakeKubectl):
        self.helm = FakeHelm(folder / "fake-helm")
        self.kubectl = kubectl
        kubectl.flags = KUBECTL_FLAGS

    def state(self, **values) -> None:
        self.helm.state(**values)

    def context(self, **overrides) -> Context:
        tools = {"tools": {"helm": self.helm.path, "kubectl": self.kubectl.path}}
        return Context(config=config(merge_values(tools, overrides)))

    # ------------------------------------------------ kubectl calls, one helper per question the tasks ask

    def version(self) -> None:
        self.kubectl.expect("version", "--client", "-o", "json", flags=[], stdout=client_version("v1.35.0"))

    def password(self, password: str | None) -> None:
        answer = secret(password) if password else ""  # --ignore-not-found: nothing at all
        self.kubectl.expect("get", "secret/dask-gateway-password", "-o", "json", "--ignore-not-found", stdout=answer)

    def writes(self) -> None:
        """The Secret, then the CRDs: each differs from what is there (diff exits 1), then is applied."""
        self.kubectl.expect("diff", *APPLY, exit=1, stdout="diff -u -N ...\n")
        self.kubectl.expect("apply", *APPLY, stdout="applied\n")

    def pods(self, ready: bool = True) -> None:
        self.kubectl.expect("get", "pods", "-o", "json", "-l", SELECTOR, stdout=kube_list(pod(ready)))

    def service(self, present: bool = True) -> None:
        answer = {"kind": "Service", "spec": {"ports": [{"name": "web", "port": 80}]}} if present else ""
        self.kubectl.expect("get", "service/traefik-dask-gateway", "-o", "json", "--ignore-not-found", stdout=answer)

    def install(self, password: str | None) -> None:
        """What a gateway.up that installs or upgrades asks kubectl, in order."""
        self.version()
        self.password(password)
        self.writes()
        self.pods()
        self.service()

    def applies(self) -> list:
        return [call for call in self.kubectl.calls() if call.args[:1] == ["apply"]]


@pytest.fixture
def fakes(tmp_path, fake_kubectl):
    return Fakes(tmp_path, fake_kubectl)


@pytest.fixture
def in_mode(monkeypatch):
    """Make target detection answer with a target of the given mode, without any API call."""

    def use(mode: str):
        found = playbooks.target.local_target("test") if mode == "local" else target(mode, NS)
        monkeypatch.setattr(playbooks.backends, "local_from_config", lambda c, mode=None: found.local)
        monkeypatch.setattr(playbooks.backends, "detect", lambda **_: found)
        return found

    return use


def test_namespace_mode_refuses_before_any_helm_or_kubectl_call(fakes, in_mode, capsys):
    in_mode("namespace")
    with pytest.raises(Exit) as error:
        gateway.up(fakes.context())
    message = str(error.value.message)
    assert "needs vCluster mode" in message and "CRDs and cluster roles" in message
    assert "vCluster kubeconfig" in message and "\n" not in message
    assert fakes.helm.calls() == [] and fakes.kubectl.calls() == []


def test_local_mode_runs_no_helm_or_kubectl(fakes, in_mode, capsys, tmp_path):
    """Local mode runs the server as a process (tests/test_local_dask_gateway.py); with none running, it says so."""
    in_mode("local")
    context = fakes.context(local={**DEFAULTS["local"], "state_dir": str(tmp_path / "state")})
    with pytest.raises(Exit, match="--dry-run is for the cluster modes"):
        gateway.up(context, dry_run=True)
    gateway.down(context)
    gateway.status(context)
    with pytest.raises(Exit, match=r"Dask Gateway is not running on this machine: run `invoke gateway.up`"):
        gateway.smoke(context)
    out = capsys.readouterr().out
    assert "gateway: nothing running" in out and "gateway: not running" in out
    assert fakes.helm.calls() == [] and fakes.kubectl.calls() == []
    assert not (tmp_path / "state").exists()


def test_install_runs_the_exact_helm_commands_and_keeps_the_password_out(fakes, in_mode, capsys):
    in_mode("vcluster")
    fakes.state()
    fakes.install(password=None)
    gateway.up(fakes.context())
    out = capsys.readouterr().out
    helm_calls = fakes.helm.calls()
    argvs = [call["argv"] for call in helm_calls]
    assert argvs[:6] == [
        ["version", "--short"],
        ["repo", "list", "-o", "json"],
        ["repo", "add", "dask", "https://helm.dask.org"],
        ["search", "repo", "dask/dask-gateway", "--version", GATEWAY_VERSION, "-o", "json"],
        [*LIST, *HELM_FLAGS],
        # The chart is read (its CRDs) before any write: a missing version stops here.
        ["show", "crds", "dask/dask-gateway", "--version", GATEWAY_VERSION],
    ]
    upgrade = argvs[6]
    temp = upgrade[9]
    assert TMP_VALUES.match(temp)
    assert upgrade == [
        "upgrade", "--install", "dask-gateway", "dask/dask-gateway", "--version", GATEWAY_VERSION,
        "--values", VALUES, "--values", temp, "--wait", "--timeout", "600s", *HELM_FLAGS,
    ]  # fmt: skip
    assert len(argvs) == 7
    assert helm_calls[6]["files"][temp]["mode"] == "0o600"
    assert not Path(temp).exists() and not Path(temp).parent.exists()
    assert "secretKeyRef" in helm_calls[6]["files"][temp]["text"]
    # The Secret, then the CRDs (left over from an earlier install, helm would keep them
    # old), went in by server-side apply before helm ran.
    applies = fakes.applies()
    assert [a.argv for a in applies] == [[*KUBECTL_FLAGS, "apply", *APPLY]] * 2
    assert "kind: Secret" in applies[0].stdin and "app.kubernetes.io/managed-by: datalab-playbooks" in applies[0].stdin
    assert "kind: CustomResourceDefinition" in applies[1].stdin
    assert applies[1].time < helm_calls[6]["time"]
    password = applied_password(applies[0])
    assert len(password) >= 32
    everything = json.dumps(fakes.kubectl.argvs() + fakes.helm.argvs()) + json.dumps(fakes.helm.calls()) + out
    assert password not in everything
    assert "address          http://traefik-dask-gateway.ws-frank-s1.svc:80" in out
    assert "proxy address    gateway://traefik-dask-gateway.ws-frank-s1.svc:80" in out


def test_upgrade_applies_the_crds_server_side_before_helm_upgrade(fakes, in_mode, capsys):
    in_mode("vcluster")
    fakes.state(repos={"dask": "https://helm.dask.org/"}, release=DEPLOYED, values={})
    fakes.install(password=KNOWN_PASSWORD)
    gateway.up(fakes.context())
    assert fakes.helm.argvs()[:6] == [
        ["version", "--short"],
        ["repo", "list", "-o", "json"],
        ["search", "repo", "dask/dask-gateway", "--version", GATEWAY_VERSION, "-o", "json"],
        [*LIST, *HELM_FLAGS],
        ["get", "values", "dask-gateway", "-o", "json", *HELM_FLAGS],
        ["show", "crds", "dask/dask-gateway", "--version", GATEWAY_VERSION],
    ]
    secret_apply, crd_apply = fakes.applies()
    upgrade = next(c for c in fakes.helm.calls() if c["argv"][0] == "upgrade")
    assert crd_apply.time < upgrade["time"]
    assert "--server-side" in crd_apply.argv and "--force-conflicts" in crd_apply.argv
    assert "kind: CustomResourceDefinition" in crd_apply.stdin and "daskclusters.gateway.dask.org" in crd_apply.stdin
    assert applied_password(secret_apply) == KNOWN_PASSWORD, "the existing password is reused"
    assert KNOWN_PASSWORD not in capsys.readouterr().out


@pytest.fixture
def history(fakes, monkeypatch):
    """`helm history --max 1`'s description as helm keeps it (tests/fakes/helm.py has no history): the
    --description of the last upgrade, "Upgrade complete" without one, else the state's."""

    def latest(helm, release):
        for argv in reversed(fakes.helm.argvs()):
            if argv[0] == "upgrade":
                return argv[argv.index("--description") + 1] if "--description" in argv else "Upgrade complete"
        return fakes.helm.read_state().get("description", "Install complete")

    monkeypatch.setattr(gateway_chart, "last_description", latest)


def test_unchanged_release_is_not_upgraded(fakes, in_mode, history, capsys):
    in_mode("vcluster")
    deployed = merge_values(gateway.file_values(), extra())
    fakes.state(repos={"dask": "https://helm.dask.org"}, release=DEPLOYED, values=deployed)
    fakes.version()
    fakes.password(KNOWN_PASSWORD)
    fakes.service()  # and no write: not the Secret, not the CRDs
    gateway.up(fakes.context())
    assert not any(a[0] in ("upgrade", "show") for a in fakes.helm.argvs())
    assert "no change" in capsys.readouterr().out


def small_chart(folder: Path) -> Path:
    chart = folder / "dask-gateway"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: dask-gateway\nversion: {GATEWAY_VERSION}\n")
    (chart / "templates" / "a.yaml").write_text("kind: ConfigMap\n")
    return chart


def test_local_chart_directory_needs_no_repository(fakes, in_mode, tmp_path):
    in_mode("vcluster")
    chart = small_chart(tmp_path)
    fakes.state(release=DEPLOYED, values={})
    fakes.install(password=KNOWN_PASSWORD)
    gateway.up(fakes.context(), chart=str(chart), timeout="300")
    argvs = fakes.helm.argvs()
    assert not any(a[0] in ("repo", "search") for a in argvs)
    assert ["show", "crds", str(chart)] in argvs
    upgrade = next(a for a in argvs if a[0] == "upgrade")
    assert upgrade[:8] == [
        "upgrade",
        "--install",
        "dask-gateway",
        str(chart),
        "--values",
        VALUES,
        "--values",
        upgrade[7],
    ]
    description = (
        f"datalab-playbooks: local chart dask-gateway {GATEWAY_VERSION}, chart files sha256:{chart_digest(chart)}"
    )
    assert upgrade[8:] == ["--wait", "--timeout", "300s", "--description", description, *HELM_FLAGS]


def test_local_chart_is_left_alone_until_a_file_changes(fakes, in_mode, history, tmp_path, capsys):
    in_mode("vcluster")
    chart = small_chart(tmp_path)
    # No release yet; `helm get values` answers what up sets, as it will after the install.
    fakes.state(values=merge_values(gateway.file_values(), extra()))
    fakes.install(password=KNOWN_PASSWORD)

    def upgrades() -> list[list[str]]:
        return [a for a in fakes.helm.argvs() if a[0] == "upgrade"]

    gateway.up(fakes.context(), chart=str(chart))
    assert len(upgrades()) == 1
    capsys.readouterr()
    os.utime(chart / "templates" / "a.yaml", (0, 0))  # timestamps do not count
    gateway.up(fakes.context(), chart=str(chart))
    assert len(upgrades()) == 1 and sum(a[0] == "show" for a in fakes.helm.argvs()) == 1
    digest = chart_digest(chart)
    out = capsys.readouterr().out
    assert (
        f"release dask-gateway-{GATEWAY_VERSION} already deployed from the same chart files (sha256:{digest[:12]}…) with these values; no change"
        in out
    )

    (chart / "templates" / "a.yaml").write_text("kind: Secret\n")
    gateway.up(fakes.context(), chart=str(chart))
    assert len(upgrades()) == 2
    assert upgrades()[1][upgrades()[1].index("--description") + 1].endswith(f"sha256:{chart_digest(chart)}")
    assert chart_digest(chart) != digest


def test_switching_between_a_local_chart_and_the_repository_chart_upgrades(fakes, in_mode, history, tmp_path):
    """Same version, same values: what was deployed came from other files all the same."""
    in_mode("vcluster")
    chart = small_chart(tmp_path)
    values = merge_values(gateway.file_values(), extra())
    local_description = (
        f"datalab-playbooks: local chart dask-gateway {GATEWAY_VERSION}, chart files sha256:{chart_digest(chart)}"
    )
    fakes.state(repos={"dask": "https://helm.dask.org"}, release=DEPLOYED, values=values, description=local_description)
    fakes.install(password=KNOWN_PASSWORD)
    gateway.up(fakes.context())
    (back,) = [a for a in fakes.helm.argvs() if a[0] == "upgrade"]
    assert "dask/dask-gateway" in back and "--description" not in back
    gateway.up(fakes.context(), chart=str(chart))  # the last revision came from the repository
    assert len([a for a in fakes.helm.argvs() if a[0] == "upgrade"]) == 2
    gateway.up(fakes.context(), chart=str(chart))
    assert len([a for a in fakes.helm.argvs() if a[0] == "upgrade"]) == 2


def test_last_description_reads_the_latest_revision(tmp_path):
    script = tmp_path / "helm"
    revisions = [{"revision": 2, "description": "Upgrade complete"}, {"revision": 10, "description": "latest"}]
    script.write_text(f'#!/bin/sh\necho {shlex.quote(json.dumps(revisions))}\necho "$@" > {tmp_path}/argv\n')
    script.chmod(0o755)
    helm = Helm(target("vcluster"), binary=str(script))
    assert gateway.last_description(helm, "dask-gateway") == "latest"
    assert (tmp_path / "argv").read_text().split() == [
        "history",
        "dask-gateway",
        "--max",
        "1",
        "-o",
        "json",
        *HELM_FLAGS,
    ]
    assert gateway.recorded_digest("latest") is None
    assert gateway.recorded_digest(f"datalab-playbooks: local chart x 1.0, chart files sha256:{'ab' * 32}") == "ab" * 32


# ---------------------------------------------------------------- a local chart's files, as helm loads them


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.yaml", "a.yaml", True),
        ("*.yaml", "templates/a.yaml", False),  # * stops at /
        ("templates/*.yaml", "templates/a.yaml", True),
        ("t?mp", "temp", True),
        ("t?mp", "t/mp", False),
        ("[a-c]x", "bx", True),
        ("[^a-c]x", "dx", True),
        ("[^a-c]x", "ax", False),
        ("[z-a]x", "ax", False),  # an empty range matches nothing
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("a+b(c)", "a+b(c)", True),  # regex characters are literal
    ],
)
def test_glob_matches_as_go_filepath_match(pattern, path, matches):
    assert (glob_regex(pattern).fullmatch(path) is not None) == matches


@pytest.mark.parametrize("pattern", ["[", "[]", "[-a]", "[a-]", "a\\"])
def test_glob_refuses_what_go_refuses(pattern):
    with pytest.raises(BadPattern):
        glob_regex(pattern)


def test_helmignore_rules_are_evaluated_as_helm_does():
    rules = parse_rules("\ufeff# comment\n\n*.bak\ndocs/\n/top.txt\nsub/*.tmp\n")
    assert [r.raw for r in rules] == ["*.bak", "docs/", "/top.txt", "sub/*.tmp"]
    assert ignored(rules, "a/b/x.bak", False)  # no slash: the last element only
    assert ignored(rules, "nested/docs", True) and not ignored(rules, "docs", False)  # docs/: directories only
    assert ignored(rules, "top.txt", False) and not ignored(rules, "nested/top.txt", False)
    assert ignored(rules, "sub/a.tmp", False) and not ignored(rules, "sub/deeper/a.tmp", False)
    # helm's quirk, kept: a negated rule that does not match ignores the path.
    negated = parse_rules("!keep.txt")
    assert not ignored(negated, "keep.txt", False) and ignored(negated, "Chart.yaml", False)
    with pytest.raises(BadPattern, match="double-star"):
        parse_rules("templates/**/x")


def tricky_chart(folder: Path) -> Path:
    chart = folder / "dask-gateway"
    files = {
        ".helmignore": "# comment\n*.bak\ndocs/\n/top.txt\nsub/*.tmp\n.git/\n",
        "Chart.yaml": f"apiVersion: v2\nname: dask-gateway\nversion: {GATEWAY_VERSION}\n",
        "values.yaml": "a: 1\n",
        "templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        "templates/.hidden.yaml": "ignored by helm's default rule\n",
        "templates/old.bak": "x",
        "docs/readme.md": "x",
        "nested/docs/z.txt": "x",
        "top.txt": "x",
        "nested/top.txt": "kept",
        "sub/a.tmp": "x",
        "sub/deeper/b.tmp": "kept",
        "files/[weird] name.txt": "kept",
        ".git/HEAD": "x",
    }
    for name, text in files.items():
        (chart / name).parent.mkdir(parents=True, exist_ok=True)
        (chart / name).write_text(text)
    return chart


def test_chart_files_follow_helmignore_and_helm_defaults(tmp_path):
    assert chart_files(tricky_chart(tmp_path)) == [
        ".helmignore", "Chart.yaml", "files/[weird] name.txt", "nested/top.txt", "sub/deeper/b.tmp",
        "templates/cm.yaml", "values.yaml",
    ]  # fmt: skip


def test_chart_files_are_the_files_helm_packages(tmp_path):
    """The emulation against the real thing: `helm package` loads a directory as install does."""
    helm = tool("helm")
    if not shutil.which(helm):
        pytest.skip("helm is not installed: run scripts/setup.sh")
    chart = tricky_chart(tmp_path / "src")
    subprocess.run([helm, "package", str(chart), "-d", str(tmp_path)], check=True, capture_output=True, timeout=60)
    with tarfile.open(tmp_path / f"dask-gateway-{GATEWAY_VERSION}.tgz") as archive:
        packaged = sorted(m.name.removeprefix("dask-gateway/") for m in archive.getmembers() if m.isfile())
    assert packaged == sorted(chart_files(chart))


def test_chart_digest_counts_contents_names_and_loaded_files_only(tmp_path):
    chart = tricky_chart(tmp_path / "a")
    digest = chart_digest(chart)
    assert len(digest) == 64 and digest == chart_digest(chart)
    copy = tmp_path / "b" / "dask-gateway"
    shutil.copytree(chart, copy)  # other path, other timestamps
    os.utime(copy / "values.yaml", (0, 0))
    assert chart_digest(copy) == digest
    (copy / "templates" / "old.bak").write_text("ignored by .helmignore")
    (copy / "templates" / ".hidden.yaml").write_text("ignored by helm's default rule")
    (copy / "docs" / "new.md").write_text("in an ignored directory")
    assert chart_digest(copy) == digest
    (copy / "values.yaml").write_text("a: 2\n")
    assert chart_digest(copy) != digest
    (copy / "values.yaml").write_text("a: 1\n")
    (copy / "templates" / "cm.yaml").rename(copy / "templates" / "cm2.yaml")
    assert chart_digest(copy) != digest
    (copy / "templates" / "cm2.yaml").rename(copy / "templates" / "cm.yaml")
    assert chart_digest(copy) == digest
    (copy / "templates" / "extra.yaml").write_text("")  # an empty file counts too
    assert chart_digest(copy) != digest


def test_unreadable_chart_is_one_line(tmp_path):
    chart = small_chart(tmp_path)
    (chart / "templates" / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    with pytest.raises(
        gateway.PlaybookError, match=r"cannot read the chart .+: No such file or directory \(.+gone\.yaml\)"
    ):
        gateway.local_digest(gateway.chart_source(str(chart), cfg()))


def test_chart_digest_of_an_archive_is_of_its_bytes(tmp_path):
    archive = tmp_path / f"dask-gateway-{GATEWAY_VERSION}.tgz"
    archive.write_bytes(b"one")
    first = chart_digest(archive)
    archive.write_bytes(b"two")
    assert chart_digest(archive) != first


def test_oci_reference_needs_no_repository(fakes, in_mode):
    in_mode("vcluster")
    ref = "oci://registry.example/charts/dask-gateway"
    fakes.state(release=DEPLOYED, values={})
    fakes.install(password=KNOWN_PASSWORD)
    gateway.up(fakes.context(), chart=ref)
    argvs = fakes.helm.argvs()
    assert not any(a[0] in ("repo", "search") for a in argvs)
    assert ["show", "crds", ref, "--version", GATEWAY_VERSION] in argvs
    upgrade = next(a for a in argvs if a[0] == "upgrade")
    assert upgrade[:6] == ["upgrade", "--install", "dask-gateway", ref, "--version", GATEWAY_VERSION]


def test_dry_run_prints_argv_and_values_and_changes_nothing(fakes, in_mode, capsys):
    in_mode("vcluster")
    fakes.state(release=DEPLOYED, values={})
    fakes.version()
    fakes.password(KNOWN_PASSWORD)  # reads only: any write would be an unexpected call
    gateway.up(fakes.context(), dry_run=True)
    out = capsys.readouterr().out
    helm = fakes.helm.path
    assert f"$ {helm} repo add dask https://helm.dask.org" in out
    assert (
        f"$ {helm} upgrade --install dask-gateway dask/dask-gateway --version {GATEWAY_VERSION} --values {VALUES} "
        f"--values OVERRIDES.yaml --wait --timeout 600s {' '.join(HELM_FLAGS)}"
    ) in out
    assert "type: ClusterIP" in out and "secretKeyRef" in out
    assert "the chart's 2 CRDs: daskclusters.gateway.dask.org, ingressroutes.traefik.io" in out
    assert KNOWN_PASSWORD not in out and base64.b64encode(KNOWN_PASSWORD.encode()).decode() not in out
    assert "password: <redacted>" in out  # the Secret, as kubectl would apply it
    writes = [a for a in fakes.helm.argvs() if a[0] in ("upgrade", "uninstall") or a[:2] == ["repo", "add"]]
    writes += [c.args for c in fakes.kubectl.calls() if c.args[:1] in (["apply"], ["delete"], ["diff"])]
    assert writes == []
    assert KNOWN_PASSWORD not in json.dumps(fakes.helm.argvs() + fakes.kubectl.argvs())


def test_failed_install_prints_evidence_and_one_line(fakes, in_mode, capsys):
    in_mode("vcluster")
    fakes.state(repos={"dask": "https://helm.dask.org"}, upgrade_error="UPGRADE FAILED: context deadline exceeded")
    fakes.version()
    fakes.password(None)
    fakes.writes()
    fakes.pods(ready=False)  # should helm take long enough for a progress line
    # The evidence: what kubectl says, each section once.
    pods_table = "NAME                 READY   STATUS\napi-dask-gateway-1   0/1     Pending\n"
    described = "Name:         api-dask-gateway-1\nStatus:       Pending\n"
    events = "LAST SEEN   TYPE      REASON             OBJECT\n10s         Warning   FailedScheduling   pod/api-dask-gateway-1\n"
    logs = "[pod/api-dask-gateway-1/gateway] starting\n"
    evidence = {
        ("get", "pods", "-l", SELECTOR, "-o", "wide"): pods_table,
        ("describe", "pods", "-l", SELECTOR): described,
        ("get", "events", "--sort-by=.lastTimestamp"): events,
        ("logs", "-l", SELECTOR, "--all-containers", "--prefix", "--tail=40"): logs,
    }
    for args, answer in evidence.items():
        fakes.kubectl.expect(*args, stdout=answer, times=1)
    with pytest.raises(Exit) as error:
        gateway.up(fakes.context())
    message = str(error.value.message)
    assert "context deadline exceeded" in message and "see the evidence above" in message and "\n" not in message
    out = capsys.readouterr().out
    assert (
        "--- pods: kubectl get pods -l app.kubernetes.io/name=dask-gateway,app.kubernetes.io/instance=dask-gateway"
        in out
    )
    for answer in evidence.values():
        assert answer.rstrip() in out


def test_progress_is_shown_while_helm_waits(fakes, in_mode, capsys):
    in_mode("vcluster")
    fakes.state(repos={"dask": "https://helm.dask.org"}, upgrade_seconds=2.5)
    fakes.version()
    fakes.password(None)
    fakes.writes()
    fakes.pods(ready=False)
    fakes.service()
    gateway.up(fakes.context())
    out = capsys.readouterr().out
    assert re.search(r"dask-gateway: 0/1 pods ready; api-dask-gateway-1 ContainerCreating \[\d+s/600s\]", out), out


def test_old_or_missing_helm_is_refused_before_any_write(fakes, in_mode):
    in_mode("vcluster")
    fakes.state(helm_version="v3.7.2+g663a896")
    fakes.version()
    with pytest.raises(
        Exit, match=r"helm 3\.7\.2 \(\S+/fake-helm/helm\) is too old: install helm 3\.8 or newer, or set tools\.helm"
    ):
        gateway.up(fakes.context())
    assert fakes.helm.argvs() == [["version", "--short"]]
    assert fakes.kubectl.argvs() == [["version", "--client", "-o", "json"]]
    with pytest.raises(Exit, match=r"helm-not-installed not found: install helm 3\.8\+ or set tools\.helm"):
        gateway.up(fakes.context(tools={"helm": "helm-not-installed"}))


def test_repository_name_taken_by_another_url_is_refused(fakes, in_mode):
    in_mode("vcluster")
    fakes.state(repos={"dask": "https://charts.example/dask"})
    fakes.version()
    with pytest.raises(Exit, match=re.escape("points to https://charts.example/dask, not https://helm.dask.org")):
        gateway.up(fakes.context())


def expect_password_secrets(fakes, *names: str) -> None:
    """`down` finds the release's password Secret by its labels."""
    selector = "app.kubernetes.io/managed-by=datalab-playbooks,app.kubernetes.io/name=gateway-auth,app.kubernetes.io/instance=dask-gateway"
    answer = "".join(f"{name}\n" for name in names)
    fakes.kubectl.expect("get", "secrets", "-l", selector, "-o", "name", "--ignore-not-found", stdout=answer)


def test_down_when_nothing_is_installed_says_so(fakes, in_mode, capsys):
    in_mode("vcluster")
    fakes.state()
    expect_password_secrets(fakes)
    gateway.down(fakes.context())
    assert "dask-gateway: nothing installed in namespace ws-frank-s1" in capsys.readouterr().out
    assert not any(a[0] == "uninstall" for a in fakes.helm.argvs())
    assert not any(c.args[0] == "delete" for c in fakes.kubectl.calls())


def expect_deletes(fakes, *names: str) -> None:
    """The release's Dask clusters (none left), then names."""
    clusters = ["daskclusters.gateway.dask.org", "-l", "gateway.dask.org/instance=dask-gateway"]
    fakes.kubectl.expect("delete", *clusters, "--ignore-not-found", "--wait=true", "--timeout=600s", times=1)
    deleted = "".join(f'{n.split("/")[0]} "{n.split("/")[1]}" deleted\n' for n in names)
    foreground = ["--ignore-not-found", "--cascade=foreground", "--wait=true", "--timeout=600s"]
    fakes.kubectl.expect("delete", *names, *foreground, stdout=deleted, times=1)


def test_down_uninstalls_and_removes_the_secret_but_keeps_crds(fakes, in_mode, capsys):
    in_mode("vcluster")
    fakes.state(release=DEPLOYED)
    expect_password_secrets(fakes, "secret/dask-gateway-password")
    expect_deletes(fakes, "secret/dask-gateway-password")
    gateway.down(fakes.context())
    assert [*gateway.Helm(target("vcluster")).uninstall_argv("dask-gateway", 600), *HELM_FLAGS] in fakes.helm.argvs()
    deletes = [c.args for c in fakes.kubectl.calls() if c.args[0] == "delete"]
    assert deletes[0][:4] == ["delete", "daskclusters.gateway.dask.org", "-l", "gateway.dask.org/instance=dask-gateway"]
    assert deletes[1][:2] == ["delete", "secret/dask-gateway-password"]
    assert not any("customresourcedefinition" in " ".join(d) for d in deletes)
    assert "kept the chart's CRDs" in capsys.readouterr().out


def test_down_purge_deletes_the_chart_crds(fakes, in_mode):
    in_mode("vcluster")
    fakes.state(repos={"dask": "https://helm.dask.org"}, release=DEPLOYED)
    expect_password_secrets(fakes, "secret/dask-gateway-password")
    crds = ["daskclusters.gateway.dask.org", "ingressroutes.traefik.io"]
    managed = [{"manager": "datalab-playbooks", "operation": "Apply"}]
    fakes.kubectl.expect(
        "get", "customresourcedefinitions.apiextensions.k8s.io", "-o", "json", "--show-managed-fields",
        stdout=kube_list(
            *({"kind": "CustomResourceDefinition", "metadata": {"name": n, "managedFields": managed}} for n in crds),
            # Not the chart's: applied by someone else, so kept.
            {"kind": "CustomResourceDefinition", "metadata": {"name": "other.example.org", "managedFields": []}},
        ),
    )  # fmt: skip
    expect_deletes(
        fakes, "secret/dask-gateway-password", *(f"customresourcedefinition.apiextensions.k8s.io/{n}" for n in crds)
    )
    gateway.down(fakes.context(), purge=True)
    last = fakes.kubectl.argvs()[-1][len(KUBECTL_FLAGS) :]
    assert last[:4] == [
        "delete",
        "secret/dask-gateway-password",
        "customresourcedefinition.apiextensions.k8s.io/daskclusters.gateway.dask.org",
        "customresourcedefinition.apiextensions.k8s.io/ingressroutes.traefik.io",
    ]


def test_status_prints_the_password_only_when_asked(fakes, in_mode, capsys):
    in_mode("vcluster")
    fakes.state(release=DEPLOYED)
    fakes.pods()
    fakes.service()
    fakes.password(KNOWN_PASSWORD)
    gateway.status(fakes.context())
    out = capsys.readouterr().out
    assert f"release deployed, chart dask-gateway-{GATEWAY_VERSION}, revision 3" in out
    assert "1/1 pods ready" in out
    assert KNOWN_PASSWORD not in out and "--show-password" in out
    gateway.status(fakes.context(), show_password=True)
    assert KNOWN_PASSWORD in capsys.readouterr().out


# ---------------------------------------------------------------- the smoke check against a real gateway


async def _clusters(address: str, proxy: str) -> list:
    from dask_gateway import BasicAuth, Gateway

    async with Gateway(
        address, proxy_address=proxy, auth=BasicAuth("datalab-smoke", KNOWN_PASSWORD), asynchronous=True
    ) as gw:
        return await gw.list_clusters()


def _leftover_pids(folder: Path) -> list[int]:
    """Schedulers and workers the local backend started (their working directory is under folder)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(folder) in os.readlink(proc / "cwd"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def start_gateway(folder: Path, password: str | None):
    """A real dask-gateway-server: local-process backend, simple auth, every port on 127.0.0.1."""
    pytest.importorskip(
        "dask_gateway_server", reason=f"dask-gateway-server[local]=={GATEWAY_VERSION} (test extra) is not installed"
    )
    port = free_port()
    clusters = folder / "clusters"
    clusters.mkdir()
    settings = [
        'c.DaskGateway.address = "127.0.0.1:0"',
        f'c.Proxy.address = "127.0.0.1:{port}"',
        'c.DaskGateway.backend_class = "tests.gateway_local.LoopbackBackend"',
        'c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"',
        f"c.LocalBackend.clusters_directory = {str(clusters)!r}",
        "c.LocalBackend.sigint_timeout = 3",
        "c.LocalBackend.sigterm_timeout = 3",
        # distributed 2026.8 has no dask-scheduler / dask-worker commands.
        f"c.LocalClusterConfig.scheduler_cmd = [{tool('dask')!r}, 'scheduler']",
        f"c.LocalClusterConfig.worker_cmd = [{tool('dask')!r}, 'worker']",
        'c.LocalClusterConfig.worker_memory = "512M"',
        "c.LocalClusterConfig.worker_threads = 1",
    ]
    if password is not None:
        settings.append(f"c.SimpleAuthenticator.password = {password!r}")
    (folder / "config.py").write_text("\n".join(settings) + "\n")
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": str(ROOT)}
    log = folder / "gateway.log"
    process = start([tool("dask-gateway-server"), "--config", str(folder / "config.py")], env, log, cwd=folder)
    address = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{address}/api/health"), 60, "dask-gateway-server", process, log)
    except BaseException:
        stop_gateway(process, clusters)
        raise
    return process, address, f"gateway://127.0.0.1:{port}", clusters


def stop_gateway(process, clusters: Path) -> None:
    stop_group(process.pid, grace=20)
    for pid in _leftover_pids(clusters):  # each runs in its own session: stop its group
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture(scope="module")
def gateway_server(tmp_path_factory):
    process, address, proxy, clusters = start_gateway(tmp_path_factory.mktemp("gateway"), KNOWN_PASSWORD)
    yield address, proxy, clusters
    stop_gateway(process, clusters)


@pytest.mark.slow
def test_smoke_check_passes_and_leaves_no_cluster(gateway_server):
    address, proxy, clusters = gateway_server
    report = run_check(address, proxy, KNOWN_PASSWORD, timeout=120)
    assert report.ok, report.render()
    assert [s.name for s in report.steps] == [
        "import client", "connect", "password enforced", "create cluster", "scale to 2 workers", "versions", "compute",
        "shut down",
    ]  # fmt: skip
    import dask
    import distributed

    python = ".".join(map(str, sys.version_info[:3]))
    mine = f"distributed {distributed.__version__}, dask {dask.__version__}, python {python}"
    assert report.steps[5].detail == f"client {mine}; scheduler {mine}; 2 workers {mine}: the same release everywhere"
    assert report.steps[6].detail == "= 5050"
    assert asyncio.run(_clusters(address, proxy)) == []
    wait_until(lambda: not _leftover_pids(clusters), 30, "scheduler and worker processes to exit")


@pytest.mark.slow
def test_smoke_task_reaches_traefik_through_a_port_forward(gateway_server, fakes, in_mode, capsys, monkeypatch):
    """gateway.smoke and the root smoke's entry: labels, password Secret, port-forward, then the real check."""
    address, _, _ = gateway_server
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    found = in_mode("vcluster")
    labels = {"app.kubernetes.io/name": "dask-gateway", "app.kubernetes.io/instance": "dask-gateway"}
    traefik = {"kind": "Service", "metadata": {"name": "traefik-dask-gateway", "labels": labels}}
    services = ("get", "services", "-o", "json", "-l", "app.kubernetes.io/name=dask-gateway")
    fakes.kubectl.expect(*services, stdout=kube_list(traefik), times=1)
    fakes.service()
    fakes.password(KNOWN_PASSWORD)
    # kubectl's forward to the service: a real TCP forward to the real gateway's Traefik stand-in.
    forward = ("port-forward", "--address", "127.0.0.1", "service/traefik-dask-gateway", ":80")
    fakes.kubectl.expect(*forward, forward=int(address.rpartition(":")[2]), times=1)
    gateway.smoke(fakes.context())
    out = capsys.readouterr().out
    forwards = [c for c in fakes.kubectl.calls() if "port-forward" in c.argv]
    assert [c.args for c in forwards] == [list(forward)]
    assert (
        f"dask-gateway: checking http://127.0.0.1:{forwards[0].port} via port-forward to service/traefik-dask-gateway"
        in out
    )
    assert "dask-gateway: PASS" in out and KNOWN_PASSWORD not in out
    fakes.kubectl.expect(*services, stdout=kube_list())  # the release is gone
    assert gateway.SERVICE_SPEC.cluster.smoke_reports(ClusterBackend.on(fakes.context(), found)) == []


@pytest.mark.slow
def test_wrong_password_fails_at_connect(gateway_server):
    address, proxy, _ = gateway_server
    report = run_check(address, proxy, "not-the-password", timeout=30)
    assert not report.ok
    assert report.failure.startswith("connect: the gateway refused the password (401)")


@pytest.mark.slow
def test_gateway_without_a_password_fails_the_check(tmp_path):
    """The check proves auth is on: a server that lets any password in must fail it."""
    process, address, proxy, clusters = start_gateway(tmp_path, password=None)
    try:
        report = run_check(address, proxy, "anything", timeout=30)
    finally:
        stop_gateway(process, clusters)
    assert not report.ok
    assert report.failure.startswith("password enforced: a wrong password was accepted")


def side_versions(distributed: str, python: str, cloudpickle: str = "3.1.2") -> dict:
    packages = {"python": f"{python}.final.0", "dask": distributed, "distributed": distributed,
                "cloudpickle": cloudpickle, "msgpack": "1.1.2", "numpy": None}  # fmt: skip
    return {"packages": packages}


def test_versions_line_names_each_side_and_the_skew():
    image = side_versions("2026.3.0", "3.13.12")
    skewed = {
        "client": side_versions("2026.8.0", "3.11.7", cloudpickle="3.1.3"),
        "scheduler": image,
        "workers": {"tcp://10.0.0.1:1": image, "tcp://10.0.0.2:1": image},
    }
    assert versions_line(skewed) == (
        "client distributed 2026.8.0, dask 2026.8.0, python 3.11.7; "
        "scheduler distributed 2026.3.0, dask 2026.3.0, python 3.13.12; "
        "2 workers distributed 2026.3.0, dask 2026.3.0, python 3.13.12: "
        "version skew in distributed, dask, python, cloudpickle: a client of this gateway needs its image's release "
        "(dask[distributed]==2026.3.0 on Python 3.13)"
    )
    same = {"client": side_versions("2026.3.0", "3.13.2"), "scheduler": image, "workers": {"w": image}}
    assert versions_line(same).endswith(
        "1 worker distributed 2026.3.0, dask 2026.3.0, python 3.13.12: the same release everywhere"
    )
    odd = {"client": image, "scheduler": image, "workers": {"a": image, "b": side_versions("2026.2.0", "3.13.12")}}
    assert "2 workers distributed 2026.2.0/2026.3.0, dask 2026.2.0/2026.3.0" in versions_line(odd)
    assert "\n" not in versions_line(skewed)


def test_no_gateway_is_a_clear_failure():
    port = free_port()
    report = run_check(f"http://127.0.0.1:{port}", f"gateway://127.0.0.1:{port}", "x", timeout=10)
    assert not report.ok
    assert report.failure == f"connect: no gateway answers at http://127.0.0.1:{port}"
