"""MLflow tracking server: SQLite on a volume or PostgreSQL (mlflow_db.py), artifacts proxied to the workspace bucket."""

from __future__ import annotations

import base64
import json
import os
from functools import partial
from pathlib import Path

from invoke import Collection

from playbooks import security
from playbooks.backends import ClusterBackend, LocalBackend, backend_for
from playbooks.defaults import DEFAULTS
from playbooks.deploy import Plan, config_hash, deployed_instances, tear_down
from playbooks.endpoint import check_service, in_cluster_host
from playbooks.errors import PlaybookError, task
from playbooks.forwards import Want, forwarded
from playbooks.mlflow_check import round_trip
from playbooks.parts import ClusterPart, LocalPart
from playbooks.quantity import check_resources
from playbooks.registry import RootOption, Service
from playbooks.render import managed_selector, render
from playbooks.report import Report, require_passed
from playbooks.s3 import (
    S3Settings,
    bucket_shortfalls,
    choose_bucket,
    s3_from_env,
    validate_bucket,
    validate_prefix,
)
from playbooks.services import mlflow_db, mlflow_local, mlflow_upgrade, storage_cluster
from playbooks.services.mlflow_db import (
    BACKEND_URI_ENV,
    Database,
    backend_of_uri,
    choose_backend,
    deployed_uri,
    describe_uri,
    workers_for,
)
from playbooks.shellenv import IN_CLUSTER, EnvVar, preferred
from playbooks.target import Target, validate_namespace

SERVICE = "mlflow"
DB_PATH = "/mlflow/db/mlflow.db"

TARGET_HELP = {
    "namespace": "Namespace to act in (default: SESSION_NAMESPACE, then the kubeconfig context's).",
    "mode": "namespace, vcluster or local; overrides detection.",
}


def allowed_hosts(name: str, namespace: str, cluster_domain: str, extra: list[str]) -> str:
    """The Host headers the server accepts: its in-cluster names and localhost, each with any port."""
    names = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.{cluster_domain}"]
    names += ["localhost", "127.0.0.1", *extra]
    if "*" in names:
        raise PlaybookError("'*' is not an allowed host: list the host names clients use instead")
    return ",".join(h for n in names for h in (n, f"{n}:*"))


SQLITE_URI = f"sqlite:///{DB_PATH}"


def server_args(port: int, bucket: str, prefix: str, hosts: str, workers: int = 1) -> list[str]:
    """The server's command line. The backend store URI is not on it: see BACKEND_URI_ENV."""
    destination = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return [
        "--host", "0.0.0.0",
        "--port", str(port),
        # SQLite: one worker, or each one runs migrations and the database locks.
        "--workers", str(workers),
        "--serve-artifacts",
        "--artifacts-destination", destination,
        "--allowed-hosts", hosts,
    ]  # fmt: skip


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def db_secret_name(name: str, db: Database) -> str:
    """The Secret whose key `password` the server reads: the postgres service's own, else ours (<name>-db)."""
    return db.secret or f"{name}-db"


# The init container of a PostgreSQL server: a database it cannot use is one line in its log and an
# exit within ~30 s (the rollout's wait then reports the crash loop), not MLflow's own ~2 minutes of retries.
DB_CHECK = """
import os, sys, time
from urllib.parse import parse_qsl, unquote, urlsplit
import psycopg2
uri = urlsplit(os.environ["MLFLOW_BACKEND_STORE_URI"])
where = "database %s at %s:%s" % (unquote(uri.path[1:]), uri.hostname, uri.port or 5432)
reason = "no answer"
for attempt in range(4):
    try:
        psycopg2.connect(host=uri.hostname, port=uri.port or 5432, user=unquote(uri.username or ""),
                         dbname=unquote(uri.path[1:]), connect_timeout=5, **dict(parse_qsl(uri.query))).close()
        print("db-check: PostgreSQL %s answers" % where)
        sys.exit(0)
    except psycopg2.OperationalError as error:
        reason = " ".join(str(error).split())[:300]
        if "authentication failed" in reason or "does not exist" in reason:
            break
        time.sleep(5)
print("db-check: cannot use PostgreSQL %s: %s" % (where, reason), file=sys.stderr)
sys.exit(1)
"""


