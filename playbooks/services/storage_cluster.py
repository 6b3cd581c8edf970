"""Object storage in the cluster modes: a MinIO server with a volume, generated credentials and a bucket."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
from functools import partial

from playbooks import security
from playbooks.deploy import Plan, access_shortfalls, apply_plans, config_hash
from playbooks.errors import PlaybookError
from playbooks.jobs import run_job
from playbooks.kube import Kubectl
from playbooks.quantity import check_resources
from playbooks.render import label_selector, managed_selector, render, selector_labels
from playbooks.s3 import S3Settings, validate_bucket
from playbooks.target import Target

SERVICE = "storage"
BUCKET_JOB = "storage-bucket"
BUCKET_ANNOTATION = "datalab-playbooks/bucket"
REGION = "us-east-1"


def secret_name(name: str) -> str:
    return f"{name}-credentials"


def read_credentials(kubectl: Kubectl, name: str) -> dict[str, str] | None:
    """The store's credentials from its Secret; they stay in memory, never printed."""
    result = kubectl.run("get", f"secret/{secret_name(name)}", "-o", "json", "--ignore-not-found", timeout=20)
    if not result.stdout.strip():
        return None
    data = json.loads(result.stdout).get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def generate_credentials() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "datalab" + secrets.token_hex(6),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
    }


def _encoded(creds: dict[str, str]) -> dict[str, str]:
    return {key: base64.b64encode(value.encode()).decode() for key, value in creds.items()}


def build_plan(c, target: Target, name: str, bucket: str, creds: dict[str, str]) -> Plan:
    cfg = c.config.storage
    params = {
        "image": cfg.image,
        "credentials": _encoded(creds),
        "storage_size": cfg.storage_size,
        "storage_class": cfg.storage_class,
        "resources": check_resources(cfg.resources, "storage.resources"),
        **security.params(c),
        "config_hash": config_hash(cfg.image, _encoded(creds)),
    }
    docs = render(SERVICE, name, target.namespace, params)
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["metadata"].setdefault("annotations", {})[BUCKET_ANNOTATION] = bucket
    return Plan(SERVICE, name, docs, deployments=[name], timeout=float(cfg.rollout_timeout))


def bucket_job_docs(c, target: Target, name: str, bucket: str, deadline: float) -> list[dict]:
    cfg = c.config.storage
    params = {
        "image": cfg.image,
        "bucket": bucket,
        "deadline": int(deadline),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "128Mi"}},
        **security.params(c),
    }
    return render(BUCKET_JOB, name, target.namespace, params)


def up(c, target: Target, kubectl: Kubectl, bucket: str | None, name: str) -> None:
    chosen = validate_bucket(bucket or os.environ.get("WORKSHOP_NAMESPACE") or c.config.storage.bucket)
    dry_run = kubectl.dry_run
    creds = read_credentials(kubectl, name)
    if creds is None:
        creds = generate_credentials()
        kubectl.out(f"{name}: {'would generate' if dry_run else 'generated'} credentials in Secret {secret_name(name)}")
    plan = build_plan(c, target, name, chosen, creds)
    jobs = bucket_job_docs(c, target, name, chosen, float(c.config.storage.job_timeout))
    plan.checks.append(partial(access_shortfalls, kubectl, jobs))
    apply_plans(kubectl, [plan])
    if dry_run:
        kubectl.show_apply(jobs)
        return
    selector = label_selector(selector_labels(BUCKET_JOB, name))
    outcome = run_job(kubectl, jobs, selector, float(c.config.storage.job_timeout), f"{name}/bucket")
    if not outcome.succeeded:
        raise PlaybookError(f"creating bucket {chosen} failed ({outcome.detail}); see `invoke storage.status`")
    kubectl.out(f"{name}: bucket {chosen} is there")
    print_env(c, target, kubectl, name)


def deployed(kubectl: Kubectl, name: str) -> dict | None:
    state = kubectl.get_json("deployments.apps", managed_selector(SERVICE, name))
    items = state.get("items", [])
    return items[0] if items else None


def settings(c, target: Target, kubectl: Kubectl, name: str) -> tuple[S3Settings, str] | None:
    """The in-cluster endpoint, credentials and bucket of a deployed store, or None."""
    deployment = deployed(kubectl, name)
    if deployment is None:
        return None
    creds = read_credentials(kubectl, name)
    if creds is None:
        return None
    bucket = deployment["metadata"].get("annotations", {}).get(BUCKET_ANNOTATION) or c.config.storage.bucket
    endpoint = f"http://{name}.{target.namespace}.svc.{c.config.target.cluster_domain}:9000"
    s3 = S3Settings(creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"], endpoint_url=endpoint, region=REGION)
    return s3, bucket


def print_env(c, target: Target, kubectl: Kubectl, name: str) -> None:
    deployment = deployed(kubectl, name)
    if deployment is None:
        print(f"{name}: not deployed in namespace {target.namespace}")
        return
    ready = deployment.get("status", {}).get("readyReplicas", 0)
    bucket = deployment["metadata"].get("annotations", {}).get(BUCKET_ANNOTATION, "?")
    flags = shlex.join(target.kubectl_flags())
    get = f"kubectl {flags} get secret {secret_name(name)} -o jsonpath"
    print(f"{name}: {'ready' if ready else 'NOT ready'}, bucket {bucket}; inside the cluster:")
    print(
        f"export AWS_ENDPOINT_URL=http://{name}.{target.namespace}.svc:9000 AWS_REGION={REGION} WORKSHOP_NAMESPACE={bucket}"
    )
    print(f"export AWS_ACCESS_KEY_ID=\"$({get}='{{.data.AWS_ACCESS_KEY_ID}}' | base64 -d)\"")
    print(f"export AWS_SECRET_ACCESS_KEY=\"$({get}='{{.data.AWS_SECRET_ACCESS_KEY}}' | base64 -d)\"")
    print(
        f"{name}: from outside: kubectl {flags} port-forward service/{name} 9000:9000, then AWS_ENDPOINT_URL=http://127.0.0.1:9000"
    )
