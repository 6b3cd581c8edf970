"""Where am I: which cluster, which namespace, which mode, and what the credentials may do.

Offline steps (kubeconfig, environment) are plain functions over their inputs, so they
can be tested on realistic files; the API is asked at most three questions, by three
kubectl calls run at once (`--raw`: no discovery): a SelfSubjectAccessReview for creating
CRDs, a SelfSubjectRulesReview in the namespace, and a one-item list of vCluster fake
nodes (Forbidden there is evidence, not an error).
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

import yaml

from playbooks.errors import PlaybookError

MODES = ("namespace", "vcluster", "local")
CLUSTER_MODES = ("namespace", "vcluster")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Test and advanced knob: where the service account's token, ca.crt and namespace are mounted.
SERVICE_ACCOUNT_DIR_ENV = "DATALAB_PLAYBOOKS_SERVICE_ACCOUNT_DIR"
IN_CLUSTER_KUBECONFIG = "in-cluster.kubeconfig"
IN_CLUSTER_CONTEXT = "in-cluster"
FAKE_NODE_LABEL = "vcluster.loft.sh/fake-node"
VCLUSTER_CONTEXT = "my-vcluster"
VCLUSTER_KUBECONFIG = "/opt/kubeconfig/config"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# What the playbooks need in the namespace: (verb, resource, API group).
NAMESPACED_NEEDS = (
    ("create", "deployments", "apps"),
    ("patch", "deployments", "apps"),
    ("delete", "deployments", "apps"),
    ("create", "services", ""),
    ("create", "secrets", ""),
    ("create", "configmaps", ""),
    ("create", "persistentvolumeclaims", ""),
    ("create", "jobs", "batch"),
    ("list", "pods", ""),
    ("get", "pods/log", ""),
    ("create", "pods/portforward", ""),
    # Only with security.network_policy; `down` looks for them only where they may be listed.
    ("create", "networkpolicies", "networking.k8s.io"),
    ("list", "networkpolicies", "networking.k8s.io"),
)


@dataclass(frozen=True)
class KubeSource:
    """Where the credentials come from, read without touching the API."""

    kubeconfig: str | None  # a file, or a list of files (a:b) as KUBECONFIG holds them
    context: str | None
    server: str
    context_namespace: str | None
    in_cluster_namespace: str | None = None
    # The service account's folder when its token is used (through a kubeconfig written for it).
    service_account: str | None = None

    @property
    def kubeconfig_list(self) -> bool:
        """Several files, which no --kubeconfig flag takes: they go to kubectl and helm as KUBECONFIG."""
        return bool(self.kubeconfig) and os.pathsep in self.kubeconfig

    def child_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment of a kubectl or helm child: never the caller's KUBECONFIG, except a list of ours."""
        env = {k: v for k, v in base.items() if k != "KUBECONFIG"}
        if self.kubeconfig_list:
            env["KUBECONFIG"] = self.kubeconfig
        return env

    def kubeconfig_flags(self, flag: str = "--kubeconfig") -> list[str]:
        return [flag, self.kubeconfig] if self.kubeconfig and not self.kubeconfig_list else []


@dataclass(frozen=True)
class AccessCheck:
    verb: str
    resource: str
    group: str
    namespace: str | None
    allowed: bool

    def describe(self) -> str:
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f" in {self.namespace}" if self.namespace else " (cluster-wide)"
        return f"{'yes' if self.allowed else 'no ':3} {self.verb} {what}{where}"


@dataclass(frozen=True)
class Probes:
    """The API's answers that decide the mode."""

    can_create_crds: bool
    rules: tuple[dict, ...] = ()
    fake_nodes: bool | None = None  # None: listing nodes is forbidden
    rules_incomplete: bool = False