def shape_deployment(docs: list[dict], db: Database | None) -> None:
    """What differs between the backends in the Deployment: SQLite mounts its volume, PostgreSQL reads PGPASSWORD."""
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        container = pod["containers"][0]
        if db is None:
            container["env"] = [e for e in container["env"] if e["name"] != mlflow_db.PASSWORD_ENV]
        else:
            if db.read_password() is None:
                container["env"] = [e for e in container["env"] if e["name"] != mlflow_db.PASSWORD_ENV]
            container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "db"]
            pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "db"]
            database_env = [e for e in container["env"] if e["name"] in (BACKEND_URI_ENV, mlflow_db.PASSWORD_ENV)]
            pod["initContainers"] = [
                {
                    "name": "db-check",
                    "image": container["image"],
                    "imagePullPolicy": container.get("imagePullPolicy", "IfNotPresent"),
                    "command": ["python3", "-c", DB_CHECK],
                    "env": [*database_env, {"name": "HOME", "value": "/tmp"}],
                    "resources": container["resources"],
                    "securityContext": container["securityContext"],
                    "volumeMounts": [m for m in container["volumeMounts"] if m["name"] == "tmp"],
                }
            ]


def build_plan(
    c,
    target: Target,
    s3: S3Settings,
    bucket: str,
    bucket_origin: str,
    prefix: str,
    name: str,
    db: Database | None = None,
    workers: int = 1,
) -> Plan:
    cfg = c.config.mlflow
    port = int(cfg.port)
    hosts = allowed_hosts(name, target.namespace, c.config.target.cluster_domain, list(cfg.extra_allowed_hosts))
    credentials = {k: _b64(v) for k, v in s3.credentials().items()}
    jobs = mlflow_local.job_execution(c)
    uri = db.uri() if db else SQLITE_URI
    password = db.read_password() if db else None
    owned = db is not None and db.secret is None and password is not None
    params = {
        "image": cfg.image,
        "port": port,
        "args": server_args(port, bucket, prefix, hosts, workers),
        "backend_store_uri": uri,
        "sqlite": db is None,
        # RollingUpdate's parameters spelled out (Kubernetes' defaults), so they are ours: a later Recreate
        # (back to SQLite) drops them, where the API would refuse a Recreate that kept defaulted ones.
        "strategy": {"type": "Recreate"}
        if db is None
        else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
        "db_secret": db_secret_name(name, db) if db else "",
        "db_secret_owned": owned,
        "db_credentials": {"password": _b64(password)} if owned else {},
        "s3_credentials": credentials,
        "s3_env": s3.public_env(),
        "storage_size": cfg.storage_size,
        "storage_class": cfg.storage_class,
        "resources": check_resources(cfg.resources, "mlflow.resources"),
        **security.params(c),
        "job_execution": mlflow_local.job_execution_env(jobs)[mlflow_local.JOB_EXECUTION_ENV],
        # The password too (as part of a digest): a changed one rolls the server.
        "config_hash": config_hash(
            cfg.image, bucket, prefix, hosts, s3.public_env(), credentials, jobs, uri, workers, password
        ),
    }
    notes = [f"artifacts go to s3://{bucket}/{prefix} (bucket from {bucket_origin})"]
    if db is not None:
        notes.append(f"backend PostgreSQL: {db.where()} ({db.origin}), {workers} worker(s)")
    docs = render(SERVICE, name, target.namespace, params)
    shape_deployment(docs, db)
    if s3.endpoint_url:
        notes.append(f"S3 endpoint {s3.endpoint_url}")
    return Plan(
        service=SERVICE,
        instance=name,
        docs=docs,
        deployments=[name],
        timeout=float(cfg.rollout_timeout),
        notes=notes,
    )


def _instance(c, name: str | None) -> str:
    name = name or c.config.mlflow.name
    try:
        return validate_namespace(name)
    except PlaybookError:
        raise PlaybookError(f"invalid service name {name!r}: use a DNS label such as 'mlflow'") from None


STORAGE_CHOICES = (None, "local-s3", "env")


