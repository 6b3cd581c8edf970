"""No-op `up`: `invoke mlflow.up` with nothing to change vs `kubectl apply --server-side` of the same manifests.

    .venv/bin/python benchmarks/noop_up.py [--runs 15]

Starts an envtest control plane (etcd, kube-apiserver, kube-controller-manager) with the
fake kubelet, makes a namespace-mode session (the e2e suite's credentials: `edit` in its
namespace), deploys MLflow once with `invoke mlflow.up`, then times, interleaved:
`invoke mlflow.up` again (no change) and the baseline, `kubectl apply --server-side
--field-manager=datalab-playbooks -f -` of the same manifests rendered in-process with
playbooks.services.mlflow.build_plan. The pieces a no-op `up` is made of are timed in the
same loop, to show where the time goes, and so is `up` with the in-process API client off
(DATALAB_PLAYBOOKS_DIRECT_API=0: every read a kubectl call, as before playbooks.kubeapi).
Both sides use one kubectl, the first on the session's PATH (this venv's first), named in the
output. Targets: ratio <= 1.5 and `up` under 2 s.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

from _common import (
    BIN,
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

TARGET_RATIO = 1.5
TARGET_SECONDS = 2.0
COMMAND = ".venv/bin/python benchmarks/noop_up.py"
DETECT = "from playbooks.target import detect; detect()"


def rendered_manifests(env: dict[str, str]) -> tuple[str, list[str], str]:
    """The YAML `mlflow.up` applies, the kubectl flags of its target, and its label selector."""
    from invoke import Config, Context

    from playbooks.collection import ns
    from playbooks.render import to_yaml
    from playbooks.s3 import choose_bucket, s3_from_env
    from playbooks.services.mlflow import build_plan
    from playbooks.target import detect

    config = Config(lazy=True)
    config.load_collection(ns.configuration())
    c = Context(config)
    target = detect(env=env)
    bucket, origin = choose_bucket(None, c.config.mlflow.bucket, env)
    plan = build_plan(c, target, s3_from_env(env), bucket, origin, c.config.mlflow.prefix, c.config.mlflow.name)
    return to_yaml(plan.docs), target.kubectl_flags(), plan.selector


def profile(env: dict[str, str], top: int = 14) -> None:
    """Where one no-op `up` spends its time: cumulative cProfile entries, and the slowest imports."""
    import pstats
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".prof") as out:
        run_checked([str(BIN / "python"), "-m", "cProfile", "-o", out.name, *invoke_argv("mlflow.up")],
                    env=env, cwd=ROOT, timeout=120)  # fmt: skip
        print("\ncProfile of one no-op `invoke mlflow.up`, playbooks functions (cumulative):")
        pstats.Stats(out.name).sort_stats("cumulative").print_stats(r"playbooks/", top)
    result = run_checked([str(BIN / "python"), "-X", "importtime", *invoke_argv("mlflow.up")],
                         env=env, cwd=ROOT, timeout=120)  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:") and "|" in line[13:]]
    slowest = sorted(lines[1:], key=lambda line: -int(line.split("|")[1]))[:top]
    print("slowest imports (cumulative microseconds):\n" + "\n".join(slowest))


def started(argv: list[str], env: dict[str, str]) -> list[str]:
    """The programs one run of argv starts (strace -f, successful execve), by name; [] without strace."""
    import collections
    import os
    import re
    import tempfile
    from pathlib import Path

    if shutil.which("strace") is None:
        return []
    with tempfile.TemporaryDirectory(prefix="bench-strace-") as folder:
        trace = os.path.join(folder, "trace")
        run_checked(["strace", "-f", "-qq", "-e", "trace=execve", "-o", trace, *argv], env=env, cwd=ROOT, timeout=120)
        lines = Path(trace).read_text().splitlines()
    # Calls at the same time are split by strace: `execve("x", ... <unfinished ...>`, later
    # `<... execve resumed>) = 0` on the same pid.
    calls, pending = [], {}
    for line in lines:
        begun = re.match(r'^(\d+)\s+execve\("([^"]+)"', line)
        resumed = re.match(r"^(\d+)\s+<\.\.\. execve resumed>.*= 0$", line)
        if begun and line.endswith("<unfinished ...>"):
            pending[begun.group(1)] = begun.group(2)
        elif begun and line.endswith("= 0"):
            calls.append((begun.group(1), begun.group(2)))
        elif resumed and resumed.group(1) in pending:
            calls.append((resumed.group(1), pending.pop(resumed.group(1))))
    root = calls[0][0] if calls else None
    names = [os.path.basename(path) for pid, path in calls if pid != root]
    return [f"{name} x{count}" for name, count in collections.Counter(names).items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--profile", action="store_true", help="also profile one no-op up (cProfile, -X importtime)")
    args = parser.parse_args()

    with envtest() as cluster, s3_store() as s3_env:
        session = namespace_session(cluster, "bench-noop", s3_env)
        # One kubectl for both sides: the first on the session's PATH (this venv's, when setup.sh put one
        # there), named by its absolute path in the baseline and given to `up` as tools.kubectl.
        binary = shutil.which("kubectl", path=session.env["PATH"])
        if binary is None:
            raise SystemExit("no kubectl on PATH")
        env = {**session.env, "INVOKE_TOOLS_KUBECTL": binary}
        version = subprocess.run([binary, "version", "--client"], capture_output=True, text=True, timeout=20)
        kubectl_line = f"kubectl: `{binary}` ({version.stdout.splitlines()[0].strip()}) on both sides"
        print(kubectl_line, flush=True)
        first = run_checked(invoke_argv("mlflow.up"), env=env, cwd=ROOT, timeout=180)
        print(first.stdout.strip().splitlines()[-4], flush=True)
        manifests, flags, _ = rendered_manifests(env)
        kubectl = [binary, *flags]
        ssa = ["--server-side", "--field-manager=datalab-playbooks"]
        # The comparison is fair only if the baseline applies exactly what `up` applied.
        same = subprocess.run([*kubectl, "diff", *ssa, "--force-conflicts", "-f", "-"], input=manifests, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        if same.returncode != 0:
            raise SystemExit(
                f"the in-process rendering differs from what mlflow.up applied:\n{same.stdout}{same.stderr}"
            )

        def call(argv, stdin=None):
            return lambda: run_checked(argv, input=stdin, env=env, cwd=ROOT, timeout=120)

        baseline = "kubectl apply --server-side (baseline)"
        subject = "invoke mlflow.up (no change)"
        kubectl_only = {**env, "DATALAB_PLAYBOOKS_DIRECT_API": "0"}
        subjects = {
            baseline: call([*kubectl, "apply", *ssa, "-f", "-"], manifests),
            subject: call(invoke_argv("mlflow.up")),
            "invoke mlflow.up (no change), reads by kubectl": lambda: run_checked(
                invoke_argv("mlflow.up"), env=kubectl_only, cwd=ROOT, timeout=120
            ),
            "  part: invoke --list (start-up, imports)": call(invoke_argv("--list")),
            "  part: python -c detect() (imports + 3 API calls)": call([str(BIN / "python"), "-c", DETECT]),
            "  part: kubectl diff --server-side": call(
                [*kubectl, "diff", *ssa, "--force-conflicts", "-f", "-"], manifests
            ),
        }
        timings = interleaved(subjects, runs=args.runs, warmup=1, budget=200)
        if args.profile:
            profile(env)
        children = {
            "in-process reads": started(invoke_argv("mlflow.up"), env),
            "reads by kubectl": started(invoke_argv("mlflow.up"), kubectl_only),
        }
        check = run_checked(invoke_argv("mlflow.up"), env=env, cwd=ROOT, timeout=120).stdout
        if "no change" not in check:
            raise SystemExit(f"mlflow.up was not a no-op:\n{check}")

    rows = timing_rows(list(timings.values()), baseline)
    ratio = timings[subject].median / timings[baseline].median
    results = [verdict(ratio, TARGET_RATIO), verdict(timings[subject].median, TARGET_SECONDS, "median seconds of up")]
    spawned = "Processes one no-op `up` starts (strace -f, execve): " + "; ".join(
        f"{how}: {', '.join(names) or 'none'}" for how, names in children.items()
    )
    print(f"\n{table(rows, TIMING_HEADER)}\n\n" + "\n".join(results) + f"\n{spawned}")
    body = (
        "Credentials: namespace mode (the e2e suite's session: ServiceAccount with `edit` in its namespace); "
        "AWS_* of a moto S3 server (asked for the bucket by the first, deploying `up` only). "
        "`invoke mlflow.up` prints `no change` in every timed run.\n"
        f"{kubectl_line} (`up` gets it as tools.kubectl).\n\n"
        f"{table(rows, TIMING_HEADER)}\n\n"
        "`reads by kubectl`: the same `up` with DATALAB_PLAYBOOKS_DIRECT_API=0 (detection, diff and "
        "readiness poll as kubectl processes, as before the in-process client). Rows marked `part` are "
        "pieces timed alone in the same loop (ratio against the baseline too): start-up, detection "
        "(in-process), and the `kubectl diff` the in-process dry run replaces.\n\n"
        + "  \n".join(results)
        + f"\n\n{spawned}\n"
    )
    write_section("noop_up", "2. No-op `invoke mlflow.up` on envtest", COMMAND, body)


if __name__ == "__main__":
    sys.exit(main())
