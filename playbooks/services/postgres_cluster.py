"""PostgreSQL in the cluster modes: a StatefulSet of one on its own claim, a generated password in a Secret.

The pod runs an explicit start script (from a ConfigMap), so it needs no entrypoint of the image's:
on an empty volume it runs `initdb` with the password from the mounted Secret (`--pwfile`: the
password is in no argv and no environment), creates the database in single-user mode, and moves
the new cluster into place only when both steps succeeded; then it `exec`s `postgres`. It works
with the official image and with the lab's stand-in (scripts/lab-images.sh).

The Secret `<name>-app` is the contract other services read: username, password, dbname, host
(the Service's name), port. It is generated once and kept: the database depends on it.
"""

from __future__ import annotations

import base64
import json
import shlex

from playbooks import security
from playbooks.deploy import Plan, config_hash
from playbooks.errors import PlaybookError
from playbooks.kube import Kubectl
from playbooks.quantity import check_resources
from playbooks.render import managed_selector, plain, render
from playbooks.services import postgres_settings as settings
from playbooks.services.postgres_settings import PORT, SERVICE
from playbooks.target import Target

DATA = "/var/lib/postgresql/data"
PGDATA = f"{DATA}/pgdata"
KEYS = ("username", "password", "dbname", "host", "port")

START_SCRIPT = """\
# Written by datalab-playbooks (postgres.up). From the pod: PGDATA, POSTGRES_USER_NAME, POSTGRES_DATABASE,
# PASSWORD_FILE (the mounted Secret). The password reaches initdb as a file, never as an argument.
set -eu
umask 077
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -d "$PGDATA" ] && [ -n "$(ls -A "$PGDATA")" ]; then
    echo "postgres: $PGDATA holds files but no database: empty it, or run postgres.down --purge" >&2
    exit 1
  fi
  echo "postgres: initialising a new database cluster in $PGDATA"
  rm -rf "$PGDATA.init"
  initdb -D "$PGDATA.init" --username="$POSTGRES_USER_NAME" --pwfile="$PASSWORD_FILE" \\
    --auth=scram-sha-256 --encoding=UTF8 --no-locale --no-instructions
  echo "CREATE DATABASE \\"$POSTGRES_DATABASE\\";" | postgres --single -D "$PGDATA.init" postgres >/dev/null
  if [ -d "$PGDATA" ]; then rmdir "$PGDATA"; fi
  mv "$PGDATA.init" "$PGDATA"
fi
# A volume's fsGroup handling may have opened the folder to the group: postgres refuses that.
chmod 700 "$PGDATA"
exec postgres -D "$PGDATA" -c listen_addresses=0.0.0.0 -c port=%(port)s -c unix_socket_directories=/tmp \\
  -c hba_file=/etc/postgres/config/pg_hba.conf -c password_encryption=scram-sha-256 %(flags)s
"""


def secret_name(name: str) -> str:
    return f"{name}-app"


def start_script(c) -> str:
    return START_SCRIPT % {"port": PORT, "flags": shlex.join(settings.server_flags(settings.server_settings(c)))}


def pod_user(c) -> int:
    """The uid the pod runs as (security.pod.runAsUser); refused unless set and not root: initdb runs as it."""
    uid = c.config.security.pod.get("runAsUser")
    if isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0:
        raise PlaybookError(
            f"postgres needs security.pod.runAsUser set to a non-root uid (it is {uid!r}): initdb runs as that user"
        )
    return uid


def passwd_line(c) -> str:
    """/etc/passwd for the pod's uid: initdb looks its user name up (checked by pod_user before `up`)."""
    pod = c.config.security.pod
    uid = pod.get("runAsUser")
    gid = pod.get("runAsGroup")
    return f"postgres:x:{uid}:{gid if isinstance(gid, int) else uid}:PostgreSQL:/tmp:/sbin/nologin\n"


def app_values(c, name: str, password: str) -> dict[str, str]:
    return {
        "username": settings.user(c),
        "password": password,
        "dbname": settings.database(c),
        "host": name,
        "port": str(PORT),
    }


