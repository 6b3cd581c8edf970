"""A kubectl stand-in whose `port-forward` is a real TCP forward to a real local server, and can drop.

Run as `python forward_kubectl.py ARGS...` with FORWARD_DIR naming a folder holding plan.json:

    {"upstream": {"mlflow": 41234},        service name -> local port of the real server
     "drops": [3, null],                    per port-forward started, in order: drop after that many
                                            client chunks (null: never)
     "get": {...}}                          what `kubectl get ... -o json` prints

A drop is what kubectl does when the pod behind it goes away: it reports the lost connection
on stderr and exits 1, closing every forwarded connection. Each start is logged in forwards.log.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from pathlib import Path

FOLDER = Path(os.environ["FORWARD_DIR"])
LOST = [
    'E0101 00:00:00.000000    4242 portforward.go:413] "Unhandled Error" err="an error occurred forwarding '
    "{local} -> {port}: error forwarding port {port} to pod {service}-6d4b7c9f8-x2x7q, uid : network namespace "
    'for sandbox \\"0f3c\\" is closed"',
    "error: lost connection to pod",
]


def forward(service: str, port: int, plan: dict) -> int:
    with open(FOLDER / "forwards.log", "a") as log:
        log.write(f"{service}:{port}\n")
    index = len((FOLDER / "forwards.log").read_text().splitlines()) - 1
    drops = plan.get("drops", [])
    drop_after = drops[index] if index < len(drops) else None
    upstream = plan["upstream"][service]

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    local = listener.getsockname()[1]
    print(f"Forwarding from 127.0.0.1:{local} -> {port}", flush=True)
    chunks = [0]
    lock = threading.Lock()

    def drop() -> None:
        for line in LOST:
            print(line.format(local=local, port=port, service=service), file=sys.stderr, flush=True)
        os._exit(1)

    def pump(source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                if counted:
                    with lock:
                        chunks[0] += 1
                        if drop_after is not None and chunks[0] >= drop_after:
                            drop()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    while True:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", upstream))
        threading.Thread(target=pump, args=(client, server, True), daemon=True).start()
        threading.Thread(target=pump, args=(server, client, False), daemon=True).start()


def main(argv: list[str]) -> int:
    plan = json.loads((FOLDER / "plan.json").read_text())
    if "port-forward" in argv:
        target = next(a for a in argv if a.startswith("service/"))
        port = next(a for a in argv if a.startswith(":"))
        return forward(target.removeprefix("service/"), int(port[1:]), plan)
    if "get" in argv and "json" in argv:
        print(json.dumps(plan.get("get", {"kind": "List", "items": []})))
        return 0
    print(f"forward_kubectl: {' '.join(argv)} is not played here", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
