"""A dask-gateway-server backend for the tests: local processes, listening on 127.0.0.1 only.

Imported by the server process the tests start (its --config names this class).
"""

from dask_gateway_server.backends.local import UnsafeLocalBackend


class LoopbackBackend(UnsafeLocalBackend):
    """UnsafeLocalBackend (no per-user separation) whose schedulers and workers bind 127.0.0.1."""

    default_host = "127.0.0.1"