def store_bucket(bucket: str | None, store_bucket: str, store: str) -> str:
    """The bucket MLflow uses in the in-cluster store: the store's, or --bucket when it names the same."""
    if bucket and bucket != store_bucket:
        raise PlaybookError(
            f"--bucket {bucket}: the object store {store!r} holds bucket {store_bucket}; "
            f"run `invoke storage.up --bucket {bucket}` first, pass --bucket {store_bucket}, "
            "or pass --storage env to use AWS_*"
        )
    return store_bucket


def uses_store(storage: str | None) -> bool:
    """Artifacts go to the storage.up store: asked for, or no AWS_* variable set."""
    no_env_storage = not any(
        os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
    )
    return storage == "local-s3" or (storage is None and no_env_storage)


def service_database(backend: ClusterBackend) -> Database | None:
    """The project's postgres service in this namespace, from its Secret `<name>-app` (None: not there)."""
    pg = postgres_name(backend.c)
    result = backend.kubectl.run("get", f"secret/{pg}-app", "-o", "json", "--ignore-not-found", timeout=20)
    if not result.stdout.strip():
        return None
    data = json.loads(result.stdout).get("data") or {}
    values = {key: base64.b64decode(value).decode() for key, value in data.items()}
    missing = [key for key in ("username", "password", "dbname") if not values.get(key)]
    if missing:
        raise PlaybookError(
            f"secret {pg}-app of the postgres service lacks {', '.join(missing)}: run `invoke postgres.up` to repair it"
        )
    return Database(
        host=values.get("host") or pg,
        port=int(values.get("port") or mlflow_db.DEFAULT_PORT),
        user=values["username"],
        dbname=values["dbname"],
        origin=f"the postgres service {pg!r}",
        password=values["password"],
        secret=f"{pg}-app",
    )


def postgres_name(c) -> str:
    """The postgres service's instance name (its setting postgres.name, when that service is installed)."""
    section = c.config.get("postgres") or {}
    return str(section.get("name") or "postgres")


