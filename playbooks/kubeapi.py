"""The Kubernetes API asked in-process for the reads of a no-op `up`: no kubectl process.

Detection's three questions, the server-side diffs (a server-side apply dry run compared
with the live object) and the reads of running state (lists by label) go straight to the API
server over HTTPS (stdlib http.client and ssl), with the kubeconfig's own credentials: a
token or token file, a client certificate and key (files or data), the certificate authority
(file or data) or insecure-skip-tls-verify, and tls-server-name. Writes stay with kubectl.

Anything this client does not do falls back to kubectl, transparently: `client_for` returns
None for credentials it cannot use (exec or auth-provider plugins, a proxy, impersonation,
basic auth, an unknown key), and a call that gets no usable answer (no connection, a TLS
failure, a deadline, an error status) returns None, so the caller runs today's kubectl
command and its error reads exactly as before. DATALAB_PLAYBOOKS_DIRECT_API=0 turns the
client off (every read through kubectl).

Secrets stay in memory or in 0600 files that are deleted at once (certificate data for the
TLS context): never on a command line, in an error or in output.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import yaml

if TYPE_CHECKING:
    import http.client
    import ssl

    from playbooks.kubeconfig import KubeSource

DIRECT_ENV = "DATALAB_PLAYBOOKS_DIRECT_API"
USER_AGENT = "datalab-playbooks"
MAX_PARALLEL = 8
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")

# The kinds this client knows without discovery: (apiVersion, kind) -> plural; all namespaced.
# Any other kind (a CRD, a cluster-scoped object) goes to kubectl.
KINDS = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("v1", "Service"): "services",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Pod"): "pods",
    ("v1", "ResourceQuota"): "resourcequotas",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("apps/v1", "ReplicaSet"): "replicasets",
    ("batch/v1", "Job"): "jobs",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
}
# kubectl's resource names ("deployments.apps", "pods") -> (apiVersion, kind).
RESOURCES = {
    (f"{plural}.{version.split('/')[0]}" if "/" in version else plural): (version, kind)
    for (version, kind), plural in KINDS.items()
}
# What a server-side diff does not look at: what the server sets by itself on every write.
IGNORED_METADATA = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid")
CLUSTER_KEYS = {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify",
                "tls-server-name", "extensions", "disable-compression"}  # fmt: skip
USER_KEYS = {"token", "tokenFile", "client-certificate", "client-certificate-data", "client-key", "client-key-data",
             "extensions"}  # fmt: skip


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Client:
    """HTTPS (or HTTP) to one API server, a few kept-alive connections shared by threads."""

    def __init__(
        self,
        server: str,
        context: ssl.SSLContext | None,
        server_hostname: str | None,
        token: str | None,
        token_file: Path | None,
    ):
        parts = urlsplit(server)
        self.secure = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.secure else 80)
        self.prefix = parts.path.rstrip("/")
        self.context = context
        self.server_hostname = server_hostname or self.host
        self._token = token
        self._token_file = token_file
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _authorization(self) -> dict[str, str]:
        token = self._token
        if self._token_file is not None:  # reread on every call, as kubectl does: a rotated token keeps working
            token = self._token_file.read_text().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _connection(self, timeout: float, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle and not fresh:
                return self._idle.pop(), True
        import http.client

        if not self.secure:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout), False
        context, name = self.context, self.server_hostname

        class Connection(http.client.HTTPSConnection):
            def connect(self) -> None:  # the TLS name may differ from the host (tls-server-name)
                http.client.HTTPConnection.connect(self)
                self.sock = context.wrap_socket(self.sock, server_hostname=name)

        return Connection(self.host, self.port, timeout=timeout, context=context), False

    def request(
        self, method: str, path: str, timeout: float, body: bytes | None = None, content_type: str | None = None
    ) -> Response | None:
        """One call, answered within `timeout` seconds (each socket step gets what is left, and the body is
        read in pieces against the same deadline); None when no usable answer came in time."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            headers.update(self._authorization())
        except OSError:
            return None  # an unreadable token file: kubectl says why
        deadline = time.monotonic() + timeout
        for attempt in range(2):  # a kept-alive connection the server closed meanwhile: once more, on a new one
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            connection, reused = self._connection(remaining, fresh=attempt > 0)
            try:
                if connection.sock is not None:
                    connection.sock.settimeout(remaining)
                connection.request(method, self.prefix + path, body=body, headers=headers)
                answer = connection.getresponse()
                data = _read(connection, answer, deadline)
            except Exception:  # no answer of any kind (refused, TLS, deadline, reset): kubectl says why
                connection.close()
                if reused:
                    continue
                return None
            if answer.will_close:
                connection.close()
            else:
                with self._lock:
                    self._idle.append(connection)
            return Response(answer.status, data)
        return None

    def all(self, calls: list[Callable[[], Any]]) -> list[Any]:
        """Run calls (each making requests of this client) at once; their answers in order."""
        if len(calls) <= 1:
            return [call() for call in calls]
        with ThreadPoolExecutor(max_workers=min(len(calls), MAX_PARALLEL)) as pool:
            return list(pool.map(lambda call: call(), calls))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _read(connection: http.client.HTTPConnection, answer: http.client.HTTPResponse, deadline: float) -> bytes:
    """The whole body by the deadline: a server that drips its answer does not hold the call past it."""
    pieces = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the answer did not arrive in time")
        if connection.sock is not None:
            connection.sock.settimeout(remaining)
        piece = answer.read1(1 << 16)  # what has come (read() would wait for all of it)
        if not piece:
            answer.close()  # done: the connection may carry the next request (the socket stays open)
            return b"".join(pieces)
        pieces.append(piece)


