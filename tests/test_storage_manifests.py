"""MinIO manifests and the bucket Job, rendered for both modes, validated strictly offline."""

import pytest

from playbooks.render import redacted, to_yaml
from playbooks.services.storage_cluster import bucket_job_docs, build_plan, generate_credentials
from tests.manifests import FakeContext, config, target, validate_all

CREDS = generate_credentials()


@pytest.mark.parametrize("mode", ["namespace", "vcluster"])
def test_storage_manifests_validate(mode):
    c = FakeContext(config())
    docs = build_plan(c, target(mode), "storage", "ws-frank", CREDS).docs + bucket_job_docs(
        c, target(mode), "storage", "ws-frank", 120
    )
    validate_all(docs)
    assert {d["kind"] for d in docs} == {"Secret", "PersistentVolumeClaim", "Service", "Deployment", "Job"}


def test_credentials_never_reach_arguments_or_printed_manifests():
    c = FakeContext(config())
    plan = build_plan(c, target("namespace"), "storage", "ws-frank", CREDS)
    job = bucket_job_docs(c, target("namespace"), "storage", "ws-frank", 120)
    shown = to_yaml(redacted(plan.docs + job))
    for value in CREDS.values():
        assert value not in shown
    container = job[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["mb", "--ignore-existing", "store/ws-frank"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MC_HOST_store"]["value"] == "http://$(ACCESS):$(SECRET)@storage:9000"
    assert env["SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "storage-credentials", "key": "AWS_SECRET_ACCESS_KEY"}


def test_generated_credentials_are_fresh_and_url_safe():
    other = generate_credentials()
    assert other["AWS_SECRET_ACCESS_KEY"] != CREDS["AWS_SECRET_ACCESS_KEY"]
    for value in other.values():
        assert len(value) >= 12 and not set(value) & set(":@/?#%")
