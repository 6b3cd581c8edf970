"""Smoke-check reports: named steps, each timed, passed or failed with a reason."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field


def columns(rows: list[tuple]) -> list[str]:
    """Rows as left-aligned columns, two spaces apart, each line right-stripped."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


class CheckFailed(Exception):
    """A step of a smoke check failed; the message says what was seen."""


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class Report:
    service: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)

    @property
    def failure(self) -> str | None:
        return next((f"{s.name}: {s.detail}" for s in self.steps if not s.ok), None)

    @contextmanager
    def step(self, name: str, detail: str = ""):
        """Time a step; any exception fails it with a one-line reason and stops the check."""
        start = time.monotonic()
        info = {"detail": detail}
        try:
            yield info
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self.steps.append(Step(name, False, time.monotonic() - start, reason))
            raise CheckFailed(f"{self.service} {name}: {reason}") from error
        self.steps.append(Step(name, True, time.monotonic() - start, info["detail"]))

    def skip(self, name: str, why: str) -> None:
        self.steps.append(Step(name, True, 0.0, f"skipped: {why}"))

    def as_json(self) -> dict:
        return {
            "service": self.service,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "failure": self.failure,
            "steps": [
                {"name": s.name, "ok": s.ok, "seconds": round(s.seconds, 3), "detail": s.detail} for s in self.steps
            ],
        }

    def render(self) -> str:
        width = max([len(s.name) for s in self.steps] + [4])
        lines = [f"{self.service}: {'PASS' if self.ok else 'FAIL'} in {self.seconds:.2f}s"]
        for s in self.steps:
            mark = "ok  " if s.ok else "FAIL"
            lines.append(f"  {mark} {s.name:<{width}} {s.seconds:6.2f}s  {s.detail}".rstrip())
        return "\n".join(lines)


def summary_table(reports: list[Report]) -> str:
    width = max([len(r.service) for r in reports] + [7])
    lines = [f"{'service':<{width}}  result  seconds  detail"]
    for r in reports:
        detail = r.failure or f"{len(r.steps)} steps"
        lines.append(f"{r.service:<{width}}  {'PASS' if r.ok else 'FAIL':<6}  {r.seconds:7.2f}  {detail}")
    return "\n".join(lines)


def require_passed(reports: list[Report]) -> None:
    """A smoke task's verdict: the first failure, as one line."""
    # Imported here: the in-cluster smoke Job ships this module without playbooks.errors.
    from playbooks.errors import PlaybookError

    failed = [r for r in reports if not r.ok]
    if failed:
        raise PlaybookError(f"smoke check failed: {failed[0].failure}")
