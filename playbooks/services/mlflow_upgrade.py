"""MLflow upgrades that keep every run: the tracking database's schema is migrated before a new MLflow serves it.

The contract with the server: its backend store URI is MLFLOW_BACKEND_STORE_URI in its environment
(PGPASSWORD beside it for PostgreSQL), so a check or a migration run with the server's environment
reaches the same database without the URI (or a password) on a command line.

- `schema_state(uri, env)`: where a database's schema stands against an MLflow installation's migration
  scripts (alembic revisions): "empty", "current", "older" (`mlflow db upgrade` brings it to head),
  "newer" (written by a later MLflow: a downgrade, refused) or "unversioned". It runs CHECK_SCRIPT, which
  needs only the standard library for SQLite (SQLAlchemy for other databases) and never imports mlflow.
- Local mode (`before_start`): the "image" is the `mlflow` the server runs. An older database: the old
  server is stopped (SQLite), `mlflow db upgrade` runs as a supervised child with a deadline (its output
  in the service's log), then the new server starts; a failed migration restarts the old server and
  names the cause in one line; a newer database is refused before anything is stopped.
- Cluster modes (`attach`): when `up` would change the Deployment's image, a small check Job in the new
  image reads the database's revision (a refusal changes nothing), then, for an older database, a
  migration Job in the new image runs `mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"` with the server
  container's own environment, volumes and pod security. SQLite: the old Deployment is scaled to 0 first
  (the Job mounts its ReadWriteOnce volume and takes its place in the quota) and scaled back, unchanged,
  when the migration fails. Other databases: the Job runs while the old server serves, then the rollout.

Why Jobs and not an init container on the new pod: the Deployment is Recreate (one SQLite writer), so the
old pod is gone before the new pod's init container runs; a failed migration would leave no server at all
(Init:CrashLoopBackOff), and undoing it means a second rollout of the old template. With Jobs the old
template is never replaced until the migration has succeeded, and the check refuses a downgrade before
anything stops.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from playbooks.errors import PlaybookError

SERVICE = "mlflow"
URI_ENV = "MLFLOW_BACKEND_STORE_URI"
TEMPLATES = "mlflow-upgrade"
CHECK, MIGRATE = "schema-check", "schema-migrate"
REFUSED_STATES = ("newer", "unversioned")

# Reads the database's alembic revision and the revisions of the MLflow installed beside this Python
# (its migration scripts, read as text: no mlflow import). One JSON line on stdout, and in the
# container's termination message where there is one. Exit 0 when it could judge, 2 when it could not.
CHECK_SCRIPT = r"""
import json, os, re, sys
from importlib import metadata, util
from pathlib import Path


def done(result, code=0):
    line = json.dumps(result, sort_keys=True)
    print(line, flush=True)
    if os.path.exists("/dev/termination-log"):
        try:
            with open("/dev/termination-log", "w") as out:
                out.write(line)
        except OSError:
            pass
    sys.exit(code)


try:
    spec = util.find_spec("mlflow")
    if spec is None:
        done({"state": "error", "error": "mlflow is not installed beside " + sys.executable}, 2)
    folder = Path(list(spec.submodule_search_locations)[0], "store", "db_migrations", "versions")
    known, parents = set(), set()
    for path in folder.glob("*.py"):
        text = path.read_text()
        found = re.search(r"^revision\s*(?::[^=]+)?=\s*['\"](\w+)['\"]", text, re.M)
        if found:
            known.add(found.group(1))
            down = re.search(r"^down_revision\s*(?::[^=]+)?=\s*(.+)$", text, re.M)
            parents.update(re.findall(r"['\"](\w+)['\"]", down.group(1)) if down else [])
    heads = sorted(known - parents)
    uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    if uri.startswith("sqlite:"):
        import sqlite3

        path = uri.split("?")[0][len("sqlite:///"):]
        tables, rows = set(), []
        if path and path != ":memory:" and os.path.exists(path):
            db = sqlite3.connect("file:" + path + "?mode=ro", uri=True, timeout=30)
            tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
            if "alembic_version" in tables:
                rows = [r[0] for r in db.execute("select version_num from alembic_version")]
            db.close()
    else:
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            tables = set(sqlalchemy.inspect(conn).get_table_names())
            rows = []
            if "alembic_version" in tables:
                rows = [r[0] for r in conn.execute(sqlalchemy.text("select version_num from alembic_version"))]
    if not tables:
        state = "empty"
    elif not rows:
        state = "unversioned"
    elif any(r not in known for r in rows):
        state = "newer"
    elif sorted(rows) == heads:
        state = "current"
    else:
        state = "older"
    version = metadata.version("mlflow")
    done({"state": state, "revision": ",".join(sorted(rows)) or None, "head": ",".join(heads), "version": version})