@dataclass(frozen=True)
class Target:
    mode: str
    namespace: str
    namespace_source: str
    source: KubeSource
    evidence: tuple[str, ...] = ()
    checks: tuple[AccessCheck, ...] = field(default=(), compare=False)

    @property
    def context(self) -> str | None:
        return self.source.context

    @property
    def server(self) -> str:
        return self.source.server

    def kubectl_flags(self) -> list[str]:
        """Flags that pin kubectl to this target, whatever the caller's environment.

        A list of kubeconfig files is no flag: kubectl gets it as KUBECONFIG (child_env).
        """
        flags = self.source.kubeconfig_flags()
        if self.source.context:
            flags += ["--context", self.source.context]
        return [*flags, "--namespace", self.namespace]

    def child_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment for kubectl or helm run against this target (see KubeSource.child_env)."""
        return self.source.child_env(base)

    def may(self, verb: str, resource: str, group: str = "") -> bool | None:
        for check in self.checks:
            if (check.verb, check.resource, check.group) == (verb, resource, group):
                return check.allowed
        return None

    @property
    def local(self) -> bool:
        return self.mode == "local"

    def summary(self) -> str:
        if self.local:
            return "local mode: services run as processes on this machine"
        return f"{self.mode} mode, namespace {self.namespace}, API {self.server}"


class NoKubernetes(PlaybookError):
    """No kubeconfig and no service account: local mode is the fallback."""


# ---------------------------------------------------------------- offline steps


def validate_namespace(name: str) -> str:
    if len(name) > 63 or not DNS_LABEL.match(name):
        raise PlaybookError(
            f"invalid namespace {name!r}: use at most 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def _kubeconfig_files(value: str) -> list[Path]:
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


def _merged_kubeconfig(files: list[Path]) -> dict:
    """Merge kubeconfig files as kubectl does: the first file to set a value wins."""
    merged: dict = {"current-context": None, "contexts": {}, "clusters": {}}
    for path in files:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            continue
        except (OSError, yaml.YAMLError) as error:
            raise PlaybookError(f"cannot read kubeconfig {path}: {error}; fix or replace the file") from None
        if not isinstance(data, dict):
            raise PlaybookError(f"kubeconfig {path} is not a kubeconfig mapping; fix or replace the file")
        merged["current-context"] = merged["current-context"] or data.get("current-context")
        for key in ("contexts", "clusters"):
            for item in data.get(key) or []:
                if isinstance(item, dict) and item.get("name"):
                    merged[key].setdefault(item["name"], item.get(key[:-1]) or {})
    return merged


def locate_kubeconfig(
    env: Mapping[str, str],
    explicit: str | None = None,
    context: str | None = None,
    home: Path | None = None,
    service_account_dir: Path | None = None,
) -> KubeSource:
    """KUBECONFIG, then ~/.kube/config, then the in-cluster service account.

    For the service account a kubeconfig is written that points at its token file (see
    in_cluster_kubeconfig): kubectl reads its in-cluster configuration only when no flag
    overrides anything, and the playbooks always pass --namespace.
    """
    home = home or Path.home()
    if service_account_dir is None:
        service_account_dir = Path(env.get(SERVICE_ACCOUNT_DIR_ENV) or SERVICE_ACCOUNT_DIR)
    candidates = [
        ("--kubeconfig", explicit),
        ("KUBECONFIG", env.get("KUBECONFIG")),
        ("~/.kube/config", str(home / ".kube" / "config")),
    ]
    for origin, value in candidates:
        if not value:
            continue
        files = _kubeconfig_files(value)
        if not any(f.is_file() for f in files):
            if origin == "~/.kube/config":
                continue
            raise PlaybookError(f"{origin} points to {value}, which does not exist; fix the path or unset it")
        config = _merged_kubeconfig(files)
        name = context or config["current-context"]
        if not name:
            raise PlaybookError(f"kubeconfig {value} has no current context; pass --context NAME")
        if name not in config["contexts"]:
            known = ", ".join(sorted(config["contexts"])) or "none"
            raise PlaybookError(f"context {name!r} is not in kubeconfig {value} (known: {known}); pass --context NAME")
        ctx = config["contexts"][name]
        cluster = config["clusters"].get(ctx.get("cluster"), {})
        return KubeSource(
            kubeconfig=value,
            context=name,
            server=cluster.get("server") or "(no server in kubeconfig)",
            context_namespace=ctx.get("namespace"),
        )
    token = service_account_dir / "token"
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if host and token.is_file():
        ns_file = service_account_dir / "namespace"
        host = f"[{host}]" if ":" in host else host
        server = f"https://{host}:{port}"
        namespace = ns_file.read_text().strip() if ns_file.is_file() else None
        return KubeSource(
            kubeconfig=str(in_cluster_kubeconfig(service_account_dir, server, namespace, env)),
            context=None,
            server=server,
            context_namespace=None,
            in_cluster_namespace=namespace,
            service_account=str(service_account_dir),
        )
    raise NoKubernetes(
        "no Kubernetes configuration found (no KUBECONFIG, no ~/.kube/config, no service account): "
        "point KUBECONFIG at a kubeconfig, enable Kubernetes access for the session, or use --mode local"
    )


def private_dir(env: Mapping[str, str]) -> Path:
    """A folder only this user may enter: under $XDG_RUNTIME_DIR, else the temporary directory.

    Not under HOME, which may be read-only in a pod. The folder is created 0700; one that is
    a symlink or belongs to someone else (a shared /tmp) is refused, never used.
    """
    runtime = env.get("XDG_RUNTIME_DIR")
    base = (
        Path(runtime)
        if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK)
        else Path(tempfile.gettempdir())
    )
    folder = base / f"datalab-playbooks-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError as error:
        raise PlaybookError(
            f"cannot create {folder} ({error.strerror}): set XDG_RUNTIME_DIR or TMPDIR to a writable folder"
        ) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PlaybookError(
            f"{folder} is not a folder of this user (a symlink, or made by someone else): remove it, "
            "or set XDG_RUNTIME_DIR or TMPDIR to a private folder"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        folder.chmod(0o700)
    return folder


def in_cluster_kubeconfig(
    service_account_dir: Path, server: str, namespace: str | None, env: Mapping[str, str]
) -> Path:
    """A kubeconfig for the mounted service account, written 0600 into private_dir.

    It names the token *file* (kubectl rereads it, so a rotated token keeps working) and the
    CA file; it never holds a copy of the token. Written atomically, and only when it changes.
    """
    ca = service_account_dir / "ca.crt"
    cluster: dict = {"server": server}
    if ca.is_file():
        cluster["certificate-authority"] = str(ca)
    context: dict = {"cluster": IN_CLUSTER_CONTEXT, "user": "service-account"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": IN_CLUSTER_CONTEXT, "cluster": cluster}],
        "contexts": [{"name": IN_CLUSTER_CONTEXT, "context": context}],
        "current-context": IN_CLUSTER_CONTEXT,
        "users": [{"name": "service-account", "user": {"tokenFile": str(service_account_dir / "token")}}],
    }
    text = "# Written by datalab-playbooks for the in-cluster service account: the token stays in its file.\n"
    text += yaml.safe_dump(config, sort_keys=False)
    folder = private_dir(env)
    path = folder / IN_CLUSTER_KUBECONFIG
    try:
        info = path.lstat()
        if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and path.read_text() == text:
            return path
    except OSError:
        pass
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".in-cluster-", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        raise PlaybookError(
            f"cannot write the in-cluster kubeconfig to {path} ({error.strerror}): set XDG_RUNTIME_DIR or TMPDIR to a writable folder"
        ) from None
    return path


def choose_namespace(flag: str | None, env: Mapping[str, str], source: KubeSource) -> tuple[str, str]:
    """--namespace, then SESSION_NAMESPACE, then the context's, then in-cluster, then default."""
    for value, origin in (
        (flag, "--namespace"),
        (env.get("SESSION_NAMESPACE"), "SESSION_NAMESPACE"),
        (source.context_namespace, f"context {source.context}"),
        (source.in_cluster_namespace, "service account"),
    ):
        if value:
            return validate_namespace(value), origin
    return "default", "default"


