"""`env`: the variables a shell needs to reach the services, as `export` lines or JSON.

A value is either literal or, for a secret, a command whose output is the value: the
secret itself is never printed, only where to read it (a file, or a Secret through kubectl).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from playbooks.kubeconfig import SERVICE_ACCOUNT_DIR, SERVICE_ACCOUNT_DIR_ENV

# Where the caller reaches the services from (the `reach` of the env document).
LOCAL = "local"  # local mode: the processes' own 127.0.0.1 addresses
IN_CLUSTER = "in-cluster"  # a pod in the services' namespace: cluster DNS
FORWARDED = "port-forward"  # outside the cluster, or vCluster mode: 127.0.0.1 through `kubectl port-forward`


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None  # literal value
    command: str | None = None  # a secret: the shell command that prints it
    comment: str = ""

    @property
    def secret(self) -> bool:
        return self.command is not None

    def lines(self) -> list[str]:
        head = [f"# {self.comment}"] if self.comment else []
        if self.command is not None:
            return [*head, f'export {self.name}="$({self.command})"']
        return [*head, f"export {self.name}={shlex.quote(self.value or '')}"]

    def as_json(self, service: str) -> dict:
        return {
            "service": service,
            "name": self.name,
            "value": self.value,
            "command": self.command,
            "secret": self.secret,
            "comment": self.comment,
        }


def in_pod(env=None) -> bool:
    """Whether this process runs in a Kubernetes pod: the API's service variables or a service-account mount."""
    env = os.environ if env is None else env
    if env.get("KUBERNETES_SERVICE_HOST"):
        return True
    folder = Path(env.get(SERVICE_ACCOUNT_DIR_ENV) or SERVICE_ACCOUNT_DIR)
    return (folder / "token").is_file()


def preferred(instances: list[str], configured: str) -> str | None:
    """The instance `env` points at: the configured name when it is deployed, else the first one."""
    if not instances:
        return None
    return configured if configured in instances else sorted(instances)[0]