# ---------------------------------------------------------------- credentials

_clients: dict[tuple, Client | None] = {}
_clients_lock = threading.Lock()


def client_for(source: KubeSource, env: Mapping[str, str]) -> Client | None:
    """A client with the credentials kubectl would use for source; None when only kubectl can (see module doc)."""
    if env.get(DIRECT_ENV, "").strip().lower() in ("0", "false", "no", "off") or not source.kubeconfig:
        return None
    proxies = tuple(env.get(k) for k in PROXY_VARIABLES)
    key = (source, proxies)
    with _clients_lock:
        if key not in _clients:
            try:
                _clients[key] = _build(source, env)
            # kubectl reads the same configuration, and says what is wrong with it (ssl.SSLError is an OSError).
            except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError):
                _clients[key] = None
        return _clients[key]


def _entries(files: list[Path], context: str | None) -> tuple[dict, Path, dict, Path]:
    """The cluster and user entries of the context (the first file to name each wins, as kubectl merges),
    each with the folder of the file it came from (relative paths are relative to it)."""
    found: dict[str, dict[str, tuple[dict, Path]]] = {"contexts": {}, "clusters": {}, "users": {}}
    current = None
    for path in files:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            continue
        current = current or data.get("current-context")
        for kind in found:
            for item in data.get(kind) or []:
                if isinstance(item, dict) and item.get("name"):
                    found[kind].setdefault(item["name"], (item.get(kind[:-1]) or {}, path.parent))
    context_entry = found["contexts"][context or current][0]
    cluster, cluster_dir = found["clusters"][context_entry["cluster"]]
    user, user_dir = found["users"].get(context_entry.get("user"), ({}, Path(".")))
    return cluster, cluster_dir, user, user_dir


def _proxied(env: Mapping[str, str], scheme: str, host: str) -> bool:
    """Whether kubectl (Go's ProxyFromEnvironment) would send requests to host through a proxy."""
    names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
    if not any(env.get(name) for name in names):
        return False
    if host in ("localhost", "::1") or host.startswith("127."):
        return False
    for entry in (env.get("NO_PROXY") or env.get("no_proxy") or "").split(","):
        entry = entry.strip().lower().split(":")[0] if entry.count(":") == 1 else entry.strip().lower()
        if entry == "*" or (entry and (host == entry.lstrip(".") or host.endswith("." + entry.lstrip(".")))):
            return False
    return True  # in doubt (a CIDR, say), kubectl decides


def _build(source: KubeSource, env: Mapping[str, str]) -> Client | None:
    import ssl

    files = [Path(p).expanduser() for p in source.kubeconfig.split(os.pathsep) if p]
    cluster, cluster_dir, user, user_dir = _entries(files, source.context)
    if set(cluster) - CLUSTER_KEYS or set(user) - USER_KEYS:
        return None  # exec, auth-provider, proxy-url, impersonation, basic auth, ...: kubectl's business
    server = str(cluster.get("server") or "")
    parts = urlsplit(server)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        return None
    if _proxied(env, parts.scheme, parts.hostname.lower()):
        return None

    def path_of(value: str, folder: Path) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else folder / path

    context = None
    if parts.scheme == "https":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.hostname_checks_common_name = False  # as Go: a name only in the CN does not count
        ca_data, ca_file = cluster.get("certificate-authority-data"), cluster.get("certificate-authority")
        if cluster.get("insecure-skip-tls-verify"):
            if ca_data or ca_file:
                return None  # kubectl refuses this combination, with its own message
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif ca_data:
            context.load_verify_locations(cadata=base64.b64decode(ca_data).decode())
        elif ca_file:
            context.load_verify_locations(cafile=str(path_of(ca_file, cluster_dir)))
        else:
            context.load_default_certs()
        cert = _pem(user, "client-certificate", user_dir)
        key = _pem(user, "client-key", user_dir)
        if bool(cert) != bool(key):
            return None
        if cert and key:
            _load_client_certificate(context, cert, key)
    elif any(k in user for k in ("client-certificate", "client-certificate-data")):
        return None
    token_file = path_of(user["tokenFile"], user_dir) if user.get("tokenFile") else None
    if token_file is not None:
        token_file.read_text()  # unreadable: kubectl says why (OSError -> None)
    return Client(server, context, cluster.get("tls-server-name"), user.get("token"), token_file)


