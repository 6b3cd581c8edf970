"""`invoke forward`'s supervisor: real processes, real sockets, real HTTP servers as the pods.

kubectl is the strict fake (tests/fakes/kubectl.py): its port-forward is a real TCP forward to a
real server on 127.0.0.1, and it drops as kubectl does when its pod goes away ("error: lost
connection to pod", exit 1). A second expectation to another server plays the replacement pod.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from invoke import Context

from playbooks import forwards, procs
from playbooks.backends import ClusterBackend
from playbooks.forwards import Want
from tests.conftest import QUIET_ENV, one_error_line
from tests.manifests import config, target

FLAGS = ["--kubeconfig", "/dev/null", "--context", "ctx", "--namespace", "ws-frank-s1"]
WEB = Want("web", "web", "service/web", 80, "web", "http", None)


class Pod:
    """An HTTP server that answers every GET with its name: which pod answered."""

    def __init__(self, name: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pods():
    started = [Pod("pod-a"), Pod("pod-b")]
    yield started
    for pod in started:
        pod.close()


@pytest.fixture
def fake(fake_kubectl, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    fake_kubectl.flags = FLAGS
    return fake_kubectl


@pytest.fixture
def backend(fake, tmp_path):
    c = Context(config=config({"tools": {"kubectl": fake.path}, "forward": {"state_dir": str(tmp_path / "fw")}}))
    c.config.forward.ports.update({"web": 0, "api": 0})
    found = ClusterBackend.on(c, target("namespace"))
    yield found
    forwards.stop(found, out=lambda *_: None)
    folder = forwards.folder(found)
    assert not (folder / "supervisor.json").exists()


def expect_forward(fake, pod: Pod, drop_after: int | None = None, times: int | None = None, resource="service/web"):
    fake.expect("port-forward", "--address", "127.0.0.1", resource, ":80", forward=pod.port,
                drop_after=drop_after, times=times)  # fmt: skip


def get(url: str, timeout: float = 40) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def quiet(*_, **__) -> None:
    pass


def test_the_same_local_url_answers_again_after_the_pod_under_it_goes_away(backend, fake, pods):
    expect_forward(fake, pods[0], drop_after=2, times=1)  # the pod that goes away at the 2nd request
    expect_forward(fake, pods[1])  # its replacement
    [entry] = forwards.start(backend, [WEB], timeout=20, out=quiet)
    address = forwards.url("http", entry["local"])
    assert entry["state"] == "connected"
    assert get(address) == "pod-a"
    # The 2nd request reaches a kubectl whose pod is gone: it closes unanswered and exits. The
    # supervisor starts a new kubectl and sends the same request through it: one answer, no error.
    started = time.monotonic()
    assert get(address) == "pod-b"
    assert time.monotonic() - started < 15
    assert get(address) == "pod-b"
    _, [state] = forwards.current(backend)
    assert state["reconnects"] >= 1 and state["state"] == "connected"
    assert sum(call.args[:1] == ["port-forward"] for call in fake.calls()) == 2


def test_a_second_forward_with_nothing_new_keeps_the_running_supervisor(backend, fake, pods):
    expect_forward(fake, pods[0])
    first = forwards.start(backend, [WEB], timeout=20, out=quiet)
    running, _ = forwards.current(backend)
    again = forwards.start(backend, [WEB], timeout=20, out=quiet)
    assert forwards.current(backend)[0] == running
    assert [e["local"] for e in again] == [e["local"] for e in first]
    assert sum(call.args[:1] == ["port-forward"] for call in fake.calls()) == 1


def test_an_added_service_is_forwarded_without_restarting_the_others(backend, fake, pods):
    expect_forward(fake, pods[0], times=1)
    api = Want("api", "api", "service/api", 80, "api", "http", None)
    expect_forward(fake, pods[1], times=1, resource="service/api")
    [web] = forwards.start(backend, [WEB], timeout=20, out=quiet)
    running, _ = forwards.current(backend)
    both = forwards.start(backend, [WEB, api], timeout=20, out=quiet)
    assert forwards.current(backend)[0] == running
    assert both[0]["local"] == web["local"]
    assert [get(forwards.url("http", e["local"])) for e in both] == ["pod-a", "pod-b"]


def test_a_taken_port_is_said_and_another_one_used_then_kept(backend, fake, pods):
    expect_forward(fake, pods[0])
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    backend.c.config.forward.ports["web"] = taken
    said = []
    try:
        [entry] = forwards.start(backend, [WEB], timeout=20, out=lambda line, **_: said.append(line))
    finally:
        holder.close()
    assert entry["local"] != taken
    assert said == [f"forward: 127.0.0.1:{taken} is taken: web/web is on http://127.0.0.1:{entry['local']}"]
    assert get(forwards.url("http", entry["local"])) == "pod-a"
    # Stopped and started again, the forward keeps its address: exported URLs stay true.
    assert forwards.stop(backend)
    [again] = forwards.start(backend, [WEB], timeout=20, out=quiet)
    assert again["local"] == entry["local"]


def test_stop_never_signals_a_process_that_is_not_its_supervisor(backend, tmp_path):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        folder = forwards.folder(backend)
        folder.mkdir(parents=True)
        found = procs.identity(stranger.pid)
        # Its pid and process group, but another start time: a reused PID.
        record = {"pid": stranger.pid, "start_time": found.start_time - 1, "cmdline": list(found.cmdline)}
        (folder / "supervisor.json").write_text(json.dumps(record))
        assert forwards.stop(backend) is False
        time.sleep(0.2)
        assert stranger.poll() is None
        assert not (folder / "supervisor.json").exists()
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("damage", ["", "{not json", "[1, 2]", '{"forwards": 5}'])
def test_damaged_files_are_one_warning_each_and_the_forward_still_starts(backend, fake, pods, damage, capsys):
    expect_forward(fake, pods[0])
    folder = forwards.folder(backend)
    folder.mkdir(parents=True)
    for name in ("spec.json", "status.json", "supervisor.json"):
        (folder / name).write_text(damage)
    [entry] = forwards.start(backend, [WEB], timeout=20)
    assert get(forwards.url("http", entry["local"])) == "pod-a"
    out = capsys.readouterr().out
    assert "Traceback" not in out
    if damage != '{"forwards": 5}':
        assert f"{folder / 'spec.json'} " in out and f"{folder / 'supervisor.json'} " in out
        assert out.count("warning:") == 2, out


def test_down_stops_forwarding_what_it_removed_and_the_supervisor_when_nothing_is_left(backend, fake, pods):
    expect_forward(fake, pods[0], times=1)
    api = Want("api", "api", "service/api", 80, "api", "http", None)
    expect_forward(fake, pods[1], times=1, resource="service/api")
    both = forwards.start(backend, [WEB, api], timeout=20, out=quiet)
    running, _ = forwards.current(backend)
    forwards.forget(backend, ["api"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and forwards.tcp_free(both[1]["local"]) is False:
        time.sleep(0.1)
    assert forwards.tcp_free(both[1]["local"]), "the removed service's port is still held"
    assert forwards.current(backend)[0] == running
    assert [e["name"] for e in forwards.current(backend)[1]] == ["web/web"]
    forwards.forget(backend, ["web"])
    assert forwards.current(backend)[0] is None
    assert procs.identity(running.pid) is None or procs.identity(running.pid).state == "Z"


def test_two_forwards_at_once_leave_one_supervisor(backend, fake, pods):
    expect_forward(fake, pods[0])
    errors = []

    def run() -> None:
        try:
            forwards.start(backend, [WEB], timeout=20, out=quiet)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    folder = str(forwards.folder(backend))
    supervisors = [
        pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if (ident := procs.identity(pid)) and ident.cmdline[-2:] == ("playbooks.forwarder", folder)
    ]  # fmt: skip
    assert len(supervisors) == 1


def test_a_kubectl_that_may_not_forward_is_one_line_and_nothing_left_running(backend, fake):
    fake.expect("port-forward", "--address", "127.0.0.1", "service/web", ":80", exit=1,
                stderr='Error from server (Forbidden): pods "web-0" is forbidden: User "x" cannot create '
                       'resource "pods/portforward" in API group "" in the namespace "ws-frank-s1"\n')  # fmt: skip
    with pytest.raises(Exception) as raised:
        forwards.start(backend, [WEB], timeout=20, out=quiet)
    assert "pods/portforward" in str(raised.value)
    assert forwards.current(backend)[0] is None


def test_forward_in_local_mode_needs_nothing_and_says_so(tmp_path):
    env = {**os.environ, **QUIET_ENV, "INVOKE_TARGET_MODE": "local", "INVOKE_FORWARD_STATE_DIR": str(tmp_path / "fw")}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "playbooks"), "forward"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "local mode needs no forward" in result.stdout
    assert not (tmp_path / "fw").exists()


def test_forward_timeout_out_of_range_is_one_line(tmp_path):
    env = {**os.environ, **QUIET_ENV, "INVOKE_FORWARD_STATE_DIR": str(tmp_path / "fw")}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "playbooks"), "forward", "--timeout", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    one_error_line(result, ("--timeout",))
