"""Real pods on the real-node lab: deploy-to-ready of `up`, a no-op `up`, and each pod's peak memory.

    .venv/bin/python benchmarks/lab_pods.py [--runs 3] [--noop-runs 15]

Needs the lab running (shared/lab/README.md: up.sh, node-up.sh) and the project's images on
its node (scripts/lab-images.sh). Makes a namespace-mode session as the e2e suite does (a
ServiceAccount with `edit`, the `medium` quota), with S3 (moto) on the bridge address, where
pods reach it. Then, in one run:

1. deploy-to-ready, from an empty namespace: `invoke up --only mlflow,dask` against the same
   manifests (rendered in-process by the plans `up` builds) applied with one
   `kubectl apply --server-side` and waited for with `kubectl rollout status` of each
   Deployment in turn; `down --purge` (untimed) after every run. Target ratio <= 1.0.
2. no-op: `invoke up --only mlflow,dask` (prints `no change`) against one
   `kubectl apply --server-side` of the same manifests, with the same kubectl. Target <= 1.5.
3. memory: through `up`, the no-op runs, `smoke`, `dask.smoke --in-cluster`, a user's MLflow
   run through a port-forward and a user's Dask dataframe groupby, the peak working set of
   every container (usage - inactive file cache, as the kubelet counts it; its cgroup sampled
   every 0.5 s) against its limit. Target <= 80 %. The cgroup's own peak of usage, page cache
   included (max_usage_in_bytes), is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import (
    BIN,
    ROOT,
    TIMING_HEADER,
    base_env,
    interleaved,
    run_checked,
    table,
    timing_rows,
    verdict,
    write_section,
)

from tests.conftest import serve_s3
from tests.e2e import lab
from tests.e2e.conftest import MEDIUM_QUOTA, Cluster, _session_credentials
from tests.e2e.user_clients import DASK_GROUPBY, GROUPBY_SUMS, LOG_A_RUN, forward, user_python

COMMAND = ".venv/bin/python benchmarks/lab_pods.py"
SERVICES = "mlflow,dask"
HEADROOM = 0.8


@contextmanager
def bridge_s3() -> Iterator[dict[str, str]]:
    """The session's AWS_* for a real S3 server on the lab's bridge, where pods reach it."""
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp, serve_s3(lab.BRIDGE_ADDRESS, Path(tmp)) as server:
        yield {**server.env(), "WORKSHOP_NAMESPACE": server.bucket}


def rendered(env: dict[str, str]) -> tuple[str, list[str], list[str]]:
    """The YAML `up --only mlflow,dask` applies, the kubectl flags of its target, and its Deployments."""
    import os

    from invoke import Config, Context

    from playbooks.backends import ClusterBackend
    from playbooks.collection import ns
    from playbooks.render import to_yaml
    from playbooks.services import dask, mlflow
    from playbooks.target import detect

    os.environ.update(env)  # the plans read AWS_* and WORKSHOP_NAMESPACE from the environment
    config = Config(lazy=True)
    config.load_collection(ns.configuration())
    c = Context(config)
    target = detect(env=env)
    backend = ClusterBackend.on(c, target)
    mlflow_plan = mlflow.SERVICE_SPEC.cluster.plan(backend)
    dask_plan = dask.SERVICE_SPEC.cluster.plan(backend)
    docs = mlflow_plan.docs + dask_plan.docs
    return to_yaml(docs), target.kubectl_flags(), mlflow_plan.deployments + dask_plan.deployments


def owner(pod: str) -> str:
    """A pod's name without what its Deployment (ReplicaSet hash, suffix) or Job (suffix) added."""
    return re.sub(r"(-[a-z0-9]{6,10})?-[a-z0-9]{5}$", "", pod)


def memory_sampler(cluster: Cluster, namespace: str) -> lab.MemorySampler:
    def pods() -> list[dict]:
        return json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]

    return lab.MemorySampler(pods)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="deploy-to-ready runs of each command")
    parser.add_argument("--noop-runs", type=int, default=15)
    args = parser.parse_args()
    kubeconfig, why = lab.find_lab()
    if kubeconfig is None:
        raise SystemExit(why)
    cluster = Cluster("lab", kubeconfig)
    namespace = f"bench-lab-{uuid.uuid4().hex[:6]}"
    with bridge_s3() as s3_env, tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        cluster.kubectl("create", "namespace", namespace)
        try:
            session_kubeconfig = _session_credentials(cluster, namespace, "namespace", Path(tmp))
            cluster.kubectl("apply", "-f", "-", stdin=MEDIUM_QUOTA.format(ns=namespace))
            env = base_env(
                Path(tmp),
                KUBECONFIG=str(session_kubeconfig),
                SESSION_NAMESPACE=namespace,
                PYTHONPATH=str(ROOT),
                **s3_env,
            )
            body = measure(cluster, namespace, session_kubeconfig, env, args)
        finally:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
            cluster.kubectl("delete", "clusterrole,clusterrolebinding", f"{namespace}-namespace-reader", check=False)
    write_section("lab_pods", "6. Real pods on the lab: deploy-to-ready, no-op `up`, peak memory", COMMAND, body)


