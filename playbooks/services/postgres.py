"""PostgreSQL: the platform's database for MLflow and the user's own work, in every mode.

Cluster modes: a StatefulSet of one server on a claim of its own, a generated password in the
Secret `<name>-app` (username, password, dbname, host, port: what other services read), a
ClusterIP Service on 5432 (postgres_cluster). Local mode: a real server as a supervised process
(postgres_local). `down` keeps the data and its password; `down --purge` deletes both.
"""

from __future__ import annotations

from invoke import Collection

from playbooks import local
from playbooks.backends import ClusterBackend, LocalBackend, backend_for
from playbooks.defaults import DEFAULTS
from playbooks.deploy import Plan, tear_down
from playbooks.endpoint import check_service, in_cluster_host
from playbooks.errors import PlaybookError, task
from playbooks.forwards import Want, forwarded
from playbooks.parts import ClusterPart, LocalPart
from playbooks.registry import Service
from playbooks.report import Report, require_passed
from playbooks.services import postgres_cluster as cluster
from playbooks.services import postgres_local
from playbooks.services import postgres_settings as settings
from playbooks.services.postgres_settings import PORT, SERVICE
from playbooks.shellenv import IN_CLUSTER, EnvVar, preferred
from playbooks.target import Target

HELP = {
    "namespace": "Namespace to act in (cluster modes; default: SESSION_NAMESPACE, then the context's).",
    "mode": "namespace, vcluster or local; overrides detection.",
}
NAME_HELP = "Name of the server and its objects (cluster modes; default: postgres)."