class MlflowOnCluster(ClusterPart):
    def validate(
        self, c, bucket=None, prefix=None, name=None, storage=None, backend_store=None, database=None, **_
    ) -> None:
        _instance(c, name)
        mlflow_db.check_backend(backend_store)
        mlflow_db.check_choice(database)
        if backend_store:
            workers_for(c, backend_store)
        validate_prefix(prefix if prefix is not None else c.config.mlflow.prefix)
        if storage not in STORAGE_CHOICES:
            raise PlaybookError(f"unknown --storage {storage!r}: use local-s3 (the storage.up store) or env (AWS_*)")
        if bucket:
            validate_bucket(bucket)
        if not uses_store(storage):
            choose_bucket(bucket, c.config.mlflow.bucket, os.environ)
            s3_from_env(os.environ)

    def plan(
        self,
        backend: ClusterBackend,
        bucket=None,
        prefix=None,
        name=None,
        storage=None,
        backend_store=None,
        database=None,
        **_,
    ) -> Plan:
        """Every input checked and the target detected: all before any write."""
        c = backend.c
        cfg = c.config.mlflow
        instance = _instance(c, name)
        chosen_prefix = validate_prefix(prefix if prefix is not None else cfg.prefix)
        deployed = None
        if not backend_store:
            try:
                found = backend.kubectl.get_json("deployments.apps", managed_selector(SERVICE, instance))
            except PlaybookError as error:
                if "forbidden" not in str(error).lower():
                    raise
                found = {}  # not ours to read: the preflight refuses the writes in its own one line
            items = found.get("items", [])
            deployed = backend_of_uri(deployed_uri(items[0])) if items else None
        kind, why = choose_backend(backend_store, deployed, cfg.get("backend", "sqlite"))
        workers = workers_for(c, kind)
        db = None
        if kind == "postgres":
            choice = mlflow_db.check_choice(database or cfg.get("database"))
            db = mlflow_db.choose(
                os.environ, choice, partial(service_database, backend), f" in namespace {backend.namespace}"
            )
        if uses_store(storage):
            store = c.config.storage.name
            found = storage_cluster.settings(c, backend.target, backend.kubectl, store)
            if found is None:
                if storage == "local-s3":
                    raise PlaybookError(
                        f"no object store in namespace {backend.namespace}: run `invoke storage.up` first"
                    )
                s3_from_env(os.environ)  # raises: no credentials, and says how to get them
            s3, held = found
            chosen = store_bucket(bucket, held, store)
            origin = f"the storage service ({s3.endpoint_url})"
            # Its endpoint is an in-cluster name: storage.up checked the bucket from inside.
            reachable_here = False
        else:
            chosen, origin = choose_bucket(bucket, cfg.bucket, os.environ)
            s3 = s3_from_env(os.environ)
            reachable_here = True
        plan = build_plan(c, backend.target, s3, chosen, origin, chosen_prefix, instance, db, workers)
        if why != "--backend" and kind != "sqlite":
            plan.notes.append(f"backend {kind} ({why})")
        if reachable_here:
            plan.checks.append(partial(bucket_shortfalls, s3, chosen))
        if db is not None:
            plan.checks.append(partial(database_shortfalls, db))
        mlflow_upgrade.attach(backend, plan)  # a new image: check and migrate the database first
        return plan

    def access(self, backend: ClusterBackend, instance: str) -> None:
        port = int(backend.c.config.mlflow.port)
        print(f"{instance}: in-cluster URL   http://{in_cluster_host(instance, backend.namespace)}:{port}")
        local, _ = forwarded(backend, self._want(backend, instance))
        print(f"{instance}: from outside     invoke forward, then export MLFLOW_TRACKING_URI=http://127.0.0.1:{local}")
        print(f'{instance}: or               eval "$(playbooks env)"')

    def address(self, backend: ClusterBackend, instance: str) -> str:
        return f"http://{instance}.{backend.namespace}.svc:{backend.c.config.mlflow.port}"

    def env(self, backend: ClusterBackend) -> list[EnvVar]:
        instance = preferred(deployed_instances(backend.kubectl, SERVICE), backend.c.config.mlflow.name)
        if instance is None:
            return []
        if backend.reach == IN_CLUSTER:
            return [EnvVar("MLFLOW_TRACKING_URI", self.address(backend, instance))]
        local, comment = forwarded(backend, self._want(backend, instance))
        return [EnvVar("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{local}", comment=comment)]

    def _want(self, backend: ClusterBackend, instance: str) -> Want:
        port = int(backend.c.config.mlflow.port)
        return Want(SERVICE, instance, f"service/{instance}", port, "mlflow", "http", "/health")

    def forwards(self, backend: ClusterBackend) -> list[Want]:
        return [self._want(backend, instance) for instance in deployed_instances(backend.kubectl, SERVICE)]

    def down(self, backend: ClusterBackend, purge: bool, name=None, **_) -> None:
        tear_down(backend.kubectl, SERVICE, _instance(backend.c, name), purge)

    def status(self, backend: ClusterBackend, name=None) -> None:
        kubectl = backend.kubectl
        for inst in self.instances(backend, name):
            items = kubectl.get_json("deployments.apps", managed_selector(SERVICE, inst)).get("items", [])
            if not items:
                print(f"{inst}: not deployed in namespace {backend.namespace}")
                continue
            ready = items[0].get("status", {}).get("readyReplicas", 0)
            want = items[0].get("spec", {}).get("replicas", 1)
            print(f"{inst}: {'ready' if ready >= want else 'NOT ready'} ({ready}/{want} replicas)")
            print(f"{inst}: backend          {describe_uri(deployed_uri(items[0]))}")
            self.access(backend, inst)

    def smoke_reports(self, backend: ClusterBackend, name=None, keep: bool = False, **_) -> list[Report]:
        """Round-trip every deployed MLflow instance (or the one named)."""
        kubectl = backend.kubectl
        instances = [name] if name else deployed_instances(kubectl, SERVICE)
        reports = []
        s3 = s3_from_env(os.environ, required=False)
        for inst in instances:
            state = kubectl.get_json("deployments.apps", managed_selector(SERVICE, inst))
            if not state.get("items"):
                raise PlaybookError(
                    f"mlflow {inst!r} is not deployed in namespace {backend.namespace}: run `invoke mlflow.up`"
                )
            bucket, prefix = artifact_destination(state["items"][0])

            def check(endpoint, inst=inst, bucket=bucket, prefix=prefix) -> Report:
                print(f"{inst}: checking {endpoint.url()} via {endpoint.how}", flush=True)
                return round_trip(endpoint.url(), s3=s3, bucket=bucket, prefix=prefix, service=inst, keep=keep)

            report = check_service(kubectl, inst, [int(backend.c.config.mlflow.port)], check)
            print(report.render(), flush=True)
            reports.append(report)
        return reports

    def logs(self, backend: ClusterBackend, lines: int, name=None, **_) -> str:
        return super().logs(backend, lines, None)

    def backup(self, backend: ClusterBackend, instance: str, to: str | None) -> None:
        from playbooks.services import mlflow_backup as mb
        from playbooks.services.mlflow_backup_cluster import ClusterDatabase

        db = ClusterDatabase(backend, instance)
        name = mb.file_name(instance, db.kind)
        target = mb.local_target(to, name) if to else None
        store = None if target else cluster_bucket(backend, db.deployment)
        with mb.temporary_folder() as folder:
            copy = target or Path(folder) / name
            db.dump(copy, float(backend.c.config.mlflow.get("backup_timeout", 600)))
            size = copy.stat().st_size
            where = str(copy) if target else store.put(copy, name)
        print(f"{instance}: backed up {db.where()} to {where} ({size} bytes)", flush=True)

    def restore(self, backend: ClusterBackend, instance: str, source: str | None, force: bool) -> None:
        from playbooks.services import mlflow_backup as mb
        from playbooks.services.mlflow_backup_cluster import ClusterDatabase

        db = ClusterDatabase(backend, instance)
        cfg = backend.c.config.mlflow
        timeout = float(cfg.get("backup_timeout", 600))
        with mb.temporary_folder() as folder:
            found, origin = mb.fetch(
                source, lambda: cluster_bucket(backend, db.deployment), instance, db.kind, Path(folder)
            )
            # Every check that can run before the server stops does.
            if db.kind == "sqlite":
                mb.sqlite_check(found)
                held = db.count_live()
            else:
                db.start_helper(180)
                held = db.count_in_helper()
            if held and not force:
                db.delete_helper()
                raise mb.refusal(db.where(), held)
            try:
                db.stop(120)
                if db.kind == "sqlite":
                    db.start_helper(180)
                    if held is None and (held := db.count_in_helper()) and not force:
                        raise mb.refusal(db.where(), held)
                db.load(found, timeout)
            finally:
                db.delete_helper()
                db.start(float(cfg.rollout_timeout))
        print(f"{instance}: restored {db.where()} from {origin}", flush=True)

    def sample_docs(self, c, target: Target) -> list[dict]:
        s3 = S3Settings("AKIAEXAMPLE", "example-secret", endpoint_url="http://s3.example:9000")
        return build_plan(c, target, s3, "ws-frank", "--bucket", "mlflow", _instance(c, None)).docs