def measure(cluster: Cluster, namespace: str, kubeconfig: Path, env: dict[str, str], args) -> str:
    def invoke(*words: str, timeout: float = 900):
        return run_checked([str(BIN / "invoke"), *words], env=env, cwd=ROOT, timeout=timeout)

    manifests, flags, deployments = rendered(env)
    kubectl = ["kubectl", *flags]
    ssa = ["--server-side", "--field-manager=datalab-playbooks", "--force-conflicts"]

    def baseline_deploy() -> None:
        run_checked([*kubectl, "apply", *ssa, "-f", "-"], input=manifests, env=env, timeout=120)
        for name in deployments:
            run_checked([*kubectl, "rollout", "status", f"deployment/{name}", "--timeout=600s"], env=env, timeout=660)

    def purge() -> None:
        invoke("down", "--purge", timeout=600)

    deploy_base, deploy_subject = (
        "kubectl apply --server-side + rollout status (baseline)",
        f"invoke up --only {SERVICES}",
    )
    deploys = interleaved(
        {deploy_base: baseline_deploy, deploy_subject: lambda: invoke("up", "--only", SERVICES)},
        runs=args.runs, warmup=0, budget=1800, between=purge,
    )  # fmt: skip

    sampler = memory_sampler(cluster, namespace).start()  # from the start of the pods the table reports
    invoke("up", "--only", SERVICES)
    same = subprocess.run(
        [*kubectl, "diff", *ssa, "-f", "-"], input=manifests, env=env, capture_output=True, text=True, timeout=60
    )
    if same.returncode != 0:
        raise SystemExit(f"the in-process rendering differs from what up applied:\n{same.stdout}{same.stderr}")
    noop_base, noop_subject = "kubectl apply --server-side (baseline)", f"invoke up --only {SERVICES} (no change)"
    noops = interleaved(
        {
            noop_base: lambda: run_checked([*kubectl, "apply", *ssa, "-f", "-"], input=manifests, env=env, timeout=120),
            noop_subject: lambda: invoke("up", "--only", SERVICES),
        },
        runs=args.noop_runs, warmup=1, budget=300,
    )  # fmt: skip
    if "no change" not in invoke("up", "--only", SERVICES).stdout:
        raise SystemExit("up was not a no-op")

    invoke("smoke", timeout=900)
    invoke("dask.smoke", "--in-cluster", timeout=900)
    with forward(kubeconfig, namespace, "mlflow", 5000) as port:
        user_python(env, LOG_A_RUN, f"http://127.0.0.1:{port}")
    with forward(kubeconfig, namespace, "dask-scheduler", 8786) as port:
        if json.loads(user_python(env, DASK_GROUPBY, f"tcp://127.0.0.1:{port}")) != GROUPBY_SUMS:
            raise SystemExit("the user's groupby computed a wrong result")
    sampler.stop()
    rows = sampler.rows()
    mib = 2**20
    memory = table(
        [(owner(row.pod), row.container, f"{row.limit // mib}Mi",
          f"{row.working_set // mib}Mi", f"{row.ratio:.0%}", f"{row.peak // mib}Mi", f"{row.peak_ratio:.0%}",
          str(row.samples)) for row in rows],
        ("pod", "container", "limit", "working-set peak", "/ limit", "peak with page cache", "/ limit", "samples"),
    )  # fmt: skip
    worst = max((row.ratio for row in rows if row.limit), default=0.0)
    invoke("down", "--purge", timeout=600)

    deploy_ratio = deploys[deploy_subject].median / deploys[deploy_base].median
    noop_ratio = noops[noop_subject].median / noops[noop_base].median
    results = [
        verdict(deploy_ratio, 1.0, "deploy-to-ready ratio"),
        verdict(noop_ratio, 1.5, "no-op ratio"),
        verdict(worst, HEADROOM, "largest working-set peak / limit"),
    ]
    print("\n".join(results))
    version = run_checked(["kubectl", "version", "--client", "-o", "json"], timeout=30).stdout
    client = json.loads(version)["clientVersion"]["gitVersion"]
    return (
        f"Session: namespace mode (ServiceAccount with `edit`, the `medium` quota), S3 (moto) on the lab's bridge; "
        f"kubectl {client} for both sides.\n\n"
        f"Deploy-to-ready from an empty namespace (`down --purge`, untimed, after every run):\n\n"
        f"{table(timing_rows(list(deploys.values()), deploy_base), TIMING_HEADER)}\n\n"
        f"No-op:\n\n{table(timing_rows(list(noops.values()), noop_base), TIMING_HEADER)}\n\n"
        f"Peak memory of every container through `up`, the no-op runs, `smoke`, `dask.smoke --in-cluster`, a user's "
        f"MLflow run and a user's Dask dataframe groupby: the working set as the kubelet counts it (cgroup "
        f"v{sampler.version}: usage - inactive file cache), its largest value of the samples taken every "
        f"{sampler.interval} s, and beside it the cgroup's own peak of usage, page cache included "
        f"(`{'memory.max_usage_in_bytes' if sampler.version == 1 else 'memory.peak'}`), which page cache fills "
        f"towards the limit without memory pressure:\n\n"
        f"{memory}\n\n" + "  \n".join(results) + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
