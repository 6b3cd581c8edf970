"""The dask-gateway-server backend the tests use: the one local mode ships (playbooks.gateway_backend)."""

from playbooks.gateway_backend import LoopbackBackend

__all__ = ["LoopbackBackend"]
