"""`--json`: one JSON document on stdout, everything else on stderr (docs/json.md, docs/schemas/).

Inside `document(...)` the task's own output -- the `target:` line, progress, tables -- goes
to stderr. The document is written once, at the end: `"ok": true` with the task's data, or,
when the task fails with a PlaybookError, `"ok": false`, the `error` (the same words as the
`error:` line on stderr) and whatever data the task had gathered; the exit code is then 1.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

from playbooks.config_check import config_problem
from playbooks.errors import PlaybookError

SCHEMA = "datalab-playbooks/{task}/v1"
TASKS = ("target", "status", "smoke", "env")


def schema(task: str) -> str:
    return SCHEMA.format(task=task)


def write(doc: dict, stream=None) -> None:
    stream = stream or sys.stdout
    stream.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    stream.flush()


def failure(task: str, error: str) -> dict:
    """The document of a run that failed before the task gathered anything (e.g. a bad configuration)."""
    return {"schema": schema(task), "ok": False, "error": error, "mode": None}


@contextmanager
def document(c, task: str, enabled: bool) -> Iterator[dict]:
    """The task's document to fill (mode and its data); with enabled False, only stdout stays as it is."""
    doc: dict = {"schema": schema(task), "ok": True, "mode": None}
    if not enabled:
        yield doc
        return
    stdout = sys.stdout
    try:
        with redirect_stdout(sys.stderr):
            problem = config_problem(c.config)  # which PlaybookTask leaves to the document for --json
            if problem:
                raise PlaybookError(problem)
            yield doc
    except PlaybookError as error:
        write({**doc, "ok": False, "error": str(error)}, stdout)
        raise
    write(doc, stdout)


@contextmanager
def progress_dropped(enabled: bool) -> Iterator[None]:
    """What the task prints while it works is dropped (errors still reach stderr as their one line)."""
    if not enabled:
        yield
        return
    with redirect_stdout(io.StringIO()):
        yield
