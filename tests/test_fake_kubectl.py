"""The strict fake kubectl itself: it answers what is scripted, fails anything else, and the test sees it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fakes.kubectl import ANY, FakeKubectl, kube_list, like

ROOT = Path(__file__).resolve().parent.parent


def run(fake: FakeKubectl, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([fake.path, *args], input=stdin, capture_output=True, text=True, timeout=30)


@pytest.fixture
def fake(tmp_path) -> FakeKubectl:
    return FakeKubectl(tmp_path / "fake", flags=["--kubeconfig", "/dev/null"])


def test_a_scripted_call_gets_its_answer_and_is_recorded(fake):
    index = fake.expect("get", "pods", "-o", "json", stdout=kube_list({"kind": "Pod"}))
    fake.expect("get", "secret/x", stderr='Error from server (NotFound): secrets "x" not found\n', exit=1)
    done = run(fake, "--kubeconfig", "/dev/null", "get", "pods", "-o", "json")
    assert done.returncode == 0 and '"items": [{"kind": "Pod"}]' in done.stdout
    failed = run(fake, "--kubeconfig", "/dev/null", "get", "secret/x")
    assert failed.returncode == 1 and failed.stderr == 'Error from server (NotFound): secrets "x" not found\n'
    [first, second] = fake.calls()
    assert first.argv == ["--kubeconfig", "/dev/null", "get", "pods", "-o", "json"]
    assert first.args == ["get", "pods", "-o", "json"] and first.expectation == index and first.exit == 0
    assert second.exit == 1 and not second.unexpected
    fake.check()


def test_an_unexpected_call_exits_2_names_itself_and_fails_the_check(fake):
    fake.expect("get", "pods")
    for argv in (
        ["--kubeconfig", "/dev/null", "get", "pods", "-o", "json"],  # one argument more
        ["get", "pods"],  # without the flags
        ["--kubeconfig", "/dev/null", "delete", "pods"],
    ):
        done = run(fake, *argv)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == f"fake kubectl: unexpected call: kubectl {' '.join(argv)}\n"
    assert len(fake.unexpected()) == 3
    with pytest.raises(AssertionError, match=r"3 unexpected call\(s\):\n  kubectl --kubeconfig /dev/null get pods -o"):
        fake.check()


def test_times_limits_the_uses_and_the_next_expectation_answers_after(fake):
    fake.expect("get", "services", stdout="first", times=1)
    fake.expect("get", "services", stdout="then")
    fake.expect("apply", "-f", "-", times=1)
    assert [run(fake, "--kubeconfig", "/dev/null", "get", "services").stdout for _ in range(3)] == [
        "first",
        "then",
        "then",
    ]
    assert run(fake, "--kubeconfig", "/dev/null", "apply", "-f", "-", stdin="kind: A\n").returncode == 0
    assert run(fake, "--kubeconfig", "/dev/null", "apply", "-f", "-", stdin="kind: B\n").returncode == 2
    assert [c.stdin for c in fake.calls()[-2:]] == ["kind: A\n", "kind: B\n"]
    assert fake.uses(0) == 1 and fake.uses(1) == 2
    with pytest.raises(AssertionError, match="apply -f -"):
        fake.check()


def test_tokens_may_be_patterns_and_flags_may_differ_per_call(fake):
    fake.expect("delete", ANY, like(r"--timeout=\d+s"), flags=[])
    assert run(fake, "delete", "secret/a", "--timeout=60s").returncode == 0
    assert run(fake, "delete", "secret/a", "--timeout=soon").returncode == 2


def test_a_test_whose_code_swallows_an_unexpected_call_fails(tmp_path):
    """The fixture's check runs after the test body: code that ignores kubectl's exit code cannot hide a call."""
    inner = tmp_path / "test_inner.py"
    inner.write_text(
        textwrap.dedent(
            """
            import subprocess

            def test_swallows(fake_kubectl):
                subprocess.run([fake_kubectl.path, "get", "pods"], capture_output=True)  # exit 2, ignored

            def test_expected(fake_kubectl):
                fake_kubectl.expect("get", "pods")
                assert subprocess.run([fake_kubectl.path, "get", "pods"]).returncode == 0
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest", "--rootdir", str(tmp_path),
         "-q", str(inner)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    assert "FAILED" in done.stdout and "test_swallows" in done.stdout
    assert "fake kubectl: 1 unexpected call(s):" in done.stdout and "kubectl get pods" in done.stdout
