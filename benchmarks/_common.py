"""What every benchmark shares: machine facts, interleaved timing, the table, its docs section.

Each benchmark measures a baseline and a subject in the same run, alternating them (ABBA
order, so drift in the machine's load hits both alike), reports medians and their ratio,
prints a table and replaces its own section of docs/benchmarks.md (between two markers;
what is written outside the markers, such as the analysis, stays).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCS = ROOT / "docs" / "benchmarks.md"
# No MLflow client or server may talk to an outside host.
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
DOCS_HEADER = """# Benchmarks

Each section between `<!-- bench:NAME -->` markers is written by its benchmark
(`benchmarks/NAME.py`); rerun the command to refresh it. The analysis under each section is
written by hand. Medians of interleaved runs; ratio = subject / baseline.

Columns: *median s* and *min-max s* are wall-clock seconds; *ratio* is the median over the
baseline's median (the figure the target is about); *CPU s* is the median of user+system
CPU seconds of the command's own processes (a server it talks to is not counted); *CPU
ratio* compares those, and holds steadier than wall time when the machine is busy.
"""

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
LOAD_AT_START = os.getloadavg()[0]


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment: this venv's tools first, a throw-away HOME, no telemetry."""
    return {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(home), **QUIET_ENV, **extra}


def machine() -> str:
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")
    )
    return (
        f"{len(os.sched_getaffinity(0))} CPUs (nproc), {mem_kib / 1024**2:.1f} GiB memory, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


@dataclass
class Timing:
    name: str
    samples: list[float]  # wall-clock seconds
    cpu: list[float]  # CPU seconds (user + system) of the call's thread and of the children it waited for

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def spread(self) -> str:
        return f"{min(self.samples):.3f}-{max(self.samples):.3f}"


def interleaved(
    subjects: dict[str, Callable[[], object]],
    runs: int,
    warmup: int = 1,
    budget: float = 240.0,
    between: Callable[[], object] | None = None,
) -> dict[str, Timing]:
    """Time each callable `runs` times, alternating them in ABBA order; stop early at the budget.

    `between` runs (untimed) after every timed call, e.g. to tear down what `up` made.
    """
    names = list(subjects)
    for _ in range(warmup):
        for name in names:
            subjects[name]()
            if between:
                between()
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    deadline = time.monotonic() + budget
    for i in range(runs):
        for name in names if i % 2 == 0 else reversed(names):
            cpu_start = _cpu()
            start = time.perf_counter()
            subjects[name]()
            samples[name].append(time.perf_counter() - start)
            cpu[name].append(_cpu() - cpu_start)
            if between:
                between()
        if time.monotonic() > deadline and i >= 2:
            print(f"(time budget of {budget:.0f}s reached after {i + 1} rounds)", flush=True)
            break
    return {name: Timing(name, samples[name], cpu[name]) for name in names}


def _cpu() -> float:
    """CPU seconds of this thread plus those of the children waited for (not other threads)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.thread_time() + children.ru_utime + children.ru_stime


def run_checked(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run argv; on failure, show its output and stop the benchmark (a failed run is no figure)."""
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        sys.stderr.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}")
        raise SystemExit(f"benchmark aborted: {argv[0]} exited with {result.returncode}")
    return result


def table(rows: list[tuple], header: tuple) -> str:
    """A Markdown table; it reads as well on the terminal."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def timing_rows(timings: list[Timing], baseline: str) -> list[tuple]:
    base = next(t for t in timings if t.name == baseline)
    return [
        (t.name, f"{t.median:.3f}", t.spread, len(t.samples), f"{t.median / base.median:.2f}",
         f"{t.cpu_median:.3f}", f"{t.cpu_median / base.cpu_median:.2f}")
        for t in timings
    ]  # fmt: skip


TIMING_HEADER = ("command", "median s", "min-max s", "runs", "ratio", "CPU s", "CPU ratio")


def verdict(ratio: float, target: float, what: str = "ratio") -> str:
    if ratio <= target:
        return f"target {what} <= {target}: **met** ({ratio:.2f})"
    return f"target {what} <= {target}: **missed** by {ratio - target:.2f} ({ratio:.2f}, {ratio / target - 1:.0%} over)"


def write_section(name: str, title: str, command: str, body: str) -> None:
    """Replace (or append) this benchmark's section of docs/benchmarks.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    section = (
        f"{start}\n## {title}\n\n"
        f"Command: `{command}`  \n"
        f"Machine: {machine()}  \n"
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; 1-minute load average "
        f"{LOAD_AT_START:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n\n"
        f"{body.strip()}\n{end}"
    )
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    text = DOCS.read_text() if DOCS.exists() else DOCS_HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOCS.write_text(text)
    print(f"\nwrote section {name!r} of {DOCS.relative_to(ROOT)}")