def build_plan(c, target: Target, name: str, password: str) -> Plan:
    cfg = c.config.postgres
    script, passwd = start_script(c), passwd_line(c)
    pod_security = {**plain(security.params(c)["pod_security_context"]), "fsGroupChangePolicy": "OnRootMismatch"}
    values = app_values(c, name, password)
    params = {
        "image": cfg.image,
        "user": values["username"],
        "database": values["dbname"],
        "app": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
        "start_script": script,
        "passwd": passwd,
        "storage_size": cfg.storage_size,
        "storage_class": cfg.storage_class,
        "resources": check_resources(cfg.resources, "postgres.resources"),
        **security.params(c),
        "pod_security_context": pod_security,
        "config_hash": config_hash(cfg.image, values["username"], values["dbname"], script, passwd),
    }
    return Plan(
        service=SERVICE,
        instance=name,
        docs=render(SERVICE, name, target.namespace, params),
        deployments=[],
        statefulsets=[name],
        timeout=float(cfg.rollout_timeout),
    )


def read_app(kubectl: Kubectl, name: str) -> dict[str, str] | None:
    """The Secret's values (kept in memory, never printed), or None when there is none."""
    result = kubectl.run("get", f"secret/{secret_name(name)}", "-o", "json", "--ignore-not-found", timeout=20)
    if not result.stdout.strip():
        return None
    data = json.loads(result.stdout).get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def claim_exists(kubectl: Kubectl, name: str) -> bool:
    result = kubectl.run("get", f"persistentvolumeclaim/{name}-data", "-o", "name", "--ignore-not-found", timeout=20)
    return bool(result.stdout.strip())


def password_for(c, kubectl: Kubectl, name: str) -> str:
    """The kept password, or a new one for a new database; refuses (before any write) what would not match the data."""
    found = read_app(kubectl, name)
    if found is None:
        if claim_exists(kubectl, name):
            raise PlaybookError(
                f"the volume {name}-data holds a database made with the password of Secret {secret_name(name)}, "
                f"which is gone: restore that Secret, or run `invoke postgres.down --purge` to start afresh"
            )
        kubectl.out(
            f"{name}: {'would generate' if kubectl.dry_run else 'generated'} a password in Secret {secret_name(name)}"
        )
        return settings.generate_password()
    for key, setting, wanted in (
        ("username", "postgres.user", settings.user(c)),
        ("dbname", "postgres.database", settings.database(c)),
    ):
        if found.get(key) != wanted:
            raise PlaybookError(
                f"setting {setting} is {wanted!r} but the database of {name} was made with {found.get(key)!r}: "
                f"set {setting} to {found.get(key)!r}, or run `invoke postgres.down --purge` to start afresh"
            )
    if not found.get("password"):
        raise PlaybookError(f"Secret {secret_name(name)} has no password: restore it or run `postgres.down --purge`")
    return found["password"]


def deployed(kubectl: Kubectl, name: str | None = None) -> list[dict]:
    """The StatefulSets of the service (of one instance, when named)."""
    return kubectl.get_json("statefulsets.apps", managed_selector(SERVICE, name)).get("items", [])


def instances(kubectl: Kubectl) -> list[str]:
    labels = [item["metadata"].get("labels", {}) for item in deployed(kubectl)]
    return sorted({found.get("app.kubernetes.io/instance") for found in labels} - {None})


def readiness(item: dict) -> tuple[bool, str]:
    ready = (item.get("status") or {}).get("readyReplicas", 0)
    want = (item.get("spec") or {}).get("replicas", 1)
    return ready >= want, f"{'ready' if ready >= want else 'NOT ready'} {ready}/{want}"


def address(name: str, namespace: str) -> str:
    return f"postgresql://{name}.{namespace}.svc:{PORT}"


def secret_command(target: Target, name: str, key: str) -> str:
    """The shell command that prints one value of the Secret (for `export ...="$(...)"`)."""
    flags = shlex.join(target.kubectl_flags())
    return f"kubectl {flags} get secret {secret_name(name)} -o jsonpath='{{.data.{key}}}' | base64 -d"