except SystemExit:
    raise
except Exception as error:
    done({"state": "error", "error": (type(error).__name__ + ": " + " ".join(str(error).split()))[:400]}, 2)
"""


# `mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"` run by the MLflow CLI itself, in-process.
MIGRATE_SCRIPT = (
    "import os; from mlflow.cli import cli; "
    "cli(['db', 'upgrade', os.environ['MLFLOW_BACKEND_STORE_URI']], prog_name='mlflow')"
)


@dataclass(frozen=True)
class SchemaState:
    """Where a tracking database's schema stands against one MLflow installation."""

    state: str  # empty | current | older | newer | unversioned
    revision: str | None  # the database's alembic revision (None: no alembic_version)
    head: str  # the installation's newest revision
    version: str  # the installation's MLflow version

    def refusal(self, where: str) -> str | None:
        """The one line that refuses this database for that MLflow, or None when it may serve it (after a migration)."""
        if self.state == "newer":
            return (
                f"{where}: the tracking database is at schema revision {self.revision}, newer than MLflow "
                f"{self.version} knows (its newest is {self.head}): a later MLflow wrote it and MLflow cannot "
                "downgrade a schema; use that MLflow release (or newer) again, or restore a backup taken before "
                "the upgrade; nothing was changed"
            )
        if self.state == "unversioned":
            return (
                f"{where}: the tracking database has tables but no alembic_version, so MLflow {self.version} "
                "cannot tell its schema; point MLflow at an MLflow database (or an empty one); nothing was changed"
            )
        return None


def parse_check(text: str, where: str) -> SchemaState:
    """CHECK_SCRIPT's answer (its last JSON line in text); a PlaybookError when it could not judge."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip().startswith("{")]
    try:
        found = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " ".join((text or "").split())[-300:] or "no output"
        raise PlaybookError(f"{where}: the schema check gave no answer ({tail})") from None
    if found.get("state") == "error":
        raise PlaybookError(
            f"{where}: cannot read the tracking database's schema revision ({found.get('error')}): "
            "check that the database is reachable and readable; nothing was changed"
        )
    return SchemaState(found["state"], found.get("revision"), found.get("head", ""), found.get("version", "?"))


def schema_state(
    uri: str, env: dict[str, str] | None = None, python: str | None = None, timeout: float = 60
) -> SchemaState:
    """Where the database at uri stands against the MLflow installed beside python (default: this one).

    env: the server's environment (PGPASSWORD for PostgreSQL); the URI goes in MLFLOW_BACKEND_STORE_URI,
    never on a command line. Raises PlaybookError (one line) when the database cannot be read.
    """
    import subprocess

    base = env if env is not None else os.environ
    child = {**base, URI_ENV: uri, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    try:
        result = subprocess.run(
            [python or sys.executable, "-c", CHECK_SCRIPT],
            env=child,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise PlaybookError(
            f"mlflow: the schema check did not finish within {timeout:.0f}s: is the database reachable (and not locked)?"
        ) from None
    except OSError as error:
        raise PlaybookError(f"mlflow: cannot run {python or sys.executable} for the schema check ({error})") from None
    return parse_check(result.stdout + "\n" + result.stderr if not result.stdout.strip() else result.stdout, "mlflow")


def seconds(c, key: str, default: float) -> float:
    value = c.config.mlflow.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PlaybookError(f"setting mlflow.{key} is {value!r}, which is not a number of seconds")
    try:
        return float(value)
    except ValueError:
        raise PlaybookError(f"setting mlflow.{key} is {value!r}, which is not a number of seconds") from None


# ---------------------------------------------------------------- local mode


def mlflow_command(c) -> str:
    """The `mlflow` local mode runs: mlflow.local_command, else this environment's (else PATH's)."""
    from playbooks import local

    chosen = c.config.mlflow.get("local_command")
    if not chosen:
        return local.tool("mlflow")
    path = Path(str(chosen)).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise PlaybookError(f"setting mlflow.local_command is {chosen!r}, which is not an executable file: fix it")
    return str(path)


def python_of(command: str) -> str:
    """The Python a console script runs with (its #! line), else this one."""
    try:
        with open(command, "rb") as script:
            first = script.readline(512).decode(errors="replace").strip()
    except OSError:
        return sys.executable
    if first.startswith("#!"):
        interpreter = first[2:].strip().split()[0] if first[2:].strip() else ""
        if "python" in Path(interpreter).name and Path(interpreter).is_file():
            return interpreter
    return sys.executable


def backend_uri(argv: list[str], env: dict[str, str]) -> str | None:
    """The server's backend store URI: MLFLOW_BACKEND_STORE_URI, else its --backend-store-uri argument."""
    if env.get(URI_ENV):
        return env[URI_ENV]
    if "--backend-store-uri" in argv:
        return argv[argv.index("--backend-store-uri") + 1]
    return None


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.split("?")[0][len("sqlite:///") :]) if uri.startswith("sqlite:") else None


