"""The security settings every rendered pod shares (README: Security)."""

from __future__ import annotations

from playbooks.errors import PlaybookError


def network_policy(c) -> bool:
    """security.network_policy: whether each service gets a NetworkPolicy (same namespace only)."""
    value = c.config.security.get("network_policy", False)
    if not isinstance(value, bool):
        raise PlaybookError(f"security.network_policy must be true or false, not {value!r}")
    return value


def params(c) -> dict:
    """Template parameters: the pod and container security contexts, and the NetworkPolicy switch."""
    return {
        "pod_security_context": c.config.security.pod,
        "container_security_context": c.config.security.container,
        "network_policy": network_policy(c),
    }