def decide_mode(
    probes: Probes, source: KubeSource, env: Mapping[str, str], override: str | None = None
) -> tuple[str, list[str]]:
    """The mode and the evidence for it, most decisive signal first."""
    evidence = []
    if probes.can_create_crds:
        evidence.append("may create CustomResourceDefinitions (cluster-scoped writes allowed)")
    else:
        evidence.append("may not create CustomResourceDefinitions (no cluster-scoped writes)")
    vcluster_shape = []
    if env.get("KUBECONFIG") == VCLUSTER_KUBECONFIG:
        vcluster_shape.append(f"KUBECONFIG={VCLUSTER_KUBECONFIG}")
    if source.context == VCLUSTER_CONTEXT:
        vcluster_shape.append(f"context {VCLUSTER_CONTEXT}")
    host = urlparse(source.server).hostname or ""
    # <name>-vc.svc.<domain>, or <name>-vc.<namespace>.svc.<domain>
    if re.search(r"-vc(\.[a-z0-9-]+)?\.svc(\.|$)", host):
        vcluster_shape.append(f"API server host {host} is a vCluster service (-vc...svc)")
    if vcluster_shape:
        evidence.append("vCluster kubeconfig shape: " + ", ".join(vcluster_shape))
    if probes.fake_nodes is None:
        evidence.append("listing nodes is forbidden (namespace-scoped credentials)")
    elif probes.fake_nodes:
        evidence.append(f"nodes carry {FAKE_NODE_LABEL}=true (virtual nodes)")
    else:
        evidence.append(f"no node carries {FAKE_NODE_LABEL}=true")

    detected = "vcluster" if probes.can_create_crds else "namespace"
    if probes.can_create_crds and not vcluster_shape and not probes.fake_nodes:
        evidence.append(
            "cluster-admin rights without vCluster signals: cluster-scoped installs allowed, treated as vcluster mode"
        )
    if override:
        if override not in CLUSTER_MODES:
            raise PlaybookError(f"unknown mode {override!r}: use --mode namespace or --mode vcluster")
        if override == "vcluster" and not probes.can_create_crds:
            raise PlaybookError(
                "--mode vcluster needs rights to create CRDs, which these credentials lack: "
                "use the vCluster kubeconfig or --mode namespace"
            )
        if override != detected:
            evidence.insert(0, f"--mode {override} overrides the detected {detected} mode")
        return override, evidence
    return detected, evidence