def before_start(c, process, out=print) -> None:
    """Local mode, before the server (process) is started: migrate its database when the MLflow it runs is newer.

    Adds the MLflow version to the process's inputs, so a new version restarts the server. Raises
    PlaybookError (one line) for a newer database (nothing stopped) and for a failed migration (after the
    old server was started again).
    """
    from playbooks import local

    uri = backend_uri(process.argv, process.env)
    if uri is None:
        return
    database = _sqlite_file(uri)
    python = python_of(process.argv[0])
    found = schema_state(uri, process.env, python, seconds(c, "upgrade_check_timeout", 60))
    process.inputs["mlflow_version"] = found.version
    refusal = found.refusal("mlflow.up")
    if refusal:
        raise PlaybookError(refusal)
    if found.state != "older":
        return
    old = local.processes(c, SERVICE).get(SERVICE)
    running = local.alive(old)
    where = f"revision {found.revision} to {found.head} (MLflow {found.version})"
    if database is not None and running:
        out(
            f"mlflow: database schema is older than MLflow {found.version}: stopping the server (pid {old['pid']}) to migrate it"
        )
        local.stop(c, SERVICE, [SERVICE], grace=float(c.config.local.stop_grace))
    out(f"mlflow: migrating the database schema from {where}", flush=True)
    cause = _migrate_local(c, process, uri, seconds(c, "upgrade_timeout", 600), out)
    if cause is None:
        if running and local.alive(local.processes(c, SERVICE).get(SERVICE)):
            local.stop(c, SERVICE, [SERVICE], grace=float(c.config.local.stop_grace))  # old code, new schema
        return
    again = ""
    if running:
        previous = local.Process(
            SERVICE, list(old["argv"]), process.env, old.get("health_url"), old.get("health_port"), dict(old["inputs"])
        )
        try:
            local.ensure(c, SERVICE, previous, dict(old["ports"]), float(c.config.local.start_timeout), out)
            again = f"; the old server runs again at http://127.0.0.1:{old['ports'].get('http')}"
        except PlaybookError as error:
            again = f"; the old server did not start again either ({error})"
    log = local.service_dir(c, SERVICE) / f"{SERVICE}.log"
    raise PlaybookError(
        f"mlflow.up: the database migration from {where} failed: {cause}{again}; "
        f"fix the cause and run `invoke mlflow.up` again (full output in {log})"
    )


