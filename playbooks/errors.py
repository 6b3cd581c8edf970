"""One error type for everything a user can fix, and the task class that reports it."""

from functools import partial

import invoke
from invoke.exceptions import Exit


class PlaybookError(Exception):
    """A problem the user can fix: printed as one line, exit code 1, no traceback."""


class PlaybookTask(invoke.Task):
    """An invoke task that turns PlaybookError into one clear line and exit code 1."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except PlaybookError as error:
            raise Exit(f"error: {error}", code=1) from None


task = partial(invoke.task, klass=PlaybookTask)
