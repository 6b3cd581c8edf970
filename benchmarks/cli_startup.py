"""CLI start-up: `invoke --list` here vs in a folder whose tasks.py has one trivial task.

    .venv/bin/python benchmarks/cli_startup.py [--runs 40]

hyperfine (if installed) times the commands in rounds of 2 runs each, their order reversed
every round, so bursts of load from other work hit all of them; an interleaved
perf_counter loop (ABBA) checks the ratio.
`python -X importtime` then shows which imports the start-up pays for. Target: ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    BIN,
    ROOT,
    TIMING_HEADER,
    Timing,
    base_env,
    interleaved,
    run_checked,
    table,
    timing_rows,
    verdict,
    write_section,
)

TARGET = 1.3
COMMAND = ".venv/bin/python benchmarks/cli_startup.py"
TRIVIAL_TASKS = '''from invoke import task


@task
def hello(c):
    """Say hello."""
    print("hello")
'''


def hyperfine(commands: dict[str, list[str]], env: dict[str, str], runs: int, out: Path) -> list[Timing]:
    """hyperfine in rounds of 2 runs per command, their order reversed every round.

    Interleaved this finely, a burst of load from other work on the machine hits every
    command alike instead of one command's whole batch.
    """
    import shlex

    samples: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(max(runs // 2, 1)):
        names = list(commands) if i % 2 == 0 else list(reversed(commands))
        warmup = "3" if i == 0 else "0"
        argv = ["hyperfine", "--shell=none", "--warmup", warmup, "--runs", "2", "--export-json", str(out)]
        for name in names:
            argv += ["--command-name", name, shlex.join(commands[name])]
        run_checked(argv, env=env, cwd=out.parent, timeout=120)
        for result in json.loads(out.read_text())["results"]:
            samples[result["command"]] += result["times"]
            cpu[result["command"]].append(result["user"] + result["system"])  # the mean of the 2 runs
    return [Timing(name, samples[name], cpu[name]) for name in commands]


def import_breakdown(env: dict[str, str], top: int = 6) -> tuple[float, list[tuple[str, float]]]:
    """Import time of the collection, and the packages whose own modules take longest to import."""
    result = run_checked(
        [sys.executable, "-X", "importtime", "-c", "import playbooks.collection"], env=env, cwd=ROOT, timeout=60
    )
    packages: dict[str, float] = {}
    total = 0.0
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| *(\S+)", line)
        if not match:
            continue
        own, cumulative, module = int(match.group(1)) / 1e6, int(match.group(2)) / 1e6, match.group(3)
        root = module.split(".")[0]
        packages[root] = packages.get(root, 0.0) + own
        if module == "playbooks.collection":
            total = cumulative
    heaviest = sorted(packages.items(), key=lambda item: -item[1])[:top]
    return total, heaviest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        tmp_path = Path(tmp)
        empty = tmp_path / "empty"
        empty.mkdir()
        (empty / "tasks.py").write_text(TRIVIAL_TASKS)
        env = base_env(tmp_path)
        invoke = str(BIN / "invoke")
        commands = {
            "invoke --list (trivial tasks.py)": [invoke, "--search-root", str(empty), "--list"],
            "invoke --list (playbooks)": [invoke, "--search-root", str(ROOT), "--list"],
            "playbooks --list (console script)": [str(BIN / "playbooks"), "--list"],
        }
        baseline, subject = list(commands)[:2]
        for command in commands.values():
            run_checked(command, env=env, cwd=tmp, timeout=60)

        sections = []
        if shutil.which("hyperfine"):
            timings = hyperfine(commands, env, args.runs, tmp_path / "hyperfine.json")
            sections.append(
                (
                    "hyperfine --shell=none, in rounds of 2 runs of each command, order reversed every round (3 warm-up runs first; CPU s: median of the rounds' means)",
                    timings,
                )
            )
        else:
            print("hyperfine not found: only the interleaved loop runs")

        def runner(command):
            return lambda: subprocess.run(command, env=env, cwd=tmp, capture_output=True, check=True, timeout=60)

        loop = interleaved(
            {name: runner(cmd) for name, cmd in commands.items()}, runs=max(args.runs, 15), warmup=2, budget=120
        )
        sections.append(("perf_counter loop, interleaved (ABBA), subprocess.run", list(loop.values())))

        body = []
        for title, timings in sections:
            rows = timing_rows(timings, baseline)
            print(f"\n{title}\n{table(rows, TIMING_HEADER)}")
            body.append(f"{title}:\n\n{table(rows, TIMING_HEADER)}\n")
        primary = {t.name: t.median for t in sections[0][1]}
        ratio = primary[subject] / primary[baseline]
        result = verdict(ratio, TARGET) + f" ({sections[0][0].split(',')[0]})"
        total, heaviest = import_breakdown(env)
        imports = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in heaviest)
        body.append(f"{result}\n")
        body.append(
            f"`python -X importtime -c 'import playbooks.collection'`: {total * 1000:.0f} ms in all; "
            f"own import time by package: {imports}.\n"
        )
        print(f"\n{result}\nimports: {total * 1000:.0f} ms; {imports}")
        write_section("cli_startup", "1. CLI start-up: `invoke --list`", COMMAND, "\n".join(body))


if __name__ == "__main__":
    main()
