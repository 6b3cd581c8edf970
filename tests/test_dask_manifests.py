"""Dask manifests rendered for both modes, validated offline against real schemas; inputs checked before any write."""

import copy
import math
import subprocess
import sys
from decimal import Decimal
from importlib.metadata import version

import pytest
from invoke import Collection, Config

from playbooks.defaults import DASK_VERSION, DEFAULTS
from playbooks.errors import PlaybookError
from playbooks.parts import ClusterPart
from playbooks.quantity import cpu_cores, memory_bytes
from playbooks.registry import Service
from playbooks.render import common_labels
from playbooks.s3 import S3Settings
from playbooks.services import dask
from playbooks.services import mlflow as mlflow_service
from playbooks.stuck import job_progress, pod_state
from tests.manifests import FakeContext, config, target, validate_all

MEDIUM_QUOTA = {"cpu": Decimal(2), "memory": 2 * 2**30}


def context(overrides=None):
    return FakeContext(config(overrides))


def plan_for(mode="namespace", overrides=None, workers=2, cpu=None, memory=None, name="dask"):
    c = context(overrides)
    return dask.build_plan(c, target(mode), name, workers, dask.worker_resources(c, cpu, memory))


def docs_by_name(docs):
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in docs}


def container(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


def deployments(plan, name="dask"):
    found = docs_by_name(plan.docs)
    return found[f"Deployment/{name}-scheduler"], found[f"Deployment/{name}-worker"]


RESOURCE_SETTINGS = [
    {},
    {"cpu": "1500m", "memory": "1Gi"},
    {"cpu": "2", "memory": "4Gi", "workers": 0},
    {
        "overrides": {"dask": {"worker_resources": {"limits": {"cpu": "250m", "memory": "256Mi"}, "requests": {}}}},
        "workers": 50,
    },
    {
        "overrides": {
            "dask": {
                "scheduler_resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                "image": "daskdev/dask:2026.8.0-py3.12",
            }
        }
    },
]


@pytest.mark.parametrize("mode", ["namespace", "vcluster"])
@pytest.mark.parametrize(
    "setting",
    RESOURCE_SETTINGS,
    ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items() if k != "overrides") or "defaults",
)
def test_manifests_validate_strictly(mode, setting):
    plan = plan_for(
        mode, setting.get("overrides"), setting.get("workers", 2), setting.get("cpu"), setting.get("memory")
    )
    validate_all(plan.docs)
    assert plan.deployments == ["dask-scheduler", "dask-worker"]


@pytest.mark.parametrize("mode", ["namespace", "vcluster"])
def test_smoke_job_validates_strictly(mode):
    validate_all(dask.smoke_job_docs(context(), target(mode), "dask", 120.0))


def test_objects_carry_labels_and_each_selector_picks_only_its_pods():
    plan = plan_for(name="analytics")
    assert {f"{d['kind']}/{d['metadata']['name']}" for d in plan.docs} == {
        "Service/analytics-scheduler", "Deployment/analytics-scheduler", "Deployment/analytics-worker",
    }  # fmt: skip
    for doc in plan.docs:
        assert doc["metadata"]["namespace"] == "ws-frank-s1"
        assert common_labels("dask", "analytics").items() <= doc["metadata"]["labels"].items()
    scheduler, worker = deployments(plan, "analytics")
    scheduler_pods = scheduler["spec"]["template"]["metadata"]["labels"]
    worker_pods = worker["spec"]["template"]["metadata"]["labels"]
    service = docs_by_name(plan.docs)["Service/analytics-scheduler"]
    assert service["spec"]["selector"].items() <= scheduler_pods.items()
    assert not service["spec"]["selector"].items() <= worker_pods.items()
    assert scheduler["spec"]["selector"]["matchLabels"].items() <= scheduler_pods.items()
    assert not scheduler["spec"]["selector"]["matchLabels"].items() <= worker_pods.items()
    assert not worker["spec"]["selector"]["matchLabels"].items() <= scheduler_pods.items()


def test_service_ports_and_probes():
    plan = plan_for()
    service = docs_by_name(plan.docs)["Service/dask-scheduler"]
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("tcp", 8786, "tcp"),
        ("http", 8787, "http"),
    }
    scheduler, worker = (container(d) for d in deployments(plan))
    scheduler_ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    assert scheduler_ports == {"tcp": 8786, "http": 8787}
    assert scheduler["readinessProbe"]["tcpSocket"]["port"] == "tcp"
    worker_ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    args = worker["args"]
    assert args[args.index("--dashboard-address") + 1] == f":{worker_ports['http']}"
    assert args[args.index("--worker-port") + 1] == str(worker_ports["worker"])
    assert args[args.index("--nanny-port") + 1] == str(worker_ports["nanny"])