def _pem(user: dict, key: str, folder: Path) -> bytes | None:
    if user.get(f"{key}-data"):
        return base64.b64decode(user[f"{key}-data"])
    if user.get(key):
        path = Path(user[key]).expanduser()
        return (path if path.is_absolute() else folder / path).read_bytes()
    return None


def _load_client_certificate(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl loads a certificate and key only from files: two 0600 files in a 0700 folder, deleted at once."""
    from playbooks.runner import private_file

    with private_file(cert.decode(), "client.crt", prefix="playbooks-tls-") as cert_path:
        key_path = cert_path.with_name("client.key")
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        context.load_cert_chain(str(cert_path), str(key_path))


# ---------------------------------------------------------------- what the playbooks ask


def resource_path(version: str, plural: str, namespace: str, name: str | None = None) -> str:
    base = f"/api/{version}" if "/" not in version else f"/apis/{version}"
    path = f"{base}/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


def list_kinds(
    client: Client, resources: list[str], namespace: str, selector: str | None, timeout: float
) -> dict | None:
    """What `kubectl get R1,R2 -l selector -o json` prints (a List, each item with its kind), or None."""
    kinds = [RESOURCES.get(resource) for resource in resources]
    if not resources or None in kinds:
        return None
    query = f"?{urlencode({'labelSelector': selector})}" if selector else ""

    def one(version: str, kind: str) -> list[dict] | None:
        plural = KINDS[(version, kind)]
        answer = client.request("GET", resource_path(version, plural, namespace) + query, timeout)
        listed = answer.json() if answer is not None and answer.ok else None
        if not isinstance(listed, dict):
            return None
        return [{"apiVersion": version, "kind": kind, **item} for item in listed.get("items") or []]

    found = client.all([lambda k=k: one(*k) for k in kinds])
    if any(items is None for items in found):
        return None
    return {"apiVersion": "v1", "kind": "List", "items": [item for items in found for item in items]}


def _compared(obj: dict) -> dict:
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in IGNORED_METADATA}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": metadata}


def differs(client: Client, docs: list[dict], namespace: str, field_manager: str, timeout: float) -> bool | None:
    """Whether a server-side apply of docs would change anything, as `kubectl diff --server-side
    --force-conflicts` judges it: each doc's apply dry run against its live object, managedFields
    and the server's bookkeeping aside. None when this client cannot tell (kubectl then decides)."""
    plans = []
    for doc in docs:
        metadata = doc.get("metadata") or {}
        plural = KINDS.get((doc.get("apiVersion"), doc.get("kind")))
        if plural is None or not metadata.get("name") or metadata.get("namespace", namespace) != namespace:
            return None
        plans.append((doc, resource_path(doc["apiVersion"], plural, namespace, metadata["name"])))
    query = urlencode({"dryRun": "All", "fieldManager": field_manager, "force": "true"})

    def live(path: str) -> dict | bool | None:
        answer = client.request("GET", path, timeout)
        if answer is not None and answer.status == 404:
            return False  # not there yet: creating it is a change
        return answer.json() if answer is not None and answer.ok else None

    def dry_run(doc: dict, path: str) -> dict | None:
        body = json.dumps(doc).encode()  # JSON is YAML: what the apply-patch content type takes
        answer = client.request("PATCH", f"{path}?{query}", timeout, body, "application/apply-patch+yaml")
        return answer.json() if answer is not None and answer.ok else None

    def judge(doc: dict, path: str) -> bool | None:
        for _ in range(2):
            before = live(path)
            after = dry_run(doc, path) if before is not None else None
            if before is None or after is None:
                return None  # an error, or no answer: kubectl's diff says what it is
            if before is False:
                return True
            if _version(before) == _version(after):
                break
            # Written in between (a controller's annotation, say): read the live object again.
        return _compared(before) != _compared(after)

    answers = client.all([lambda doc=doc, path=path: judge(doc, path) for doc, path in plans])
    return None if None in answers else any(answers)


def _version(obj: dict) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")
