"""The forward supervisor: a background process that keeps port-forwards to a namespace's services.

Run as `python -m playbooks.forwarder FOLDER` by `invoke forward` (playbooks/forwards.py), in a
session of its own so it outlives the terminal. FOLDER holds:
- spec.json: what to forward (written by `invoke forward`; SIGUSR1 makes this process re-read it);
- status.json: what this process says of each forward (written atomically on every change).

Each local port is held by this process itself, for as long as the forward is wanted, and
every connection to it is relayed to a `kubectl port-forward` on a port of its own. When
kubectl exits (its pod was replaced, the connection dropped) or stops answering, a new one is
started, with backoff: the local address stays the same, and a connection made meanwhile
waits for the new tunnel instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

from playbooks import runner

FORWARDING = re.compile(rb"Forwarding from 127\.0\.0\.1:(\d+)")
# kubectl's words when the pod under the forward went away: it exits after them, or should.
LOST = (b"lost connection to pod", b"error forwarding port", b"an error occurred forwarding")
BACKOFF = (0.5, 1, 2, 4, 8)
BACKOFF_MAX = 10.0
STABLE_AFTER = 30.0  # connected this long: the next failure starts the backoff again
PROBE_EVERY = 5.0
PROBE_TIMEOUT = 5.0
PROBE_FAILURES = 2  # consecutive failed probes before kubectl is replaced
CONNECT_WAIT = 30.0  # how long a client's connection waits for a tunnel
START_WAIT = 20.0  # how long kubectl may take to say it forwards
SIBLING = "another port of the same Service lost its pod"


class Tunnel:
    """One forward: the local listener, and the kubectl behind it, replaced whenever it fails."""

    def __init__(self, spec: dict, kubectl: list[str], changed, broken) -> None:
        self.spec = spec
        self.kubectl = kubectl
        self.changed = changed
        self.broken = broken  # called with the resource when this tunnel finds its pod gone
        self.kick = asyncio.Event()  # set: replace kubectl now (kick_reason says why)
        self.kick_reason = SIBLING
        self.lost_pod = False  # this tunnel's kubectl exited or said its pod went away
        self.state = "starting"
        self.since = time.time()
        self.error: str | None = None
        self.reconnects = 0
        self.upstream: int | None = None
        self.ready = asyncio.Event()
        self.process: asyncio.subprocess.Process | None = None
        self.server: asyncio.base_events.Server | None = None
        self.task: asyncio.Task | None = None

    @property
    def name(self) -> str:
        return self.spec["name"]

    def report(self) -> dict:
        return {
            "local": self.spec["local"],
            "state": self.state,
            "since": self.since,
            "reconnects": self.reconnects,
            "error": self.error,
        }

    def _set(self, state: str, error: str | None = None) -> None:
        if state != self.state or error != self.error:
            self.state, self.error, self.since = state, error, time.time()
            self.changed()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._keep())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self._end_kubectl()
        if self.server:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _listen(self) -> None:
        while self.server is None:
            try:
                self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.spec["local"])
            except OSError as error:
                self._set("waiting", f"127.0.0.1:{self.spec['local']} is taken ({error.strerror}); retrying")
                await asyncio.sleep(BACKOFF_MAX)

    async def _keep(self) -> None:
        await self._listen()
        failures = 0
        while True:
            started = time.monotonic()
            self.lost_pod = False
            reason = await self._one_tunnel()
            self.kick.clear()
            if self.lost_pod:
                self.broken(self)
            self.ready.clear()
            self.upstream = None
            await self._end_kubectl()
            if time.monotonic() - started >= STABLE_AFTER:
                failures = 0
            delay = BACKOFF[failures] if failures < len(BACKOFF) else BACKOFF_MAX
            failures += 1
            self.reconnects += 1
            self._set("reconnecting", f"{reason}; again in {delay:g}s")
            await asyncio.sleep(delay)

    async def _one_tunnel(self) -> str:
        """Run one kubectl port-forward until it fails; returns why it did."""
        self._set("connecting", self.error)
        argv = [
            *self.kubectl,
            "port-forward",
            "--address",
            "127.0.0.1",
            self.spec["resource"],
            f":{self.spec['remote']}",
        ]
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as error:
            return f"cannot run kubectl: {error.strerror or error}"
        said: list[bytes] = []
        lost = asyncio.Event()
        stderr = asyncio.create_task(self._read_errors(self.process.stderr, said, lost))
        try:
            port = await asyncio.wait_for(self._forwarding_port(self.process.stdout), START_WAIT)
        except (TimeoutError, EOFError):
            port = None
        if port is None:
            await self._end_kubectl()
            await asyncio.gather(stderr, return_exceptions=True)
            return _last(said) or "kubectl port-forward did not start"
        self.upstream = port
        self.ready.set()
        # Without a probe (a TCP service, which would log every empty connection), kubectl's
        # exit and its error lines are what tell that the tunnel broke.
        self._set("forwarding" if self.spec.get("probe") else "connected", None)
        drain = asyncio.create_task(self._drain(self.process.stdout))
        probe = asyncio.create_task(self._probe(port) if self.spec.get("probe") else asyncio.Event().wait())
        exited = asyncio.create_task(self.process.wait())
        lost_wait = asyncio.create_task(lost.wait())
        kicked = asyncio.create_task(self.kick.wait())
        try:
            done, _ = await asyncio.wait({probe, exited, lost_wait, kicked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (drain, probe, exited, lost_wait, kicked):
                pending.cancel()
        if probe in done and not probe.cancelled() and probe.exception() is None:
            return probe.result()
        if kicked in done:
            self.lost_pod = self.kick_reason != SIBLING
            return self.kick_reason
        self.lost_pod = True
        await asyncio.sleep(0.2)  # kubectl prints its last words as it exits
        return _last(said) or "kubectl port-forward exited"

    async def _forwarding_port(self, stream) -> int:
        while True:
            line = await stream.readline()
            if not line:
                raise EOFError
            match = FORWARDING.search(line)
            if match:
                return int(match.group(1))

    async def _drain(self, stream) -> None:
        while await stream.readline():
            pass

    async def _read_errors(self, stream, said: list[bytes], lost: asyncio.Event) -> None:
        while True:
            line = await stream.readline()
            if not line:
                return
            said.append(line.strip())
            del said[:-5]
            if any(words in line for words in LOST):
                lost.set()

    async def _probe(self, port: int) -> str:
        """Ask through the tunnel until it fails PROBE_FAILURES times in a row; returns why."""
        failures = 0
        while True:
            ok, why = await _answers(port, self.spec["probe"])
            if ok:
                failures = 0
                self._set("connected", None)
            else:
                failures += 1
                if failures >= PROBE_FAILURES:
                    return f"the service does not answer through the forward ({why})"
            await asyncio.sleep(PROBE_EVERY)

    async def _end_kubectl(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay a client's connection through kubectl. kubectl accepts a connection even when its
        pod has gone, then closes it unanswered: the client's bytes so far are kept, kubectl is
        replaced, and they are sent again through the new tunnel, so the client sees one answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_WAIT
        said = bytearray()  # what the client sent before the service answered anything
        try:
            while True:
                try:
                    await asyncio.wait_for(self.ready.wait(), max(0.1, deadline - loop.time()))
                    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
                except (TimeoutError, OSError, TypeError):
                    return
                if said:
                    up_writer.write(bytes(said))
                if await _session(reader, writer, up_reader, up_writer, said):
                    return
                if loop.time() >= deadline:
                    return
                if not self.kick.is_set():
                    self.kick_reason = "a connection was closed unanswered: its pod has gone"
                    self.kick.set()
                await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                writer.close()


async def _session(reader, writer, up_reader, up_writer, said: bytearray) -> bool:
    """Pipe both ways until the end; False when the service closed before answering (nothing
    reached the client, and `said` holds what the client sent), True otherwise."""
    answered = False

    async def client_to_service() -> None:
        while chunk := await reader.read(65536):
            if not answered:
                said.extend(chunk)
            up_writer.write(chunk)
            await up_writer.drain()
        with contextlib.suppress(Exception):
            up_writer.write_eof()

    async def service_to_client() -> None:
        nonlocal answered
        while chunk := await up_reader.read(65536):
            answered = True
            said.clear()
            writer.write(chunk)
            await writer.drain()

    upstream = asyncio.create_task(client_to_service())
    downstream = asyncio.create_task(service_to_client())
    try:
        await asyncio.wait({downstream}, return_when=asyncio.FIRST_COMPLETED)
        if not answered and not upstream.done():
            return False
        await asyncio.gather(upstream, return_exceptions=True)
        return True
    except (OSError, ConnectionError):
        return True
    finally:
        upstream.cancel()
        downstream.cancel()
        with contextlib.suppress(Exception):
            up_writer.close()


async def _answers(port: int, probe: str) -> tuple[bool, str]:
    """Whether an HTTP service answers through kubectl's port: any status line will do."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), PROBE_TIMEOUT)
    except (TimeoutError, OSError) as error:
        return False, f"connect: {error or 'timed out'}"
    try:
        writer.write(f"GET {probe} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT)
        return (True, "") if line.startswith(b"HTTP/") else (False, "no HTTP answer")
    except (TimeoutError, OSError) as error:
        return False, f"{type(error).__name__}"
    finally:
        writer.close()


def _last(said: list[bytes]) -> str:
    return said[-1].decode(errors="replace") if said else ""


class Supervisor:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tunnels: dict[str, Tunnel] = {}
        self.kubectl: list[str] = []
        self.stopping = asyncio.Event()
        self.reload = asyncio.Event()

    def read_spec(self) -> dict:
        try:
            spec = json.loads((self.folder / "spec.json").read_text())
            if not isinstance(spec, dict) or not isinstance(spec.get("forwards"), list):
                raise ValueError("no forwards")
            return spec
        except (OSError, ValueError) as error:
            print(f"forwarder: spec.json unreadable ({error}); keeping the forwards as they are", flush=True)
            return {"kubectl": self.kubectl, "forwards": [t.spec for t in self.tunnels.values()]}

    def write_status(self) -> None:
        status = {
            "pid": os.getpid(),
            "updated": time.time(),
            "forwards": {n: t.report() for n, t in self.tunnels.items()},
        }
        runner.write_private(self.folder / "status.json", json.dumps(status, indent=2))

    def broken(self, tunnel: Tunnel) -> None:
        """A port without a probe (a TCP service) learns of a replaced pod only when a client
        connects and fails: its HTTP siblings on the same Service tell it at once instead."""
        for other in self.tunnels.values():
            if other is not tunnel and other.spec["resource"] == tunnel.spec["resource"] and other.ready.is_set():
                other.kick_reason = SIBLING
                other.kick.set()

    async def apply(self, spec: dict) -> None:
        self.kubectl = list(spec.get("kubectl") or self.kubectl)
        wanted = {entry["name"]: entry for entry in spec["forwards"]}
        for name in list(self.tunnels):
            if wanted.get(name) != self.tunnels[name].spec:
                await self.tunnels.pop(name).stop()
        for name, entry in wanted.items():
            if name not in self.tunnels:
                self.tunnels[name] = Tunnel(entry, self.kubectl, self.write_status, self.broken)
                await self.tunnels[name].start()
        self.write_status()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGUSR1, self.reload.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # a closed terminal does not end the forwards
        await self.apply(self.read_spec())
        while not self.stopping.is_set():
            reload = asyncio.create_task(self.reload.wait())
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({reload, stop}, return_when=asyncio.FIRST_COMPLETED)
            reload.cancel()
            stop.cancel()
            if self.reload.is_set() and not self.stopping.is_set():
                self.reload.clear()
                await self.apply(self.read_spec())
                if not self.tunnels:
                    break
        for tunnel in self.tunnels.values():
            await tunnel.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.folder / "status.json").unlink()


def main(argv: list[str]) -> int:
    folder = Path(argv[1])
    # One supervisor per folder, for its whole life: a second one started by a race exits here.
    fd = os.open(folder / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("forwarder: another supervisor holds this folder; exiting", flush=True)
        return 0
    print(f"forwarder: pid {os.getpid()} started at {time.strftime('%Y-%m-%dT%H:%M:%S')}", flush=True)
    asyncio.run(Supervisor(folder).run())
    print("forwarder: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