class PostgresOnCluster(ClusterPart):
    def validate(self, c, name=None, **_) -> None:
        settings.validate(c, name)
        cluster.pod_user(c)

    def validate_down(self, c, name=None, **_) -> None:
        settings.instance(c, name)

    def plan(self, backend: ClusterBackend, name=None, **_) -> Plan:
        c = backend.c
        instance = settings.validate(c, name)
        secret = cluster.password_for(c, backend.kubectl, instance)
        return cluster.build_plan(c, backend.target, instance, secret)

    def access(self, backend: ClusterBackend, instance: str) -> None:
        c = backend.c
        local, _ = forwarded(backend, self._want(instance))
        print(f"{instance}: in-cluster       {in_cluster_host(instance, backend.namespace)}:{PORT}")
        print(f"{instance}: user, database   {settings.user(c)}, {settings.database(c)}")
        print(f"{instance}: password         in Secret {cluster.secret_name(instance)} (key password)")
        print(f"{instance}: from outside     invoke forward, then PGHOST=127.0.0.1 PGPORT={local}")
        print(f'{instance}: or               eval "$(playbooks env)"')

    def _want(self, instance: str) -> Want:
        return Want(SERVICE, instance, f"service/{instance}", PORT, SERVICE, "postgresql")

    def forwards(self, backend: ClusterBackend) -> list[Want]:
        return [self._want(instance) for instance in cluster.instances(backend.kubectl)]

    def address(self, backend: ClusterBackend, instance: str) -> str:
        return cluster.address(instance, backend.namespace)

    def rows(self, backend: ClusterBackend) -> list[tuple[str, ...]]:
        rows = []
        for item in cluster.deployed(backend.kubectl):
            instance = item["metadata"].get("labels", {}).get("app.kubernetes.io/instance", "?")
            rows.append((SERVICE, instance, cluster.readiness(item)[1], self.address(backend, instance)))
        return sorted(rows)

    def instances(self, backend: ClusterBackend, name: str | None = None) -> list[str]:
        found = [name] if name else cluster.instances(backend.kubectl)
        if not found:
            print(f"{SERVICE}: not deployed in namespace {backend.namespace}")
        return found

    def down(self, backend: ClusterBackend, purge: bool, name=None, **_) -> None:
        instance = settings.instance(backend.c, name)
        keep = ("persistentvolumeclaim/", f"secret/{cluster.secret_name(instance)}")
        tear_down(backend.kubectl, SERVICE, instance, purge, keep=keep)

    def status(self, backend: ClusterBackend, name=None) -> None:
        for instance in self.instances(backend, name):
            items = cluster.deployed(backend.kubectl, instance)
            if not items:
                print(f"{instance}: not deployed in namespace {backend.namespace}")
                continue
            ok, line = cluster.readiness(items[0])
            print(f"{instance}: {line}")
            self.access(backend, instance)
            if not ok:
                raise PlaybookError(f"{instance} is not ready: see `invoke postgres.logs`")

    def smoke_reports(self, backend: ClusterBackend, name=None, **_) -> list[Report]:
        from playbooks.postgres_check import round_trip

        kubectl = backend.kubectl
        reports = []
        for instance in [name] if name else cluster.instances(kubectl):
            if not cluster.deployed(kubectl, instance):
                raise PlaybookError(
                    f"postgres {instance!r} is not deployed in namespace {backend.namespace}: run `invoke postgres.up`"
                )
            app = cluster.read_app(kubectl, instance)
            if not app or not all(app.get(key) for key in cluster.KEYS):
                raise PlaybookError(
                    f"Secret {cluster.secret_name(instance)} is missing or incomplete: run `invoke postgres.up`"
                )

            def check(endpoint, instance=instance, app=app) -> Report:
                print(f"{instance}: checking {endpoint.host}:{endpoint.port} via {endpoint.how}", flush=True)
                return round_trip(
                    endpoint.host, endpoint.port, app["username"], app["dbname"], app["password"], service=instance,
                    timeout=float(backend.c.config.postgres.smoke_timeout),
                )  # fmt: skip

            report = check_service(kubectl, instance, [PORT], check)
            print(report.render(), flush=True)
            reports.append(report)
        return reports

    def env(self, backend: ClusterBackend) -> list[EnvVar]:
        instance = preferred(cluster.instances(backend.kubectl), backend.c.config.postgres.name)
        if instance is None:
            return []
        app = cluster.read_app(backend.kubectl, instance) or {}
        user, database = app.get("username", settings.user(backend.c)), app.get("dbname", settings.database(backend.c))
        password = EnvVar(
            "PGPASSWORD", command=cluster.secret_command(backend.target, instance, "password"),
            comment=f"the password, read from Secret {cluster.secret_name(instance)} when the shell runs this line",
        )  # fmt: skip
        if backend.reach == IN_CLUSTER:
            host = [EnvVar("PGHOST", in_cluster_host(instance, backend.namespace))]
            port = PORT
        else:
            port, comment = forwarded(backend, self._want(instance))
            host = [EnvVar("PGHOST", "127.0.0.1", comment=comment)]
        return [
            *host,
            EnvVar("PGPORT", str(port)),
            EnvVar("PGUSER", user),
            EnvVar("PGDATABASE", database),
            password,
        ]

    def logs(self, backend: ClusterBackend, lines: int, name=None, **_) -> str:
        return super().logs(backend, lines, settings.instance(backend.c, name) if name else None)

    def sample_docs(self, c, target: Target) -> list[dict]:
        return cluster.build_plan(c, target, settings.instance(c, None), "example-password").docs


class PostgresLocal(LocalPart):
    def validate(self, c, **_) -> None:
        settings.validate(c)

    def up(self, backend: LocalBackend, port=None, **_) -> None:
        postgres_local.up(backend.c, port)

    def down(self, backend: LocalBackend, purge: bool, **_) -> None:
        postgres_local.down(backend.c, purge)

    def rows(self, backend: LocalBackend) -> list[tuple[str, ...]]:
        rows = []
        for name, record in local.processes(backend.c, SERVICE).items():
            health = postgres_local.health(backend.c, record)
            port = (record.get("ports") or {}).get(SERVICE)
            rows.append((SERVICE, name, f"{health} (pid {record.get('pid')})", self.url(SERVICE, port)))
        return rows

    def url(self, kind: str, port: int) -> str:
        return f"postgresql://127.0.0.1:{port}"

    def status(self, backend: LocalBackend, **_) -> None:
        postgres_local.status(backend.c)

    def smoke_reports(self, backend: LocalBackend, **_) -> list[Report]:
        return postgres_local.smoke_reports(backend.c)

    def env(self, backend: LocalBackend) -> list[EnvVar]:
        found = postgres_local.connection(backend.c)
        if found is None:
            return []
        return [
            EnvVar("PGHOST", found.host),
            EnvVar("PGPORT", str(found.port)),
            EnvVar("PGUSER", found.user),
            EnvVar("PGDATABASE", found.dbname),
            EnvVar("PGPASSFILE", str(postgres_local.pgpass_file(backend.c)), comment="the password, read by libpq"),
        ]

    def logs(self, backend: LocalBackend, lines: int, **_) -> str:
        return postgres_local.logs(backend.c, int(lines))


