"""Quota preflight arithmetic on the rendered default plans and a Datalab `medium` quota."""

from decimal import Decimal

import pytest

from playbooks.errors import PlaybookError
from playbooks.quantity import cpu_cores, memory_bytes
from playbooks.quota import check, needs, quantity
from playbooks.s3 import S3Settings
from playbooks.services import dask, mlflow
from tests.manifests import FakeContext, config, target

S3 = S3Settings(access_key="k", secret_key="s")


def medium(used: dict | None = None) -> dict:
    hard = {"limits.cpu": "2", "limits.memory": "2Gi", "services": "10", "secrets": "25", "persistentvolumeclaims": "6"}
    return {"metadata": {"name": "medium"}, "spec": {"hard": hard}, "status": {"hard": hard, "used": used or {}}}


def default_docs(workers=2):
    c = FakeContext(config())
    docs = mlflow.build_plan(c, target("namespace"), S3, "ws-frank", "test", "mlflow", "mlflow").docs
    resources = dask.worker_resources(c)
    return docs + dask.build_plan(c, target("namespace"), "dask", workers, resources).docs


def test_quantities():
    assert quantity("500m") == quantity("0.5")
    assert quantity("2Gi") == 2 * 2**30 and quantity("1G") == 10**9 and quantity("10") == 10
    assert quantity("1Pi") == 2**50 and quantity("2E") == 2 * 10**18


@pytest.mark.parametrize("value", ["500m", "1", "1.5", "250m", "2"])
def test_the_quota_and_the_settings_read_a_cpu_quantity_alike(value):
    assert quantity(value) == cpu_cores(value, "x")


@pytest.mark.parametrize("value", ["448Mi", "1Gi", "512M", "1000", "1.5Gi", "2k"])
def test_the_quota_and_the_settings_read_a_memory_quantity_alike(value):
    assert quantity(value) == memory_bytes(value, "x")


def test_settings_take_only_the_forms_people_write_the_quota_every_form_the_api_writes():
    assert quantity("1Ki") == 1024 and quantity("100m") == Decimal("0.1")
    with pytest.raises(PlaybookError, match="is not a CPU quantity"):
        cpu_cores("1Ki", "dask.worker_resources.limits.cpu")
    with pytest.raises(PlaybookError, match="is not a memory quantity"):
        memory_bytes("100m", "dask.worker_resources.limits.memory")
    for bad in ("", "1.2.3", "Mi", "-1", ".5", "1e3"):
        with pytest.raises(PlaybookError, match="cannot read the quantity"):
            quantity(bad)


def test_defaults_fit_the_medium_quota_with_room_for_the_smoke_job():
    adds = needs(default_docs())
    assert adds["limits.cpu"] == quantity("1.7") and adds["limits.memory"] == 1920 * 2**20
    check([medium()], default_docs(), [], "ws")


def test_every_shortfall_is_named_at_once():
    with pytest.raises(PlaybookError) as error:
        check([medium({"limits.cpu": "500m", "limits.memory": "512Mi"})], default_docs(workers=4), [], "ws")
    message = str(error.value)
    assert "limits.cpu needs 2700m more, 1500m of 2000m left" in message
    assert "limits.memory needs 2816Mi more, 1536Mi of 2048Mi left" in message
    assert "\n" not in message


def test_reapplying_what_runs_needs_nothing_more():
    docs = default_docs()
    full = {
        "limits.cpu": "1700m",
        "limits.memory": "1920Mi",
        "services": "3",
        "secrets": "1",
        "persistentvolumeclaims": "1",
    }
    check([medium(full)], docs, docs, "ws")


def test_a_scale_is_checked_as_the_worker_deployment_it_makes():
    """dask.scale: the live worker Deployment with the new count, against the live one."""
    live = next(d for d in default_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "dask-worker")
    planned = {**live, "spec": {**live["spec"], "replicas": 4}}
    full = {
        "limits.cpu": "1700m",
        "limits.memory": "1920Mi",
        "services": "3",
        "secrets": "1",
        "persistentvolumeclaims": "1",
    }
    with pytest.raises(PlaybookError) as error:
        check([medium(full)], [planned], [live], "ws", what="dask.scale 4")
    assert str(error.value).startswith(
        "dask.scale 4 does not fit the quota of namespace ws: limits.cpu needs 1000m more, 300m of 2000m left (quota medium); "
        "limits.memory needs 896Mi more, 128Mi of 2048Mi left (quota medium); "
    )
    check([medium(full)], [{**live, "spec": {**live["spec"], "replicas": 1}}], [live], "ws", what="dask.scale 1")


def test_the_in_cluster_smoke_job_fits_beside_the_defaults_and_not_beside_bigger_workers():
    c = FakeContext(config())
    job = dask.smoke_job_docs(c, target("namespace"), "dask", 120)
    check([medium({"limits.cpu": "1700m", "limits.memory": "1920Mi"})], job, [], "ws", what="dask.smoke --in-cluster")
    bigger = {"limits.cpu": "1900m", "limits.memory": "1920Mi"}  # workers of 600m
    with pytest.raises(
        PlaybookError,
        match=r"^dask.smoke --in-cluster does not fit the quota of namespace ws: limits.cpu needs 250m more, 100m of 2000m left \(quota medium\); lower",
    ):
        check([medium(bigger)], job, [], "ws", what="dask.smoke --in-cluster")
