"""The `playbooks` console script: the same collection as `invoke` in a checkout."""

import os
import re
from contextlib import contextmanager

from invoke import Program
from invoke.exceptions import Exit

from playbooks import __version__
from playbooks.errors import PlaybookError


@contextmanager
def config_errors():
    """A configuration file or INVOKE_* variable invoke cannot load: one line, not a traceback."""
    try:
        yield
    except Exit:
        raise
    except Exception as error:  # invoke's YAML, merge and cast errors have no common base
        text = str(error).strip().splitlines()
        reason = re.sub(r"\(\{.*\}\)", "(...)", " ".join(line.strip() for line in text[:3])) or type(error).__name__
        variables = [k for k, v in os.environ.items() if k.startswith("INVOKE_") and v and repr(v) in str(error)]
        where = variables[0] if variables else f"invoke.yaml in {os.getcwd()} (or ~/.invoke.yaml)"
        message = f"cannot load the configuration ({reason}): fix {where}"
        json_failure(message)
        raise Exit(f"error: {message}", code=1) from None


def json_failure(message: str) -> None:
    """A run with --json that fails before its task starts still prints its one document."""
    import sys

    from playbooks import jsonout

    args = sys.argv[1:]
    if "--json" in args:
        task = next((arg for arg in args if arg in jsonout.TASKS), None)
        if task:
            jsonout.write(jsonout.failure(task, message))


class PlaybooksProgram(Program):
    def create_config(self) -> None:
        with config_errors():
            super().create_config()

    def parse_collection(self) -> None:
        super().parse_collection()
        # A bundled namespace has no tasks.py to anchor project config on: read
        # invoke.yaml from the working directory, as `invoke` would in a checkout.
        self.config.set_project_location(os.getcwd())
        with config_errors():
            self.config.load_project()

    def update_config(self, merge: bool = True) -> None:
        with config_errors():
            super().update_config(merge)
            # The executor merges the files and casts INVOKE_* variables again for each task,
            # outside any handler: do it once here, on a copy, so a bad value fails here.
            trial = self.config.clone()
            trial.load_collection(self.collection.configuration())
            trial.load_shell_env()


def main() -> None:
    try:
        from playbooks.collection import ns
    except PlaybookError as error:  # a service registered from outside the package that cannot load
        raise SystemExit(f"error: {error}") from None
    PlaybooksProgram(name="datalab-playbooks", binary="playbooks", namespace=ns, version=__version__).run()
