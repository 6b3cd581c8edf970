"""The three questions that decide the mode, asked at once: a SelfSubjectAccessReview for creating
CRDs, a SelfSubjectRulesReview in the namespace, and a one-item list of vCluster fake nodes."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from playbooks.apierrors import api_error
from playbooks.errors import PlaybookError
from playbooks.kubeconfig import KubeSource
from playbooks.runner import Result, TimedOut, find_command, run_argv

FAKE_NODE_LABEL = "vcluster.loft.sh/fake-node"


@dataclass(frozen=True)
class Probes:
    """The API's answers that decide the mode."""

    can_create_crds: bool
    rules: tuple[dict, ...] = ()
    fake_nodes: bool | None = None  # None: listing nodes is forbidden
    rules_incomplete: bool = False


REVIEWS = "/apis/authorization.k8s.io/v1"
ACCESS_REVIEW = {
    "apiVersion": "authorization.k8s.io/v1",
    "kind": "SelfSubjectAccessReview",
    "spec": {
        "resourceAttributes": {
            "verb": "create",
            "group": "apiextensions.k8s.io",
            "resource": "customresourcedefinitions",
        }
    },
}
FAKE_NODES_PATH = f"/api/v1/nodes?labelSelector={quote(FAKE_NODE_LABEL + '=true', safe='')}&limit=1"


def _answer(result, source: KubeSource, doing: str) -> dict:
    if not result.ok:
        raise api_error(result.stderr, source, doing)
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise PlaybookError(
            f"the API server {source.server} did not answer with JSON while {doing}: is it a Kubernetes API?"
        )
    return answer


def _kubectl_all(binary: str, calls: list[tuple[list[str], str | None]], env: dict[str, str], seconds: float) -> list:
    """Run the kubectl calls at once, one thread each; a call that outlives its deadline reads as no answer."""
    command = find_command(binary, "install kubectl or set tools.kubectl in invoke.yaml")
    results: list = [None] * len(calls)

    def one(i: int, argv: list[str], stdin: str | None) -> None:
        try:
            results[i] = run_argv(command, argv, env, seconds, stdin)
        except TimedOut:
            results[i] = Result(-1, "", f"Unable to connect to the server: no answer within {seconds:g}s")
        except Exception as error:  # raised in the caller's thread below
            results[i] = error

    threads = [threading.Thread(target=one, args=(i, *call), daemon=True) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def probe(
    source: KubeSource, namespace: str, timeout: float, kubectl: str = "kubectl", env: Mapping[str, str] | None = None
) -> Probes:
    """Ask the API the three questions that decide the mode: three kubectl calls at once, one request each."""
    env = source.child_env(os.environ if env is None else env)
    flags = ["--request-timeout", f"{timeout:g}s", *source.kubeconfig_flags()]
    if source.context:
        flags += ["--context", source.context]
    rules_review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    review, rules, nodes = _kubectl_all(
        kubectl,
        [
            ([*flags, "create", "--raw", f"{REVIEWS}/selfsubjectaccessreviews", "-f", "-"], json.dumps(ACCESS_REVIEW)),
            ([*flags, "create", "--raw", f"{REVIEWS}/selfsubjectrulesreviews", "-f", "-"], json.dumps(rules_review)),
            ([*flags, "get", "--raw", FAKE_NODES_PATH], None),
        ],
        env,
        # A backstop only: kubectl gives up by itself after --request-timeout.
        2 * timeout + 5,
    )
    allowed = _answer(review, source, "checking access").get("status") or {}
    status = _answer(rules, source, "checking access").get("status") or {}
    if not nodes.ok and "Error from server (Forbidden)" in nodes.stderr:
        fake_nodes = None  # namespace mode: evidence, not an error
    else:
        fake_nodes = bool(_answer(nodes, source, "listing nodes").get("items"))
    return Probes(
        can_create_crds=bool(allowed.get("allowed")),
        rules=tuple(status.get("resourceRules") or ()),
        fake_nodes=fake_nodes,
        rules_incomplete=bool(status.get("incomplete")),
    )
