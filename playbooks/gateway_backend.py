"""The dask-gateway-server backend of local mode: local processes, listening on 127.0.0.1 only.

The server imports it by the name its config file gives (`playbooks.gateway_backend.LoopbackBackend`);
nothing else imports this module, so dask_gateway_server is needed only where the server runs.
"""

from dask_gateway_server.backends.local import UnsafeLocalBackend


class LoopbackBackend(UnsafeLocalBackend):
    """UnsafeLocalBackend (no per-user separation: clusters run as this user), every port on 127.0.0.1."""

    default_host = "127.0.0.1"

    def get_worker_command(self, cluster, worker_name, scheduler_address=None):
        # The stock command has no --host: the worker and its nanny would listen on every interface.
        return [*super().get_worker_command(cluster, worker_name, scheduler_address), "--host", self.default_host]
