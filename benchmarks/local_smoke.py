"""Smoke check in local mode vs a hand-written MLflow client doing the same calls, same server.

    .venv/bin/python benchmarks/local_smoke.py [--runs 15]

Starts `mlflow server` with `playbooks mlflow.up --mode local` (the console script: the
same collection as `invoke` in the checkout) in a temporary working directory, with no
KUBECONFIG and HOME there; artifacts go to a local folder. Then times, interleaved:

- whole CLI: `playbooks mlflow.smoke` vs `python benchmarks/mlflow_client.py URL`;
- in-process (imports already paid): playbooks.mlflow_check.round_trip(URL) vs
  mlflow_client.round_trip(URL).

`playbooks mlflow.down` stops the server (its process group) at the end. Target: ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

from _common import (
    BIN,
    QUIET_ENV,
    ROOT,
    TIMING_HEADER,
    interleaved,
    run_checked,
    table,
    timing_rows,
    verdict,
    write_section,
)

TARGET = 1.2
COMMAND = ".venv/bin/python benchmarks/local_smoke.py"
CLIENT = Path(__file__).with_name("mlflow_client.py")


def _raise_on_sigterm(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    os.environ.update(QUIET_ENV)  # the in-process clients
    os.environ.pop("KUBECONFIG", None)

    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        work = Path(tmp)
        env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": tmp, **QUIET_ENV}
        playbooks = str(BIN / "playbooks")

        def cli(*argv: str, timeout: float = 180):
            return run_checked([playbooks, *argv], env=env, cwd=work, timeout=timeout)

        state_file = work / ".playbooks" / "local" / "mlflow" / "mlflow.json"
        try:
            print(cli("mlflow.up", "--mode", "local").stdout.strip(), flush=True)
            url = f"http://127.0.0.1:{json.loads(state_file.read_text())['ports']['http']}"
            timings = measure(url, cli, env, args.runs)
        finally:
            stopped = (
                run_checked([playbooks, "mlflow.down"], env=env, cwd=work, timeout=60) if state_file.exists() else None
            )
            if state_file.exists():  # down did not get to forget it: stop the group ourselves
                from playbooks.procs import stop_group

                stop_group(int(json.loads(state_file.read_text())["pid"]))
            if stopped is not None:
                print(stopped.stdout.strip())
    report(timings)


def measure(url: str, cli, env: dict[str, str], runs: int) -> dict:
    sys.path.insert(0, str(CLIENT.parent))
    import mlflow_client

    from playbooks.mlflow_check import round_trip

    def quiet_baseline():
        with redirect_stdout(io.StringIO()):  # its "View run at" links; round_trip hides them too
            mlflow_client.round_trip(url)

    def checked_round_trip():
        report = round_trip(url)
        if not report.ok:
            raise SystemExit(f"smoke check failed: {report.failure}")

    whole = interleaved(
        {
            "python mlflow_client.py URL (baseline)": lambda: run_checked(
                [sys.executable, str(CLIENT), url], env=env, cwd=ROOT, timeout=120
            ),
            "playbooks mlflow.smoke": lambda: cli("mlflow.smoke", timeout=120),
        },
        runs=runs,
        warmup=1,
        budget=120,
    )
    in_process = interleaved(
        {
            "mlflow_client.round_trip (baseline)": quiet_baseline,
            "mlflow_check.round_trip": checked_round_trip,
        },
        runs=max(runs, 15),
        warmup=2,
        budget=30,
    )
    return {"whole CLI (separate processes)": whole, "in-process (imports paid once, before timing)": in_process}


def report(timings: dict) -> None:
    body = [
        "Local mode: `mlflow server` (SQLite, artifacts in a local folder) started by "
        "`playbooks mlflow.up --mode local` in a temporary directory, HOME there, no KUBECONFIG.\n"
    ]
    for title, result in timings.items():
        baseline, subject = list(result)
        rows = timing_rows(list(result.values()), baseline)
        ratio = result[subject].median / result[baseline].median
        line = f"{title}: {verdict(ratio, TARGET)}"
        print(f"\n{title}\n{table(rows, TIMING_HEADER)}\n{line}")
        body.append(f"{title}:\n\n{table(rows, TIMING_HEADER)}\n\n{line}\n")
    write_section(
        "local_smoke", "5. Smoke check in local mode vs a hand-written MLflow client", COMMAND, "\n".join(body)
    )


if __name__ == "__main__":
    main()
