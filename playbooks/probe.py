"""The three questions that decide the mode, asked at once: a SelfSubjectAccessReview for creating
CRDs, a SelfSubjectRulesReview in the namespace, and a one-item list of vCluster fake nodes.

They are asked in-process (playbooks.kubeapi) when the credentials allow; kubectl asks any the
direct client got no usable answer to, so an error reads as kubectl's (playbooks.apierrors)."""

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


def _direct(source: KubeSource, calls: list[tuple[str, str, str | None]], timeout: float, env) -> list:
    """The calls made in-process (playbooks.kubeapi), at once: a Result for each usable answer, None for the
    others (no client for these credentials, no answer, an error status), which kubectl then makes."""
    from playbooks import kubeapi

    client = kubeapi.client_for(source, env)
    if client is None:
        return [None] * len(calls)

    def one(method: str, path: str, body: str | None):
        answer = client.request(method, path, timeout, body.encode() if body else None, "application/json")
        if answer is None:
            return None
        if answer.ok:
            return Result(0, answer.body.decode(errors="replace"), "")
        if answer.status == 403 and path == FAKE_NODES_PATH:
            return FORBIDDEN  # evidence, as kubectl's Forbidden is below
        return None

    return client.all([lambda call=call: one(*call) for call in calls])


# How kubectl reports a refused list of nodes; the direct client's 403 reads the same.
FORBIDDEN = Result(1, "", "Error from server (Forbidden): nodes is forbidden")


def probe(
    source: KubeSource, namespace: str, timeout: float, kubectl: str = "kubectl", env: Mapping[str, str] | None = None
) -> Probes:
    """Ask the API the three questions that decide the mode, one request each, all at once: in-process
    where the credentials allow (playbooks.kubeapi), else (or for a call without a usable answer) by kubectl."""
    caller_env = os.environ if env is None else env
    env = source.child_env(caller_env)
    flags = ["--request-timeout", f"{timeout:g}s", *source.kubeconfig_flags()]
    if source.context:
        flags += ["--context", source.context]
    rules_review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    questions = [
        ("POST", f"{REVIEWS}/selfsubjectaccessreviews", json.dumps(ACCESS_REVIEW)),
        ("POST", f"{REVIEWS}/selfsubjectrulesreviews", json.dumps(rules_review)),
        ("GET", FAKE_NODES_PATH, None),
    ]
    answers = _direct(source, questions, timeout, caller_env)
    missing = [i for i, answer in enumerate(answers) if answer is None]
    if missing:
        argv = {"POST": lambda path: ["create", "--raw", path, "-f", "-"], "GET": lambda path: ["get", "--raw", path]}
        asked = _kubectl_all(
            kubectl,
            [([*flags, *argv[questions[i][0]](questions[i][1])], questions[i][2]) for i in missing],
            env,
            # A backstop only: kubectl gives up by itself after --request-timeout.
            2 * timeout + 5,
        )
        for i, result in zip(missing, asked, strict=True):
            answers[i] = result
    review, rules, nodes = answers
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