@task(
    help={
        "name": NAME_HELP,
        "port": "Local mode: port on 127.0.0.1 (default: last time's, else 5432, else a free one; 0: any free one).",
        "dry-run": "Cluster modes: print the manifests (Secrets redacted) and commands; change nothing.",
        **HELP,
    }
)
def up(c, name=None, port=None, namespace=None, mode=None, dry_run=False):
    """Run a PostgreSQL server with a generated password, and wait until it accepts connections."""
    settings.instance(c, name)
    backend_for(c, namespace, mode, dry_run).up([SERVICE_SPEC], {SERVICE: {"name": name, "port": port}})


@task(
    help={
        "name": NAME_HELP,
        "purge": "Also delete the database (volume, or local data folder) and its password.",
        "dry-run": "Print what would be deleted; change nothing.",
        **HELP,
    }
)
def down(c, name=None, purge=False, namespace=None, mode=None, dry_run=False):
    """Stop the PostgreSQL server; keeps the database and its password unless --purge."""
    settings.instance(c, name)
    backend_for(c, namespace, mode, dry_run).down([SERVICE_SPEC], purge, {SERVICE: {"name": name}})


@task(help={"name": NAME_HELP, **HELP})
def status(c, name=None, namespace=None, mode=None):
    """Show whether PostgreSQL accepts connections and how to reach it (the password by reference)."""
    instance = settings.instance(c, name) if name else None
    backend = backend_for(c, namespace, mode)
    backend.part(SERVICE_SPEC).status(backend, name=instance)


@task(help={"name": "Name of the server (default: every deployed one).", **HELP})
def smoke(c, name=None, namespace=None, mode=None):
    """Prove PostgreSQL works: log in with the generated password, write a row to a temporary table, read it back."""
    instance = settings.instance(c, name) if name else None
    backend = backend_for(c, namespace, mode)
    reports = backend.smoke_reports([SERVICE_SPEC], {SERVICE: {"name": instance}})
    if not reports:
        where = "running on this machine" if backend.mode == "local" else f"deployed {backend.where()}"
        raise PlaybookError(f"postgres is not {where}: run `invoke postgres.up`")
    require_passed(reports)


@task(help={"lines": "How many lines from the end (default: 50).", "name": NAME_HELP, **HELP})
def logs(c, lines=50, name=None, namespace=None, mode=None):
    """Show the PostgreSQL server's log (local mode: its log file; cluster modes: the pod's log)."""
    instance = settings.instance(c, name) if name else None
    backend = backend_for(c, namespace, mode)
    print(backend.part(SERVICE_SPEC).logs(backend, int(lines), name=instance) or "postgres: no log yet")


ns = Collection(SERVICE, up, down, status, smoke, logs)

SERVICE_SPEC = Service(
    name=SERVICE,
    collection=ns,
    defaults=DEFAULTS[SERVICE],
    cluster=PostgresOnCluster(SERVICE),
    local=PostgresLocal(SERVICE),
    # Started by the root `up` only when named (--only postgres, or by a service that needs it): a
    # session that uses no database should not pay for one. The root `down` stops it with the others;
    # its data and password are kept unless --purge, so nothing is lost.
    by_default=(),
)