def test_commands_are_the_dask_cli_of_2022_10_and_later():
    scheduler, worker = (container(d) for d in deployments(plan_for()))
    assert scheduler["command"] == ["dask", "scheduler"]
    assert scheduler["args"] == ["--port", "8786", "--dashboard-address", ":8787"]
    assert worker["command"] == ["dask", "worker"]
    assert worker["args"][0] == "tcp://dask-scheduler:8786"
    for part in scheduler["command"] + scheduler["args"] + worker["command"] + worker["args"]:
        assert part not in ("dask-scheduler", "dask-worker", "pip")


@pytest.mark.parametrize(
    ("cpu", "memory", "threads", "limit_bytes"),
    [
        (None, None, 1, 448 * 2**20),
        ("250m", "256Mi", 1, 256 * 2**20),
        ("1", "1Gi", 1, 2**30),
        ("1500m", "1536Mi", 2, 1536 * 2**20),
        ("2", "512M", 2, 512 * 10**6),
        ("3.5", "2.5Gi", 4, int(2.5 * 2**30)),
    ],
)
def test_worker_args_match_limits(cpu, memory, threads, limit_bytes):
    worker = container(deployments(plan_for(cpu=cpu, memory=memory))[1])
    limits = worker["resources"]["limits"]
    args = worker["args"]
    assert args[args.index("--nthreads") + 1] == str(threads)
    assert args[args.index("--memory-limit") + 1] == str(limit_bytes)
    assert memory_bytes(limits["memory"], "") == limit_bytes
    assert threads == max(1, math.ceil(cpu_cores(limits["cpu"], "")))


def test_a_flag_lowers_a_request_above_its_new_limit():
    resources = dask.worker_resources(context(), cpu="50m", memory="300Mi")
    assert resources["limits"] == {"cpu": "50m", "memory": "300Mi"}
    assert resources["requests"] == {"cpu": "50m", "memory": "256Mi"}


