"""mlflow.backup / mlflow.restore in the cluster modes (see mlflow_backup.py for the files and the rules).

The tools run where they are, and the bytes stream through `kubectl exec` to or from this machine:
- SQLite, backup: sqlite3's backup API inside the running server's container, the copy on stdout.
- SQLite, restore: the Deployment is scaled to 0; a helper pod (the MLflow image) mounts the database
  volume and writes the backup read from stdin beside the database, checks it, renames it over it.
- PostgreSQL: a helper pod of the postgres image (postgres.image, else mlflow.tools_image) with the
  server's PGHOST/PGPORT/PGUSER/PGDATABASE and PGPASSWORD from the same Secret the server reads runs
  pg_dump (stdout) or, with the Deployment at 0, pg_restore (stdin, one transaction).
The helper pod carries its own name label (never the Service's selector), is deleted at the end, and
the Deployment is scaled back to its replicas whatever happened.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from playbooks.errors import PlaybookError
from playbooks.render import MANAGED_BY, PART_OF, label_selector, selector_labels

SERVICE = "mlflow"
DB_DIR = "/mlflow/db"
TOOLS_IMAGE = "docker.io/library/postgres:16.11-bookworm"
CHUNK = "1 << 20"

SQLITE_DUMP = f"""
import os, sqlite3, sys, tempfile
source = sqlite3.connect("file:{DB_DIR}/mlflow.db?mode=ro", uri=True, timeout=30)
fd, path = tempfile.mkstemp(dir="/tmp")
os.close(fd)
copy = sqlite3.connect(path)
source.backup(copy)
copy.close()
source.close()
with open(path, "rb") as data:
    while chunk := data.read({CHUNK}):
        sys.stdout.buffer.write(chunk)
os.unlink(path)
"""

SQLITE_COUNT = f"""
import os, sqlite3, sys
path = "{DB_DIR}/mlflow.db"
if not os.path.exists(path):
    print(0)
    sys.exit(0)
db = sqlite3.connect("file:" + path + "?mode=ro", uri=True, timeout=30)
try:
    print(db.execute(sys.argv[1]).fetchone()[0])
except sqlite3.OperationalError:
    print(0)
"""

SQLITE_RESTORE = f"""
import os, sqlite3, sys
target = "{DB_DIR}/mlflow.db"
temporary = "{DB_DIR}/.mlflow.db.restore"
with open(temporary, "wb") as out:
    while chunk := sys.stdin.buffer.read({CHUNK}):
        out.write(chunk)
db = sqlite3.connect(temporary)
verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
db.close()
if verdict != "ok":
    os.unlink(temporary)
    sys.exit("the backup is damaged: " + verdict)
for suffix in ("-wal", "-shm", "-journal"):
    try:
        os.unlink(target + suffix)
    except FileNotFoundError:
        pass
