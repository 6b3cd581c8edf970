"""MLflow on PostgreSQL, offline: where the database comes from, the URI MLflow gets, the manifests of both backends."""

import base64

import pytest

from playbooks.errors import PlaybookError
from playbooks.render import redacted, to_yaml
from playbooks.services import mlflow_db
from playbooks.services.mlflow import build_plan
from playbooks.services.mlflow_db import Database, check_workers, choose, parse_url
from tests.manifests import FakeContext, config, target, validate_all
from tests.test_mlflow_manifests import S3, by_kind

PASSWORD = "pw-Sup3r-s3cret-9e8d"
PLATFORM = {
    "POSTGRES_MAIN_HOST": "pg.platform.svc",
    "POSTGRES_MAIN_PORT": "5433",
    "POSTGRES_MAIN_USER": "frank",
    "POSTGRES_MAIN_PASSWORD": PASSWORD,
    "POSTGRES_MAIN_DATABASES": "mlflow",
    "POSTGRES_MAIN_MLFLOW_URL": f"postgresql://frank:{PASSWORD}@pg.platform.svc:5433/mlflow",
}


def no_service():
    return None


def service():
    return Database("postgres", 5432, "app", "app", "the postgres service 'postgres'", "svc-pw", secret="postgres-app")


def test_the_platform_database_comes_first_and_its_uri_has_no_password():
    env = {**PLATFORM, "DATABASE_URL": "postgresql://other:x@elsewhere/db", "PGHOST": "libpq-host", "PGUSER": "u"}
    db = choose(env, None, service, "")
    assert (db.host, db.port, db.user, db.dbname, db.read_password()) == (
        "pg.platform.svc",
        5433,
        "frank",
        "mlflow",
        PASSWORD,
    )
    assert db.uri() == "postgresql+psycopg2://frank@pg.platform.svc:5433/mlflow"
    assert PASSWORD not in repr(db) and PASSWORD not in db.where()
    assert db.where() == "database mlflow on pg.platform.svc:5433"


def test_the_platform_url_serves_when_host_or_user_are_missing():
    env = {k: v for k, v in PLATFORM.items() if k != "POSTGRES_MAIN_USER"}
    db = choose(env, None, no_service, "")
    assert (db.user, db.dbname, db.read_password()) == ("frank", "mlflow", PASSWORD)


def test_several_platform_databases_are_one_line_and_database_picks_one():
    env = {
        **PLATFORM,
        "POSTGRES_MAIN_DATABASES": "mlflow, features",
        "POSTGRES_OTHER_HOST": "o",
        "POSTGRES_OTHER_USER": "u",
    }
    env["POSTGRES_OTHER_DATABASES"] = "metrics"
    with pytest.raises(PlaybookError) as error:
        choose(env, None, service, "")
    assert str(error.value) == (
        "the platform declares several PostgreSQL databases (main/mlflow, main/features, other/metrics): "
        "pick one with --database H/DB (or set mlflow.database)"
    )
    assert choose(env, "main/features", service, "").dbname == "features"
    assert choose(env, "metrics", service, "").host == "o"
    assert choose(env, "OTHER", service, "").dbname == "metrics"
    with pytest.raises(
        PlaybookError, match=r"--database main matches several databases \(main/mlflow, main/features\)"
    ):
        choose(env, "main", service, "")
    with pytest.raises(PlaybookError, match="--database nope: no such database here; choose from main/mlflow"):
        choose(env, "nope", service, "")
    assert choose(env, "service", service, "").secret == "postgres-app"


def test_database_url_then_libpq_then_the_service():
    url = {"DATABASE_URL": f"postgres://u%40x:{PASSWORD}@db.example:6543/tracking?sslmode=require"}
    db = choose({**url, "PGHOST": "h", "PGUSER": "u"}, None, service, "")
    assert (db.user, db.host, db.port, db.dbname, db.options) == (
        "u@x",
        "db.example",
        6543,
        "tracking",
        (("sslmode", "require"),),
    )
    assert db.uri() == "postgresql+psycopg2://u%40x@db.example:6543/tracking?sslmode=require"
    libpq = choose(
        {"DATABASE_URL": "sqlite:///x.db", "PGHOST": "h", "PGUSER": "u", "PGPASSWORD": "p"}, None, service, ""
    )
    assert (libpq.host, libpq.port, libpq.user, libpq.dbname, libpq.read_password()) == ("h", 5432, "u", "u", "p")
    assert choose({}, None, service, "").origin == "the postgres service 'postgres'"