def _migrate_local(c, process, uri: str, timeout: float, out) -> str | None:
    """`mlflow db upgrade` as a supervised child (the server's environment, the service's log); None on
    success, else the cause in a few words."""
    from playbooks import local, procs

    folder = local.service_dir(c, SERVICE)
    log = folder / f"{SERVICE}.log"
    start = log.stat().st_size if log.exists() else 0
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # private, as procs.start keeps it
    with os.fdopen(fd, "a") as header:
        header.write(f"{time.strftime('%Y/%m/%d %H:%M:%S')} datalab-playbooks: mlflow db upgrade (mlflow.up)\n")
    env = {**process.env, URI_ENV: uri, **local.marker_env(c, SERVICE, "migrate")}
    # `mlflow db upgrade URI`, with the URI from the environment: not on a command line others can read.
    child = procs.start([python_of(process.argv[0]), "-c", MIGRATE_SCRIPT], env, log, cwd=folder)
    began = last = time.monotonic()
    try:
        while child.poll() is None:
            now = time.monotonic()
            if now - began >= timeout:
                procs.stop_group(child.pid, 5.0)
                return f"it did not finish within {timeout:.0f}s (setting mlflow.upgrade_timeout)"
            if now - last >= 5:
                out(f"mlflow: migrating [{now - began:.0f}s/{timeout:.0f}s]", flush=True)
                last = now
            local.pause(0.25)
    except BaseException:
        procs.stop_group(child.pid, 5.0)
        raise
    procs.reap(child.pid)
    if child.returncode == 0:
        out(f"mlflow: database migrated in {time.monotonic() - began:.0f}s", flush=True)
        return None
    with open(log, "rb") as text:
        text.seek(start)
        output = text.read().decode(errors="replace")
    return f"`mlflow db upgrade` exited with code {child.returncode}: {cause_line(output)}"


def error_line(output: str) -> str | None:
    """The line of a migration's output that says why it failed (the last exception line), or None."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if ("Error" in line or "Exception" in line) and ":" in line]
    if not errors:
        return None
    return errors[-1] if len(errors[-1]) <= 300 else errors[-1][:299] + "…"


def cause_line(output: str) -> str:
    """Why a migration failed: its last exception line, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    chosen = error_line(output) or (lines or ["no output"])[-1]
    return chosen if len(chosen) <= 300 else chosen[:299] + "…"


# ---------------------------------------------------------------- cluster modes


def attach(backend, plan) -> None:
    """Cluster modes: when the plan would change the running server's image, check (and migrate) the
    database before the new Deployment is applied: a step of plan.prepare, run after the preflight (so a
    namespace the credentials may not read is refused by it first) and only when the plan changes something."""
    kubectl = backend.kubectl
    if not kubectl.dry_run:
        plan.prepare.append(partial(_prepare, backend.c, kubectl, plan))
        return
    try:
        live = _live(kubectl, plan)
    except PlaybookError:
        return  # the dry run's preflight says what the credentials may not do
    if live is not None and _image(live) != _image(_server(plan)):
        plan.notes.append(
            f"image changes from {_image(live)} to {_image(_server(plan))}: `up` first checks the database schema "
            f"(Job {plan.instance}-{CHECK}) and, if it is older, migrates it (Job {plan.instance}-{MIGRATE})"
        )


def _image(deployment: dict) -> str:
    return deployment["spec"]["template"]["spec"]["containers"][0].get("image", "")


def _live(kubectl, plan) -> dict | None:
    from playbooks.render import managed_selector

    listed = kubectl.get_json("deployments.apps", managed_selector(SERVICE, plan.instance)).get("items", [])
    return next((item for item in listed if item["metadata"]["name"] == plan.instance), None)


def _prepare(c, kubectl, plan) -> None:
    live = _live(kubectl, plan)
    if live is None or _image(live) == _image(_server(plan)):
        return
    old, new = _image(live), _image(_server(plan))
    kubectl.out(f"{plan.instance}: image changes from {old} to {new}: checking the database schema first")
    Upgrade(c, kubectl, plan, live, old, new).run()


def schema_state_in_cluster(c, kubectl, plan) -> SchemaState:
    """Where the plan's database stands against the MLflow of the plan's image, judged by the schema-check Job
    in that image with the server's environment (e.g. PostgreSQL before a first `up`: refuse a newer schema with
    `found.refusal(instance)`). Writes nothing but the short-lived Job."""
    image = _server(plan)["spec"]["template"]["spec"]["containers"][0]["image"]
    return Upgrade(c, kubectl, plan, {"spec": {"replicas": 1}}, None, image).check()


def _server(plan) -> dict:
    return next(d for d in plan.docs if d["kind"] == "Deployment" and d["metadata"]["name"] == plan.instance)


def container_uri(container: dict) -> str | None:
    """The backend store URI a server container uses, when it is plain text (a Secret's is None)."""
    for var in container.get("env") or []:
        if var.get("name") == URI_ENV:
            return var.get("value")
    return backend_uri(container.get("args") or [], {})