def cluster_bucket(backend: ClusterBackend, deployment: dict):
    """The bucket the deployed server writes artifacts to, with S3 settings that reach it from here:
    AWS_*, else the storage service's when its endpoint resolves here (a session in the cluster)."""
    from urllib.parse import urlsplit

    from playbooks.services.mlflow_backup import Bucket

    bucket, prefix = artifact_destination(deployment)
    s3 = s3_from_env(os.environ, required=False)
    if s3 is None:
        found = storage_cluster.settings(backend.c, backend.target, backend.kubectl, backend.c.config.storage.name)
        if found and mlflow_db.resolvable(urlsplit(found[0].endpoint_url or "").hostname or ""):
            s3 = found[0]
    if s3 is None or bucket is None:
        raise PlaybookError(
            "MLflow's bucket cannot be reached from here (no AWS_* credentials, and the storage service's endpoint "
            "is an in-cluster name): export AWS_*, or pass --to PATH / --from PATH (a local file)"
        )
    return Bucket(s3, bucket, prefix)


def database_shortfalls(db: Database) -> list[str]:
    """Connect from here before any write, where the host resolves; an in-cluster name that does not
    is left to the rollout's wait (a server that cannot connect crashes, and the wait says so)."""
    if not mlflow_db.resolvable(db.host):
        print(f"mlflow: {db.where()} not checked from here (the name resolves only in the cluster)", flush=True)
        return []
    return mlflow_db.reach_shortfalls(db, db.read_password())