def test_workers_reach_the_scheduler_by_pod_ip_and_name():
    worker = container(deployments(plan_for())[1])
    env = {e["name"]: e for e in worker["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    args = worker["args"]
    assert args[args.index("--host") + 1] == "$(POD_IP)"
    assert args[args.index("--name") + 1] == "$(POD_NAME)"


def test_worker_count_and_update_strategy():
    scheduler, worker = deployments(plan_for(workers=7))
    assert worker["spec"]["replicas"] == 7
    assert scheduler["spec"]["replicas"] == 1
    assert scheduler["spec"]["strategy"] == {"type": "Recreate"}
    # No surge pod: it would not fit a quota the services fill.
    assert worker["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


@pytest.mark.parametrize("mode", ["namespace", "vcluster"])
def test_pods_are_restricted_quiet_and_without_tokens(mode):
    pods = [d["spec"]["template"]["spec"] for d in deployments(plan_for(mode))]
    pods += [
        d["spec"]["template"]["spec"]
        for d in dask.smoke_job_docs(context(), target(mode), "dask", 60.0)
        if d["kind"] == "Job"
    ]
    for pod in pods:
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["DO_NOT_TRACK"] == "true"
            assert c["resources"]["limits"].keys() == {"cpu", "memory"}


def test_image_comes_from_configuration_and_the_client_is_pinned_to_it():
    default = plan_for()
    for d in deployments(default):
        assert container(d)["image"] == f"ghcr.io/dask/dask:{DASK_VERSION}-py3.11"
    assert version("distributed") == version("dask") == DASK_VERSION
    assert dask.image_release(f"ghcr.io/dask/dask:{DASK_VERSION}-py3.11") == DASK_VERSION
    other = plan_for(overrides={"dask": {"image": "registry.example/dask:2026.8.0-py3.12"}})
    for d in deployments(other):
        assert container(d)["image"] == "registry.example/dask:2026.8.0-py3.12"


# ---------------------------------------------------------------- the quota


def pod_limits(docs):
    """Sum of the limits of every pod the docs run: (cpu cores, memory bytes)."""
    cpu, memory = Decimal(0), 0
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        replicas = doc["spec"].get("replicas", 1)
        for c in doc["spec"]["template"]["spec"]["containers"]:
            cpu += replicas * cpu_cores(c["resources"]["limits"]["cpu"], "")
            memory += replicas * memory_bytes(c["resources"]["limits"]["memory"], "")
    return cpu, memory


def mlflow_docs():
    s3 = S3Settings(
        access_key="AKIAEXAMPLEKEY",
        secret_key="example-secret-value",
        endpoint_url="http://minio:9000",
        region="eu-west-1",
    )
    return mlflow_service.build_plan(
        context(), target("namespace"), s3, "ws-frank", "--bucket", "mlflow", "mlflow"
    ).docs


def test_defaults_with_mlflow_fit_the_medium_quota():
    """README arithmetic: MLflow 500m/768Mi + scheduler 200m/256Mi + 2 x 500m/448Mi = 1.7 CPU, 1920Mi."""
    dask_cpu, dask_memory = pod_limits(plan_for().docs)
    assert (dask_cpu, dask_memory) == (Decimal("1.2"), 1152 * 2**20)
    mlflow_cpu, mlflow_memory = pod_limits(mlflow_docs())
    assert (mlflow_cpu, mlflow_memory) == (Decimal("0.5"), 768 * 2**20)
    total_cpu, total_memory = dask_cpu + mlflow_cpu, dask_memory + mlflow_memory
    assert (total_cpu, total_memory) == (Decimal("1.7"), 1920 * 2**20)
    assert total_cpu <= MEDIUM_QUOTA["cpu"] and total_memory <= MEDIUM_QUOTA["memory"]
    # The in-cluster smoke Job runs next to them: it must fit what is left.
    job_cpu, job_memory = pod_limits(dask.smoke_job_docs(context(), target("namespace"), "dask", 120.0))
    assert total_cpu + job_cpu <= MEDIUM_QUOTA["cpu"]
    assert total_memory + job_memory <= MEDIUM_QUOTA["memory"]


def test_plan_notes_state_the_limits_total():
    assert "= 1.2 CPU, 1152Mi" in " ".join(plan_for().notes)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "fix"),
    [
        (lambda c: dask.worker_count("51"), "whole number from 0 to 50"),
        (lambda c: dask.worker_count("-1"), "whole number from 0 to 50"),
        (lambda c: dask.worker_count("2.5"), "whole number from 0 to 50"),
        (lambda c: dask.worker_count("two"), "whole number from 0 to 50"),
        (lambda c: dask.worker_count(True), "whole number from 0 to 50"),
        (lambda c: dask.worker_resources(c, cpu="1Gi"), "use millicores such as 500m"),
        (lambda c: dask.worker_resources(c, cpu="0"), "use millicores such as 500m"),
        (lambda c: dask.worker_resources(c, cpu="-1"), "use millicores such as 500m"),
        (lambda c: dask.worker_resources(c, memory="lots"), "use a size such as 448Mi"),
        (lambda c: dask.worker_resources(c, memory="512m"), "use a size such as 448Mi"),
        (lambda c: dask.worker_resources(c, memory="100Mi"), "give at least 256Mi"),
        (lambda c: dask._instance(c, "Dask_1"), "starting with a letter"),
        (lambda c: dask._instance(c, "1dask"), "starting with a letter"),
        (lambda c: dask._instance(c, "d" * 54), "up to 53"),
        (lambda c: dask._seconds("0", "--timeout"), "from 1 to 3600"),
        (lambda c: dask._seconds("soon", "--timeout"), "from 1 to 3600"),
    ],
)
def test_bad_flags_raise_one_line_naming_the_fix(call, fix):
    with pytest.raises(PlaybookError) as raised:
        call(context())
    assert fix in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        ({"worker_resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}}, "lower the request"),
        ({"worker_resources": {"limits": {"cpu": "fast"}}}, "dask.worker_resources.limits.cpu"),
        ({"worker_resources": {"limits": {"gpu": "1"}}}, "use cpu and memory"),
        ({"scheduler_resources": {"limit": {"cpu": "1"}}}, "use requests and limits"),
        ({"workers": 99}, "dask.workers must be a whole number"),
    ],
)
def test_bad_configuration_is_refused_before_any_write(overrides, fix):
    c = context({"dask": overrides})
    with pytest.raises(PlaybookError, match=fix):
        resources = dask.worker_resources(c)
        dask.choose_workers(None, None, c.config.dask.workers)
        dask.build_plan(c, target("namespace"), "dask", 2, resources)


def test_missing_worker_limit_names_the_flag():
    defaults = copy.deepcopy(DEFAULTS)
    del defaults["dask"]["worker_resources"]["limits"]["memory"]
    c = FakeContext(Config(defaults=defaults))
    with pytest.raises(PlaybookError, match="pass --worker-memory"):
        dask.worker_resources(c)


def test_smoke_job_deadline_must_leave_time_for_the_pull():
    c = context({"dask": {"smoke_job_timeout": 100}})
    with pytest.raises(PlaybookError, match="must exceed the check's timeout"):
        dask.smoke_job_docs(c, target("namespace"), "dask", 120.0)


# ---------------------------------------------------------------- scale and up


def test_up_keeps_a_scaled_count_unless_told():
    assert dask.choose_workers("5", running=3, configured=2)[0] == 5
    assert dask.choose_workers(None, running=3, configured=2) == (
        3,
        " (kept from the running cluster; pass --workers to change)",
    )
    assert dask.choose_workers(None, running=0, configured=2)[0] == 0
    assert dask.choose_workers(None, running=None, configured=2)[0] == 2


# ---------------------------------------------------------------- the smoke Job


def test_smoke_job_runs_the_shipped_check_against_the_scheduler():
    docs = docs_by_name(dask.smoke_job_docs(context(), target("namespace"), "analytics", 90.0))
    code = docs["ConfigMap/analytics-smoke"]["data"]
    assert code["dask_check.py"] == dask.smoke_code()["dask_check.py"]
    assert set(code) == {"__init__.py", "dask_check.py", "report.py"}
    job = docs["Job/analytics-smoke"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 300
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    check = pod["containers"][0]
    assert check["image"] == context().config.dask.image
    assert check["command"] == ["python", "-m", "playbooks.dask_check"]
    assert check["args"][:3] == ["tcp://analytics-scheduler:8786", "--timeout", "90"]
    mount = next(m for m in check["volumeMounts"] if m["name"] == "code")
    path = next(e["value"] for e in check["env"] if e["name"] == "PYTHONPATH")
    assert mount["mountPath"] == f"{path}/playbooks"
    assert job["metadata"]["labels"]["app.kubernetes.io/name"] == "dask-smoke"


JOB = {"kind": "Job", "metadata": {"name": "dask-smoke"}, "status": {}}


def pod(phase, state):
    return {
        "kind": "Pod",
        "metadata": {"name": "dask-smoke-x1"},
        "status": {"phase": phase, "containerStatuses": [{"name": "check", "state": state}]},
    }


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([JOB], (False, False, "no pod yet")),
        (
            [JOB, pod("Pending", {"waiting": {"reason": "ImagePullBackOff"}})],
            (False, False, "dask-smoke-x1 Pending (ImagePullBackOff)"),
        ),
        (
            [
                {**JOB, "status": {"conditions": [{"type": "Complete", "status": "True"}]}},
                pod("Succeeded", {"terminated": {"reason": "Completed", "exitCode": 0}}),
            ],
            (True, True, "Complete; dask-smoke-x1 Succeeded (Completed, exit code 0)"),
        ),
        (
            [
                {
                    **JOB,
                    "status": {
                        "conditions": [
                            {
                                "type": "Failed",
                                "status": "True",
                                "reason": "BackoffLimitExceeded",
                                "message": "Job has reached the specified backoff limit",
                            }
                        ]
                    },
                },
                pod("Failed", {"terminated": {"reason": "OOMKilled", "exitCode": 137}}),
            ],
            (
                True,
                False,
                "BackoffLimitExceeded: Job has reached the specified backoff limit; dask-smoke-x1 Failed (OOMKilled, exit code 137)",
            ),
        ),
        (
            [
                {
                    **JOB,
                    "status": {
                        "conditions": [
                            {
                                "type": "Failed",
                                "status": "True",
                                "reason": "DeadlineExceeded",
                                "message": "Job was active longer than specified deadline",
                            }
                        ]
                    },
                }
            ],
            (True, False, "DeadlineExceeded: Job was active longer than specified deadline"),
        ),
        ([{**JOB, "metadata": {"name": "other-smoke"}}], (False, False, "job dask-smoke not found")),
    ],
)
def test_job_progress(items, expected):
    assert job_progress({"kind": "List", "items": items}, "dask-smoke") == expected


def test_unschedulable_pod_says_why():
    unschedulable = {
        "kind": "Pod",
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient memory.",
                }
            ],
        },
    }
    assert pod_state(unschedulable) == "p unschedulable (0/1 nodes are available: 1 Insufficient memory.)"


# ---------------------------------------------------------------- fast listing


def test_listing_the_tasks_imports_no_dask():
    code = "import sys, playbooks.collection; print(sorted({m.split('.')[0] for m in sys.modules} & {'dask', 'distributed', 'numpy', 'mlflow', 'kubernetes', 'boto3'}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_local_mode_is_refused_in_one_line():
    with pytest.raises(PlaybookError) as raised:
        raise Service("x", Collection("x"), {}, cluster=ClusterPart("x")).refuse("local")
    assert "local mode has none: point KUBECONFIG at a cluster" in str(raised.value)
    assert "\n" not in str(raised.value)
