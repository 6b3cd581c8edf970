"""kubectl's complaints about one API call, turned into one line that names the fix."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from playbooks.errors import PlaybookError

if TYPE_CHECKING:
    from playbooks.kubeconfig import KubeSource

# What kubectl prints when it got no answer at all (checked on a real kube-apiserver).
NO_ANSWER = re.compile(
    r"dial tcp|connection refused|no such host|i/o timeout|deadline exceeded|TLS handshake|tls: |x509: |EOF"
)


def api_error(stderr: str, source: KubeSource, doing: str) -> PlaybookError:
    """Turn kubectl's complaint about one API call into one line that names the fix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = "\n".join(lines)
    if "(Unauthorized)" in text:  # error: You must be logged in to the server (Unauthorized)
        return PlaybookError(
            f"the API server {source.server} rejected the credentials while {doing} (401 Unauthorized): "
            "the token is missing or expired; refresh the kubeconfig"
        )
    answered = re.search(r"Error from server \((\w+)\): (.*)", text)
    if answered:
        if answered.group(1) == "Forbidden":
            return PlaybookError(
                f"forbidden while {doing} on {source.server} (403): ask for the missing permission or use other credentials"
            )
        return PlaybookError(
            f"the API server {source.server} answered {answered.group(1)} while {doing}: {answered.group(2)}"
        )
    connect = re.search(r"Unable to connect to the server: (.*)", text)
    if re.search(r"The connection to the server \S+ was refused", text):
        reason = "connection refused"
    elif connect:
        reason = connect.group(1)
    else:
        reason = next((line for line in lines if NO_ANSWER.search(line)), None)
    if reason:
        return PlaybookError(
            f"cannot reach the Kubernetes API at {source.server} ({reason}): check KUBECONFIG and the context, "
            "or that the cluster is running"
        )
    last = lines[-1] if lines else "(no message)"
    if last.startswith("error: "):  # kubectl refused the configuration before asking anything
        where = (
            f"the in-cluster service account ({source.service_account}, through kubeconfig {source.kubeconfig})"
            if source.service_account
            else f"kubeconfig {source.kubeconfig}"
        )
        return PlaybookError(f"cannot use {where}: {last.removeprefix('error: ')}; fix it or pass --context")
    return PlaybookError(f"kubectl failed while {doing} on {source.server}: {last}")