os.replace(temporary, target)
"""


class ClusterDatabase:
    """The database of one deployed MLflow instance, and the kubectl moves around it."""

    def __init__(self, backend, instance: str) -> None:
        from playbooks.render import managed_selector
        from playbooks.services.mlflow_db import backend_of_uri, deployed_uri

        self.backend = backend
        self.c = backend.c
        self.kubectl = backend.kubectl
        self.instance = instance
        items = self.kubectl.get_json("deployments.apps", managed_selector(SERVICE, instance)).get("items", [])
        if not items:
            raise PlaybookError(
                f"mlflow {instance!r} is not deployed in namespace {backend.namespace}: run `invoke mlflow.up` first"
            )
        self.deployment = items[0]
        self.uri = deployed_uri(self.deployment) or ""
        self.kind = backend_of_uri(self.uri) or "sqlite"
        self.replicas = int(self.deployment["spec"].get("replicas", 1))
        self.helper = f"{instance}-dbtool"

    # ------------------------------------------------------------ what output may say

    def where(self) -> str:
        if self.kind == "postgres":
            parts = urlsplit(self.uri)
            return f"PostgreSQL database {unquote(parts.path.lstrip('/'))} on {parts.hostname}:{parts.port or 5432}"
        return f"SQLite on volume {self.instance}-db"

    # ------------------------------------------------------------ streams through kubectl exec

    def _exec(self, args: list[str], stdin=None, stdout=None, timeout: float = 600) -> subprocess.CompletedProcess:
        argv = self.kubectl.argv("exec", *(["-i"] if stdin is not None else []), *args)
        try:
            result = subprocess.run(
                argv,
                env=self.kubectl._env(),
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise PlaybookError(f"kubectl exec did not finish within {timeout:.0f}s: is the pod reachable?") from None
        if result.returncode != 0:
            lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
            raise PlaybookError(
                f"{args[0]}: {lines[-1] if lines else f'exit code {result.returncode}'}; see `invoke mlflow.logs`"
            )
        return result

    def stream_out(self, args: list[str], target: Path, timeout: float) -> None:
        with open(target, "wb") as out:
            self._exec(args, stdout=out, timeout=timeout)

    def stream_in(self, args: list[str], source: Path, timeout: float) -> None:
        with open(source, "rb") as data:
            self._exec(args, stdin=data, timeout=timeout)

    # ------------------------------------------------------------ the helper pod

    def _container(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]["containers"][0]

    def tools_image(self) -> str:
        configured = self.c.config.mlflow.get("tools_image")
        postgres = self.c.config.get("postgres") or {}
        return str(configured or postgres.get("image") or TOOLS_IMAGE)

    def helper_doc(self) -> dict:
        from playbooks.render import plain

        cfg = self.c.config
        volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
        mounts = [{"name": "tmp", "mountPath": "/tmp"}]
        env = [{"name": "HOME", "value": "/tmp"}]
        if self.kind == "sqlite":
            image = self._container()["image"]
            volumes.append({"name": "db", "persistentVolumeClaim": {"claimName": f"{self.instance}-db"}})
            mounts.append({"name": "db", "mountPath": DB_DIR})
        else:
            image = self.tools_image()
            parts = urlsplit(self.uri)
            env += [
                {"name": "PGHOST", "value": parts.hostname or ""},
                {"name": "PGPORT", "value": str(parts.port or 5432)},
                {"name": "PGUSER", "value": unquote(parts.username or "")},
                {"name": "PGDATABASE", "value": unquote(parts.path.lstrip("/"))},
            ]
            env += [e for e in self._container().get("env", []) if e.get("name") == "PGPASSWORD"]
        labels = {
            **selector_labels(f"{SERVICE}-dbtool", self.instance),
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.helper, "namespace": self.backend.namespace, "labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": plain(cfg.security.pod),
                "containers": [
                    {
                        "name": "tool",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "3600"],
                        "env": env,
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"cpu": "250m", "memory": "256Mi"},
                        },
                        "securityContext": plain(cfg.security.container),
                        "volumeMounts": mounts,
                    }
                ],
                "volumes": volumes,
            },
        }

    def start_helper(self, timeout: float) -> None:
        self.kubectl.run("delete", f"pod/{self.helper}", "--ignore-not-found", "--wait=true", timeout=90)
        self.kubectl.apply_now([self.helper_doc()])
        started, shown = time.monotonic(), time.monotonic()
        while True:
            pod = json.loads(self.kubectl.run("get", f"pod/{self.helper}", "-o", "json", timeout=20).stdout)
            statuses = pod.get("status", {}).get("containerStatuses") or []
            if statuses and statuses[0].get("ready"):
                return
            waiting = ((statuses[0].get("state") or {}).get("waiting") or {}) if statuses else {}
            reason = waiting.get("reason") or pod.get("status", {}).get("phase", "Pending")
            if reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"):
                image = self.helper_doc()["spec"]["containers"][0]["image"]
                raise PlaybookError(
                    f"the helper pod {self.helper} cannot start ({reason}: {waiting.get('message', '')[:160]}): "
                    f"check image {image} (setting mlflow.tools_image)"
                )
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise PlaybookError(f"the helper pod {self.helper} was not running within {timeout:.0f}s ({reason})")
            if time.monotonic() - shown >= 10:
                print(f"{self.instance}: starting helper pod {self.helper} [{elapsed:.0f}s/{timeout:.0f}s] ({reason})")
                shown = time.monotonic()
            time.sleep(2)

    def delete_helper(self) -> None:
        self.kubectl.run("delete", f"pod/{self.helper}", "--ignore-not-found", "--wait=false", timeout=60, check=False)

    # ------------------------------------------------------------ scaling the server

    def selector(self) -> str:
        return label_selector(selector_labels(SERVICE, self.instance))

    def scale(self, replicas: int) -> None:
        self.kubectl.run("scale", f"deployment/{self.instance}", f"--replicas={replicas}", timeout=60)

    def stop(self, timeout: float) -> None:
        self.scale(0)
        started = time.monotonic()
        while self.kubectl.get_json("pods", self.selector()).get("items"):
            if time.monotonic() - started > timeout:
                raise PlaybookError(f"the MLflow pods did not stop within {timeout:.0f}s: see `kubectl get pods`")
            time.sleep(2)
        print(f"{self.instance}: scaled to 0 ({time.monotonic() - started:.0f}s)", flush=True)

    def start(self, timeout: float) -> None:
        self.scale(self.replicas)
        if self.replicas:
            self.kubectl.wait_for_deployment(self.instance, self.selector(), timeout, self.instance, "mlflow.resources")

    def ready(self) -> bool:
        return int(self.deployment.get("status", {}).get("readyReplicas", 0)) > 0

    # ------------------------------------------------------------ the two tasks' moves

    def dump(self, target: Path, timeout: float) -> None:
        if self.kind == "sqlite":
            self.stream_out(
                [f"deployment/{self.instance}", "-c", "mlflow", "--", "python3", "-c", SQLITE_DUMP], target, timeout
            )
            return
        self.start_helper(180)
        try:
            self.stream_out(
                [f"pod/{self.helper}", "--", "pg_dump", "--format=custom", "--no-owner", "--no-privileges"],
                target,
                timeout,
            )
        finally:
            self.delete_helper()

    def count_live(self) -> int | None:
        """Runs, experiments and models the database holds, asked of the running server's pod (SQLite) or
        a helper (PostgreSQL); None when it cannot be asked before the server stops."""
        from playbooks.services.mlflow_backup import CONTENT_SQL

        if self.kind == "sqlite":
            if not self.ready():
                return None
            args = [f"deployment/{self.instance}", "-c", "mlflow", "--", "python3", "-c", SQLITE_COUNT, CONTENT_SQL]
            return int(self._exec(args, timeout=60).stdout.decode().strip() or 0)
        return self.count_in_helper()

    def count_in_helper(self) -> int:
        from playbooks.services.mlflow_backup import CONTENT_SQL

        if self.kind == "sqlite":
            args = [f"pod/{self.helper}", "--", "python3", "-c", SQLITE_COUNT, CONTENT_SQL]
            return int(self._exec(args, timeout=60).stdout.decode().strip() or 0)
        argv = self.kubectl.argv("exec", f"pod/{self.helper}", "--", "psql", "-X", "-At", "-c", CONTENT_SQL)
        result = subprocess.run(argv, env=self.kubectl._env(), capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            if "does not exist" in result.stderr:
                return 0  # no MLflow tables yet
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            raise PlaybookError(f"psql: {lines[-1] if lines else 'failed'}: check the database MLflow uses")
        return int(result.stdout.strip() or 0)

    def load(self, source: Path, timeout: float) -> None:
        if self.kind == "sqlite":
            self.stream_in([f"pod/{self.helper}", "--", "python3", "-c", SQLITE_RESTORE], source, timeout)
            return
        parts = urlsplit(self.uri)
        args = [
            f"pod/{self.helper}", "--", "pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges",
            "--single-transaction", "--exit-on-error", "--dbname", unquote(parts.path.lstrip("/")),
        ]  # fmt: skip
        self.stream_in(args, source, timeout)
