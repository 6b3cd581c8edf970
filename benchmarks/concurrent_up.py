"""`up` of MLflow and Dask at once vs one after the other, when pods take seconds to become Ready.

    .venv/bin/python benchmarks/concurrent_up.py [--runs 5] [--delay 3]

On an envtest control plane whose fake kubelet reports a pod Ready only --delay seconds
after binding it (so waiting dominates), in a namespace-mode session, times interleaved:
`invoke up --only mlflow,dask` (applies both, then waits for all deployments together)
and `invoke mlflow.up dask.up` (each applies and waits in turn). `invoke down --purge`
tears everything down (untimed) after every run. Target: ratio <= 0.6.
"""

from __future__ import annotations

import argparse
import re
import sys

from _common import (
    ROOT,
    TIMING_HEADER,
    interleaved,
    run_checked,
    table,
    timing_rows,
    verdict,
    write_section,
)
from _envtest import envtest, invoke_argv, namespace_session, s3_store

TARGET = 0.6
COMMAND = ".venv/bin/python benchmarks/concurrent_up.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--delay", type=float, default=3.0, help="seconds from binding to Ready")
    args = parser.parse_args()

    with envtest(delay=args.delay) as cluster, s3_store() as s3_env:
        session = namespace_session(cluster, "bench-up", s3_env)
        env = session.env
        waits: dict[str, list[str]] = {}  # the last run's `ready after` lines

        def up(*argv: str):
            def run():
                out = run_checked(invoke_argv(*argv), env=env, cwd=ROOT, timeout=120).stdout
                ready = re.findall(r"^(\S+): ready after (\d+)s", out, re.M)
                waits[" ".join(argv)] = [f"{name} {seconds}s" for name, seconds in ready]

            return run

        def down():
            run_checked(invoke_argv("down", "--purge"), env=env, cwd=ROOT, timeout=120)
            left = cluster.kubectl("get", "deployments,pods,pvc", "-n", session.namespace, "-o", "name").stdout.split()
            if left:
                raise SystemExit(f"down --purge left {left}")

        baseline = "invoke mlflow.up dask.up (sequential)"
        subject = "invoke up --only mlflow,dask (concurrent)"
        subjects = {baseline: up("mlflow.up", "dask.up"), subject: up("up", "--only", "mlflow,dask")}
        timings = interleaved(subjects, runs=args.runs, warmup=1, budget=180, between=down)

    rows = timing_rows(list(timings.values()), baseline)
    ratio = timings[subject].median / timings[baseline].median
    result = verdict(ratio, TARGET)
    waited = "  \n".join(f"`invoke {name}`: {', '.join(ready)}" for name, ready in waits.items())
    print(f"\n{table(rows, TIMING_HEADER)}\n\n{result}\nreadiness as printed by the last run of each:\n{waited}")
    body = (
        f"Fake kubelet: a pod turns Ready {args.delay:g} s after it is bound; credentials: namespace mode; "
        "`invoke down --purge` between runs (untimed); AWS_* of a moto S3 server (each deploying `up` checks the bucket, as a session's would).\n\n"
        f"{table(rows, TIMING_HEADER)}\n\n{result}\n\n"
        f"Readiness as the last run of each printed it (`ready after`):  \n{waited}\n"
    )
    write_section("concurrent_up", "4. `up` of MLflow and Dask: concurrent vs sequential", COMMAND, body)


if __name__ == "__main__":
    sys.exit(main())