def test_no_database_anywhere_names_postgres_up():
    with pytest.raises(PlaybookError) as error:
        choose({"DATABASE_URL": "mysql://a@b/c"}, None, no_service, " in namespace ws")
    assert str(error.value).startswith("no PostgreSQL database: run `invoke postgres.up` first in namespace ws, or ")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"postgresql://frank:{PASSWORD}@:5432/mlflow", "no host"),
        (f"postgresql://frank:{PASSWORD}@db:port/mlflow", "its port is not a number"),
        (f"postgresql://frank:{PASSWORD}@db:5432", "no database name"),
        (f"postgresql://:{PASSWORD}@db/mlflow", "no user"),
        (f"mysql://frank:{PASSWORD}@db/mlflow", "scheme 'mysql'"),
        (f"postgresql://frank:{PASSWORD}@db/mlflow?password={PASSWORD}", "option 'password'"),
    ],
)
def test_a_malformed_url_is_one_line_without_the_url(url, problem):
    with pytest.raises(PlaybookError) as error:
        parse_url(url, "DATABASE_URL")
    assert problem in str(error.value) and PASSWORD not in str(error.value)
    assert str(error.value).startswith("DATABASE_URL is not a usable PostgreSQL URL")


def test_workers_more_than_one_only_with_postgres():
    assert check_workers(3, "postgres") == 3 and check_workers("1", "sqlite") == 1
    with pytest.raises(PlaybookError, match=r"mlflow\.workers is 2, but SQLite takes one worker"):
        check_workers(2, "sqlite")
    for bad in (0, "two", True, -1):
        with pytest.raises(PlaybookError, match=r"setting mlflow\.workers is"):
            check_workers(bad, "postgres")
    with pytest.raises(PlaybookError, match="unknown --backend 'mysql': use sqlite"):
        mlflow_db.check_backend("mysql")


def plan(db, workers=1):
    return build_plan(
        FakeContext(config()), target("namespace"), S3, "ws-frank", "--bucket", "mlflow", "mlflow", db, workers
    )


def env_of(deployment):
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_postgres_with_the_platform_database_renders_our_secret_and_no_volume():
    db = choose(PLATFORM, None, no_service, "")
    docs = plan(db, workers=3).docs
    validate_all(docs)
    kinds = by_kind(docs)
    assert "PersistentVolumeClaim" not in kinds
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    assert base64.b64decode(secrets["mlflow-db"]["data"]["password"]).decode() == PASSWORD
    deployment = kinds["Deployment"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = deployment["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["aws-config", "tmp"]
    env = env_of(deployment)
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "postgresql+psycopg2://frank@pg.platform.svc:5433/mlflow"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
    args = pod["containers"][0]["args"]
    assert args[args.index("--workers") + 1] == "3"
    shown = to_yaml(redacted(docs))
    assert PASSWORD not in shown and base64.b64encode(PASSWORD.encode()).decode() not in shown


def test_postgres_with_the_service_reads_its_secret_and_makes_none():
    docs = plan(service()).docs
    validate_all(docs)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == ["mlflow-s3"]
    env = env_of(by_kind(docs)["Deployment"])
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "postgres-app", "key": "password"}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "postgresql+psycopg2://app@postgres:5432/app"


def test_sqlite_keeps_its_volume_and_recreate_and_has_no_password():
    docs = plan(None).docs
    deployment = by_kind(docs)["Deployment"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "PGPASSWORD" not in env_of(deployment) and "PersistentVolumeClaim" in by_kind(docs)


def test_a_changed_password_rolls_the_server():
    first = by_kind(plan(choose(PLATFORM, None, no_service, "")).docs)["Deployment"]
    changed = by_kind(plan(choose({**PLATFORM, "POSTGRES_MAIN_PASSWORD": "new"}, None, no_service, "")).docs)[
        "Deployment"
    ]
    key = "datalab-playbooks/config-hash"
    assert (
        first["spec"]["template"]["metadata"]["annotations"][key]
        != changed["spec"]["template"]["metadata"]["annotations"][key]
    )