def rule_allows(rules: tuple[dict, ...], verb: str, resource: str, group: str) -> bool:
    """Evaluate SelfSubjectRulesReview resource rules, as RBAC does."""

    def covers(values, wanted):
        return "*" in (values or []) or wanted in (values or [])

    return any(
        covers(rule.get("verbs"), verb)
        and covers(rule.get("apiGroups"), group)
        and covers(rule.get("resources"), resource)
        for rule in rules
    )


def access_checks(probes: Probes, namespace: str) -> tuple[AccessCheck, ...]:
    checks = [AccessCheck("create", "customresourcedefinitions", "apiextensions.k8s.io", None, probes.can_create_crds)]
    checks += [
        AccessCheck(verb, resource, group, namespace, rule_allows(probes.rules, verb, resource, group))
        for verb, resource, group in NAMESPACED_NEEDS
    ]
    return tuple(checks)


# ---------------------------------------------------------------- the API

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
    import sh

    from playbooks.kube import Result, find_command, run_argv

    command = find_command(binary, "install kubectl or set tools.kubectl in invoke.yaml")
    results: list = [None] * len(calls)

    def one(i: int, argv: list[str], stdin: str | None) -> None:
        try:
            results[i] = run_argv(command, argv, env, seconds, stdin)
        except sh.TimeoutException:
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


# ---------------------------------------------------------------- one detection per chain

_detected: dict[tuple, Target] = {}
_last: list[Target] = []


def detect(
    namespace: str | None = None,
    mode: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    timeout: float = 10,
    env: Mapping[str, str] | None = None,
    kubectl: str = "kubectl",
) -> Target:
    """Detect the target once per process (one `invoke a b c` chain) for the same inputs."""
    env = os.environ if env is None else env
    if mode is not None and mode not in MODES:
        raise PlaybookError(f"unknown mode {mode!r}: use --mode namespace, vcluster or local")
    key = (
        namespace,
        mode,
        kubeconfig,
        context,
        *(env.get(k) for k in ("KUBECONFIG", "SESSION_NAMESPACE", SERVICE_ACCOUNT_DIR_ENV)),
    )
    if key in _detected:
        return _detected[key]
    if mode == "local":
        target = local_target("--mode local")
    else:
        try:
            source = locate_kubeconfig(env, explicit=kubeconfig, context=context)
        except NoKubernetes as missing:
            if mode is not None:  # never a silent fall-back to local mode
                raise PlaybookError(f"--mode {mode} needs a Kubernetes cluster, but {missing}") from None
            target = local_target("no KUBECONFIG, no ~/.kube/config and no service account")
        else:
            target = _cluster_target(source, namespace, mode, timeout, env, kubectl)
    _detected[key] = target
    _last[:] = [target]
    return target


def local_target(why: str) -> Target:
    source = KubeSource(kubeconfig=None, context=None, server="(none)", context_namespace=None)
    return Target(mode="local", namespace="local", namespace_source="local mode", source=source, evidence=(why,))


def is_local(mode: str | None, kubeconfig: str | None = None, context: str | None = None, env=None) -> bool:
    """Offline: will this run act locally? (--mode local, or no Kubernetes configuration at all.)"""
    if mode == "local":
        return True
    if mode is not None:
        return False
    try:
        locate_kubeconfig(os.environ if env is None else env, explicit=kubeconfig, context=context)
    except NoKubernetes:
        return True
    except PlaybookError:
        return False
    return False


def _cluster_target(source: KubeSource, namespace, mode, timeout, env, kubectl) -> Target:
    chosen, origin = choose_namespace(namespace, env, source)
    probes = probe(source, chosen, timeout, kubectl, env)
    decided, evidence = decide_mode(probes, source, env, mode)
    return Target(
        mode=decided,
        namespace=chosen,
        namespace_source=origin,
        source=source,
        evidence=tuple(evidence),
        checks=access_checks(probes, chosen),
    )


def chain_target() -> Target | None:
    """The target an earlier task of this chain acted on, if any."""
    return _last[0] if _last else None


def local_from_config(c, mode: str | None = None) -> bool:
    cfg = c.config.target
    return is_local(mode or cfg.mode, cfg.kubeconfig, cfg.context)


def target_from_config(c, namespace: str | None = None, mode: str | None = None) -> Target:
    """The target for a task: its flags, then the chain's target, then config and detection."""
    if namespace is None and mode is None and (earlier := chain_target()) is not None:
        return earlier
    cfg = c.config.target
    return detect(
        namespace=namespace or cfg.namespace,
        mode=mode or cfg.mode,
        kubeconfig=cfg.kubeconfig,
        context=cfg.context,
        timeout=cfg.api_timeout,
        kubectl=c.config.tools.kubectl,
    )