class MlflowLocal(LocalPart):
    def validate(self, c, bucket=None, backend_store=None, database=None, **_) -> None:
        if bucket:
            validate_bucket(bucket)
        mlflow_db.check_backend(backend_store)
        mlflow_db.check_choice(database)
        if backend_store:
            workers_for(c, backend_store)

    def up(
        self,
        backend: LocalBackend,
        bucket=None,
        prefix=None,
        port=None,
        storage=None,
        backend_store=None,
        database=None,
        **_,
    ) -> None:
        mlflow_local.up(backend.c, bucket, prefix, port, storage, backend_store, database)

    def down(self, backend: LocalBackend, purge: bool, **_) -> None:
        mlflow_local.down(backend.c, purge)

    def status(self, backend: LocalBackend, **_) -> None:
        mlflow_local.status(backend.c)

    def smoke_reports(self, backend: LocalBackend, keep: bool = False, **_) -> list[Report]:
        return mlflow_local.smoke_reports(backend.c, keep)

    def env(self, backend: LocalBackend) -> list[EnvVar]:
        url = mlflow_local.tracking_uri(backend.c)
        return [EnvVar("MLFLOW_TRACKING_URI", url)] if url else []

    def logs(self, backend: LocalBackend, lines: int, **_) -> str:
        return mlflow_local.logs(backend.c, int(lines))

    def backup(self, backend: LocalBackend, instance: str, to: str | None) -> None:
        refuse_instance(instance)
        mlflow_local.backup(backend.c, to)

    def restore(self, backend: LocalBackend, instance: str, source: str | None, force: bool) -> None:
        refuse_instance(instance)
        mlflow_local.restore(backend.c, source, force)


def refuse_instance(instance: str) -> None:
    if instance != SERVICE:
        raise PlaybookError(f"local mode runs one MLflow, named {SERVICE}: leave out --name {instance}")


@task(
    help={
        "bucket": "Bucket for artifacts (default: WORKSHOP_NAMESPACE, the Datalab's bucket).",
        "prefix": "Key prefix inside the bucket (default: mlflow).",
        "name": "Name of the service and its objects (default: mlflow).",
        "dry-run": "Print the manifests (Secrets redacted) and commands; change nothing.",
        "port": "Local mode: port on 127.0.0.1 (default: last time's, else 5000, else a free one; 0: any free one).",
        "storage": "local-s3 (the storage.up store), env (AWS_*), or none (local mode: a local folder). Default: AWS_* if set, else the store.",
        "backend": "sqlite (a file on a volume, one worker) or postgres. Default: the running server's, else mlflow.backend (sqlite).",
        "database": "With postgres: which database (H, H/DB, DATABASE_URL, PGHOST or service). Default: the platform's, then DATABASE_URL, PGHOST, the postgres service.",
        **TARGET_HELP,
    }
)
def up(
    c,
    bucket=None,
    prefix=None,
    name=None,
    namespace=None,
    mode=None,
    dry_run=False,
    port=None,
    storage=None,
    backend=None,
    database=None,
):
    """Deploy an MLflow tracking server with artifacts in your bucket, and wait until it is ready."""
    options = dict(bucket=bucket, prefix=prefix, name=name, port=port, storage=storage)
    # Only when given: the root `up` passes none of them, and a part's other options stay as they were.
    # The option is "backend_store": a part's first parameter is already named backend.
    options.update({k: v for k, v in (("backend_store", backend), ("database", database)) if v is not None})
    backend_for(c, namespace, mode, dry_run).up([SERVICE_SPEC], {SERVICE: options})


