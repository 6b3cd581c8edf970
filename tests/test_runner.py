"""playbooks/runner.py on real child processes and real files; the dry-run of a write shows the command a real run makes."""

from __future__ import annotations

import os
import shlex
import stat
import sys
import time
from pathlib import Path

import pytest

from playbooks.errors import PlaybookError
from playbooks.kube import Kubectl
from playbooks.runner import (
    TimedOut,
    child_env,
    find_command,
    kubeconfig_flags,
    last_line,
    private_file,
    run_argv,
    shown,
    write_private,
)
from playbooks.services import storage_cluster
from tests.fakes.kubectl import client_version, like
from tests.manifests import FakeContext, config, target

ROOT = Path(__file__).resolve().parents[1]
PYTHON = find_command(sys.executable, "the test's own interpreter")


def test_a_child_gets_exactly_the_environment_given_and_any_exit_code_is_a_result():
    script = "import json, os, sys; print(json.dumps(dict(os.environ))); print('said', file=sys.stderr); sys.exit(3)"
    result = run_argv(PYTHON, ["-c", script], {"ONLY": "this"}, timeout=30)
    assert result.exit_code == 3 and not result.ok
    assert '"ONLY": "this"' in result.stdout and "PATH" not in result.stdout
    assert result.stderr == "said\n"


def test_stdin_reaches_the_child_and_lines_stream_as_they_come():
    seen = []
    script = "import sys; print(sys.stdin.read().upper()); print('two', file=sys.stderr)"
    result = run_argv(PYTHON, ["-c", script], {}, timeout=30, stdin="one", lines=seen.append)
    assert result.ok and sorted(seen) == ["ONE\n", "two\n"]  # two pipes: either may be read first
    assert result.stdout == "".join(seen) and result.stderr == ""


def test_a_deadline_kills_the_child_and_raises_timed_out():
    start = time.monotonic()
    with pytest.raises(TimedOut, match="did not finish within 1s"):
        run_argv(PYTHON, ["-c", "import time; time.sleep(60)"], {}, timeout=1)
    assert time.monotonic() - start < 20


def test_a_missing_command_is_one_line_that_names_the_fix():
    with pytest.raises(PlaybookError, match=r"^no-such-kubectl not found: set tools.kubectl$"):
        find_command("no-such-kubectl", "set tools.kubectl")


def test_the_child_environment_drops_what_picks_a_cluster():
    caller = {
        "PATH": "/bin",
        "KUBECONFIG": "/caller",
        "HELM_KUBECONTEXT": "other",
        "HELM_KUBEAPISERVER": "https://x",
        "HELM_NAMESPACE": "other",
        "KIND_CLUSTER_NAME": "other",
        "HELM_CACHE_HOME": "/cache",
    }
    assert child_env(caller) == {"PATH": "/bin", "HELM_CACHE_HOME": "/cache"}
    assert child_env(caller, "/one/file") == {"PATH": "/bin", "HELM_CACHE_HOME": "/cache"}
    listed = f"/a{os.pathsep}/b"
    assert child_env(caller, listed)["KUBECONFIG"] == listed


def test_one_kubeconfig_file_is_a_flag_and_a_list_never_is():
    assert kubeconfig_flags("/one/file") == ["--kubeconfig", "/one/file"]
    assert kubeconfig_flags(f"/a{os.pathsep}/b") == []
    assert kubeconfig_flags(None) == []


def test_last_line_is_the_last_words_said():
    assert last_line("Error: first\n\n  Error: the cause  \n\n") == "Error: the cause"
    assert last_line(" \n") == "(no message)"


def test_shown_is_the_command_line_and_its_stdin():
    assert shown(["kubectl", "apply", "-f", "-"], "kind: X\n", "  # note") == (
        "$ kubectl apply -f -  # note <<'EOF'\nkind: X\nEOF"
    )
    assert shown(["helm", "list", "--filter", "^a b$"]) == "$ helm list --filter '^a b$'"


def test_write_private_is_0600_from_the_start_and_replaces_by_rename(tmp_path):
    path = tmp_path / "new" / "config"
    write_private(path, "one")
    assert path.read_text() == "one"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.chmod(0o644)
    before = path.stat().st_ino
    write_private(path, "two")
    assert path.read_text() == "two" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != before, "written in place: a reader could see half a file"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config"]


def test_a_failed_write_private_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "config"
    write_private(path, "old")
    with pytest.raises(TypeError):
        write_private(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config"]


def test_private_file_lives_in_a_private_folder_until_the_block_ends():
    with private_file("secret: x\n", "values.yaml") as path:
        assert path.read_text() == "secret: x\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not path.exists() and not path.parent.exists()


# ---------------------------------------------------------------- dry-run


def test_storage_dry_run_shows_the_apply_a_real_run_makes(fake_kubectl, capsys):
    """The bucket Job's apply was shown without --field-manager and --force-conflicts: not the real command."""
    fake_kubectl.flags = ["--kubeconfig", "/dev/null", "--context", "ctx", "--namespace", "ws-frank-s1"]
    fake_kubectl.expect("version", "--client", "-o", "json", flags=[], stdout=client_version("v1.35.0"))
    fake_kubectl.expect("get", "secret/storage-credentials", "-o", "json", "--ignore-not-found", stdout="")
    apply = ("apply", "--server-side", like(r"--field-manager=.+"), "--force-conflicts", "-f", "-")
    fake_kubectl.expect(*apply, times=1)
    c = FakeContext(config({"tools": {"kubectl": fake_kubectl.path}}))
    where = target("namespace")
    binary = fake_kubectl.path
    storage_cluster.up(c, where, Kubectl(where, binary=binary, dry_run=True), "ws-frank", "storage")
    printed = capsys.readouterr().out
    assert not [call for call in fake_kubectl.calls() if {"apply", "create", "delete", "patch"} & set(call.args)]
    commands = [line.split(" <<'EOF'")[0] for line in printed.splitlines() if line.startswith("$ ")]
    assert len(commands) == 2, printed  # the store, then its bucket Job

    jobs = storage_cluster.bucket_job_docs(c, where, "storage", "ws-frank", 180)
    Kubectl(where, binary=binary).apply_now(jobs)
    real = f"$ {shlex.join([binary, *fake_kubectl.calls()[-1].argv])}"
    assert "--field-manager=datalab-playbooks" in real and "--force-conflicts" in real
    assert commands == [real, real]
