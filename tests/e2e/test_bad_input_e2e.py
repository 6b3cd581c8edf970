"""Bad input that needs an API server to show itself, and the secret scan of a real run."""

import threading
from pathlib import Path

import pytest
import yaml

from tests.conftest import ACCESS_KEY, SECRET_KEY


def one_error_line(result, message):
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_missing_kubectl_applies_nothing(session):
    result = session.run("mlflow.up", env={"INVOKE_TOOLS_KUBECTL": "/nonexistent/kubectl"})
    one_error_line(result, "/nonexistent/kubectl not found: install kubectl or set tools.kubectl")
    assert session.labelled() == []


def test_rejected_token_names_the_fix(session):
    config = yaml.safe_load(Path(session.kubeconfig).read_text())
    config["users"][0]["user"] = {"token": "expired-or-revoked"}
    stale = session.tmp / "stale.kubeconfig"
    stale.write_text(yaml.safe_dump(config))
    result = session.run("mlflow.up", env={"KUBECONFIG": str(stale)})
    one_error_line(result, "rejected the credentials")
    assert "refresh the kubeconfig" in result.stderr
    assert session.labelled() == []


def test_vcluster_mode_without_the_rights_is_refused(session):
    if session.mode != "namespace":
        pytest.skip("only namespace credentials lack the rights")
    one_error_line(session.run("target", "--mode", "vcluster"), "--mode vcluster needs rights to create CRDs")


def test_namespace_that_does_not_exist(session):
    missing = f"{session.namespace}-missing"
    result = session.run("mlflow.up", "--namespace", missing)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    expected = "may not create" if session.mode == "namespace" else f"namespace {missing} does not exist: create it"
    assert expected in result.stderr


def scan_proc_cmdlines(stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                seen.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
        stop.wait(0.02)


def test_secrets_never_reach_argv_output_or_dry_run(session):
    seen: list[str] = []
    stop = threading.Event()
    scanner = threading.Thread(target=scan_proc_cmdlines, args=(stop, seen), daemon=True)
    scanner.start()
    try:
        runs = [
            session.run("mlflow.up", "--dry-run"),
            session.run("mlflow.up"),
            session.run("mlflow.status"),
            session.run("mlflow.up", "--prefix", "changed"),
            session.run("mlflow.down", "--purge", "--dry-run"),
            session.run("mlflow.down", "--purge"),
        ]
    finally:
        stop.set()
        scanner.join()
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert any("kubectl" in line and "apply" in line for line in seen), "the scan saw no kubectl apply: it proves nothing"
    for needle in (SECRET_KEY, ACCESS_KEY):
        assert not [line for line in seen if needle in line]
        for r in runs:
            assert needle not in r.stdout and needle not in r.stderr