@task(
    help={
        "name": "Name of the service (default: mlflow).",
        "purge": "Also delete the volume that holds the experiment database.",
        "dry-run": "Print what would be deleted; change nothing.",
        **TARGET_HELP,
    }
)
def down(c, name=None, purge=False, namespace=None, mode=None, dry_run=False):
    """Remove the MLflow server (found by its labels); keeps the database volume unless --purge."""
    _instance(c, name)
    backend_for(c, namespace, mode, dry_run).down([SERVICE_SPEC], purge, {SERVICE: {"name": name}})


@task(help={"name": "Name of the service (default: mlflow).", **TARGET_HELP})
def status(c, name=None, namespace=None, mode=None):
    """Show whether MLflow is ready and how to reach it."""
    instance = _instance(c, name) if name else None
    backend = backend_for(c, namespace, mode)
    backend.part(SERVICE_SPEC).status(backend, name=instance)


def artifact_destination(deployment: dict) -> tuple[str | None, str]:
    """The bucket and prefix a deployed server writes to, read from its arguments."""
    args = deployment["spec"]["template"]["spec"]["containers"][0].get("args", [])
    if "--artifacts-destination" in args:
        value = args[args.index("--artifacts-destination") + 1]
        if value.startswith("s3://"):
            bucket, _, prefix = value[5:].partition("/")
            return bucket, prefix
    return None, ""


@task(
    help={
        "name": "Name of the service (default: every deployed instance).",
        "keep": "Keep the check's run, artifact and experiment (datalab-playbooks-smoke); by default a pass deletes them.",
        **TARGET_HELP,
    }
)
def smoke(c, name=None, keep=False, namespace=None, mode=None):
    """Prove MLflow works: log a param, metric and artifact, read them back, find the object in S3; then clean up."""
    instance = _instance(c, name) if name else None
    backend = backend_for(c, namespace, mode)
    reports = backend.smoke_reports([SERVICE_SPEC], {SERVICE: {"name": instance, "keep": keep}})
    if not reports:
        where = "running on this machine" if backend.mode == "local" else f"deployed {backend.where()}"
        raise PlaybookError(f"mlflow is not {where}: run `invoke mlflow.up`")
    require_passed(reports)


@task(help={"lines": "How many lines from the end (default: 50).", **TARGET_HELP})
def logs(c, lines=50, namespace=None, mode=None):
    """Show the MLflow server's log (local mode: its log file; cluster modes: the pod's log)."""
    backend = backend_for(c, namespace, mode)
    print(backend.part(SERVICE_SPEC).logs(backend, int(lines)) or "mlflow: no log yet")


@task(
    help={
        "to": "A local file or folder (a folder takes the timestamped name). Default: the bucket MLflow uses, <prefix>/backups/.",
        "name": "Name of the service (default: mlflow).",
        **TARGET_HELP,
    }
)
def backup(c, to=None, name=None, namespace=None, mode=None):
    """Back up MLflow's tracking database (SQLite: a consistent copy; PostgreSQL: pg_dump) with a timestamped name."""
    instance = _instance(c, name)
    backend = backend_for(c, namespace, mode)
    backend.part(SERVICE_SPEC).backup(backend, instance, to)


@task(
    help={
        "from": "A local backup file, or s3://BUCKET/KEY. Default: the newest backup of this instance in the bucket.",
        "force": "Replace a database that holds runs, experiments or models.",
        "name": "Name of the service (default: mlflow).",
        **TARGET_HELP,
    }
)
def restore(c, from_=None, force=False, name=None, namespace=None, mode=None):
    """Restore MLflow's tracking database from a backup: the server stops meanwhile and starts again."""
    instance = _instance(c, name)
    backend = backend_for(c, namespace, mode)
    backend.part(SERVICE_SPEC).restore(backend, instance, from_, force)


ns = Collection(SERVICE, up, down, status, smoke, logs, backup, restore)

SERVICE_SPEC = Service(
    name=SERVICE,
    collection=ns,
    defaults=DEFAULTS[SERVICE],
    cluster=MlflowOnCluster(SERVICE),
    local=MlflowLocal(SERVICE),
    root_options=(
        RootOption("bucket", "MLflow's artifact bucket (default: WORKSHOP_NAMESPACE).", "bucket", validate_bucket),
    ),
)