class Upgrade:
    """One image change of one MLflow Deployment: check, then (older schema) migrate, then the rollout."""

    def __init__(self, c, kubectl, plan, live: dict, old_image: str, new_image: str) -> None:
        self.c, self.kubectl, self.plan, self.live = c, kubectl, plan, live
        self.old_image, self.new_image = old_image, new_image
        self.server = _server(plan)
        uri = container_uri(self.server["spec"]["template"]["spec"]["containers"][0])
        self.sqlite = uri is not None and uri.startswith("sqlite:")
        self.uri = uri

    def label(self, step: str) -> str:
        return f"{self.plan.instance}/{step}"

    def job(self, step: str, resources: dict, command: list[str], read_only: bool) -> list[dict]:
        """The Job of one step: the server container's image, environment, volumes and pod security."""
        from playbooks.render import render

        pod = copy.deepcopy(self.server["spec"]["template"]["spec"])
        container = pod["containers"][0]
        for key in ("ports", "startupProbe", "readinessProbe", "livenessProbe", "args"):
            container.pop(key, None)
        container["name"] = step
        container["command"] = command
        container["resources"] = resources
        # A failed step's last log lines reach the pod's status, where the cause is read from.
        container["terminationMessagePolicy"] = "FallbackToLogsOnError"
        if self.uri is not None and not any(v.get("name") == URI_ENV for v in container.get("env") or []):
            container.setdefault("env", []).append({"name": URI_ENV, "value": self.uri})
        if read_only:
            for mount in container.get("volumeMounts") or []:
                if mount.get("name") == "db":
                    mount["readOnly"] = True
            pod["affinity"] = self.beside_server() if self.sqlite else None
        pod["containers"] = [container]
        pod.pop("initContainers", None)  # the server's own container only (its checks are the Job's)
        pod["restartPolicy"] = "Never"
        pod = {k: v for k, v in pod.items() if v is not None}
        params = {"step": step, "pod_spec": pod, "deadline": int(self.timeout)}
        return render(TEMPLATES, self.plan.instance, self.kubectl.target.namespace, params)

    @property
    def timeout(self) -> float:
        return seconds(self.c, "upgrade_timeout", 600)

    def beside_server(self) -> dict | None:
        """A check that mounts the server's ReadWriteOnce volume must run on the server's node."""
        from playbooks.render import label_selector, selector_labels

        labels = {**selector_labels(SERVICE, self.plan.instance), "app.kubernetes.io/component": "tracking-server"}
        pods = self.kubectl.get_json("pods", label_selector(labels)).get("items", [])
        if not any((p.get("spec") or {}).get("nodeName") for p in pods):
            return None
        term = {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}
        return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}

    def run_step(self, step: str, docs: list[dict], resources: str) -> tuple[bool, str, str]:
        """Run a step's Job to its end: (succeeded, how it ended, its answer: termination message or logs)."""
        from playbooks import jobs
        from playbooks.render import label_selector

        kubectl = self.kubectl
        name = docs[0]["metadata"]["name"]
        selector = label_selector({**docs[0]["metadata"]["labels"]})
        jobs.remove(kubectl, [f"job/{name}"])
        try:
            kubectl.apply(docs)
            succeeded, detail = jobs.wait_for_job(kubectl, name, selector, self.timeout, self.label(step), resources)
            pods = kubectl.get_json("pods", f"job-name={name}").get("items", [])
            said = [
                ((status.get("state") or {}).get("terminated") or {}).get("message") or ""
                for pod in pods
                for status in (pod.get("status") or {}).get("containerStatuses") or []
            ]
            logs = kubectl.run("logs", f"job/{name}", "--tail=400", timeout=30, check=False)
            answer = "\n".join([logs.stdout if logs.ok else "", *said])
            return succeeded, detail, answer
        finally:
            try:
                jobs.remove(kubectl, [f"job/{name}"])
            except PlaybookError as error:
                kubectl.out(f"{self.label(step)}: could not delete job/{name}: {error}")

    def check(self) -> SchemaState:
        cfg = self.c.config.mlflow
        from playbooks.quantity import check_resources

        resources = check_resources(cfg.upgrade_check_resources, "mlflow.upgrade_check_resources")
        docs = self.job(CHECK, resources, ["python", "-c", CHECK_SCRIPT], read_only=True)
        self.refuse_over_quota(docs, [], "the schema check Job (mlflow.upgrade_check_resources)")
        succeeded, detail, answer = self.run_step(CHECK, docs, "mlflow.upgrade_check_resources")
        where = f"{self.plan.instance}: schema check in {self.new_image}"
        if not succeeded and "{" not in answer:
            raise PlaybookError(f"{where} failed ({detail}); nothing was changed")
        return parse_check(answer, where)

    def run(self) -> None:
        kubectl, instance = self.kubectl, self.plan.instance
        found = self.check()
        kubectl.out(
            f"{instance}: database schema {found.state} (revision {found.revision or 'none'}; "
            f"MLflow {found.version} in {self.new_image} knows up to {found.head})"
        )
        refusal = found.refusal(instance)
        if refusal:
            raise PlaybookError(refusal)
        if found.state != "older":
            return
        replicas = int((self.live.get("spec") or {}).get("replicas", 1))
        from playbooks.render import plain

        resources = plain(self.server["spec"]["template"]["spec"]["containers"][0].get("resources") or {})
        command = ["sh", "-c", f'exec mlflow db upgrade "${URI_ENV}"']
        docs = self.job(MIGRATE, resources, command, read_only=False)
        # SQLite: the Job takes the stopped server's place in the quota; otherwise it runs beside it.
        self.refuse_over_quota(docs, [self.live] if self.sqlite else [], "the migration Job (mlflow.resources)")
        if self.sqlite:
            self.scale(0)
        kubectl.out(f"{instance}: migrating the database schema from {found.revision} to {found.head}")
        try:
            succeeded, detail, answer = self.run_step(MIGRATE, docs, self.plan.resources_setting(instance))
        except BaseException as error:
            if self.sqlite:
                kubectl.out(
                    f"{instance}: the migration did not end ({error}); scaling the old server back to {replicas}"
                )
                self.scale(replicas)
            raise
        if succeeded:
            kubectl.out(f"{instance}: database migrated to {found.head}; rolling out {self.new_image}")
            return
        # The exception MLflow printed, else how the Job ended (e.g. out of memory, and the setting to raise).
        cause = error_line(answer) or detail
        back = ""
        if self.sqlite:
            self.scale(replicas)
            back = f"; the old server ({self.old_image}) runs again, unchanged"
        raise PlaybookError(
            f"{instance}: the database migration from {found.revision} to {found.head} failed ({cause}){back}; "
            f"fix the cause and run `invoke mlflow.up` again"
        )

    def refuse_over_quota(self, docs: list[dict], replaces: list[dict], what: str) -> None:
        """Refuse (nothing changed yet) when the namespace's quota cannot take a step's Job."""
        from playbooks import preflight
        from playbooks.deploy import quota_shortfalls

        preflight.refuse(
            [f"{line}; nothing was changed" for line in quota_shortfalls(self.kubectl, docs, replaces, what)]
        )

    def scale(self, replicas: int) -> None:
        """Scale the old Deployment (its template unchanged) and wait: for 0, until its pods are gone."""
        from playbooks.render import label_selector, selector_labels

        kubectl, instance = self.kubectl, self.plan.instance
        kubectl.run("scale", f"deployment/{instance}", f"--replicas={replicas}", timeout=30)
        label = f"{instance}/scale-{replicas}"
        selector = label_selector(selector_labels(SERVICE, instance))
        timeout = float(self.c.config.mlflow.rollout_timeout)
        if replicas:
            kubectl.out(f"{instance}: scaled {self.old_image} back to {replicas}")
            kubectl.wait_for_deployment(instance, selector, timeout, label, self.plan.resources_setting(instance))
            return
        kubectl.out(f"{instance}: scaled the old server to 0 (SQLite: one writer); waiting until its pod is gone")
        kubectl.poll(label, selector, timeout, partial(_server_pods_gone, kubectl, instance, selector), "pods not gone")
        kubectl.out(f"{label}: the old server's pods are gone")


def _server_pods_gone(kubectl, instance: str, selector: str, seconds: float) -> tuple[bool, str]:
    pods = [
        p
        for p in kubectl.get_json("pods", selector, timeout=seconds).get("items", [])
        if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "tracking-server"
    ]
    names = ", ".join(p["metadata"]["name"] for p in pods)
    return not pods, f"waiting for {names} to end" if pods else "no server pod"
