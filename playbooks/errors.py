"""One error type for everything a user can fix, and the task class that reports it."""

from functools import partial

import invoke
from invoke.exceptions import Exit, ParseError
from invoke.parser import Argument

from playbooks.config_check import config_problem


class PlaybookError(Exception):
    """A problem the user can fix: printed as one line, exit code 1, no traceback."""


class CountArgument(Argument):
    """A flag with an int default, which invoke casts while parsing: a bad value is one line, not a traceback."""

    def set_value(self, value, cast: bool = True) -> None:
        try:
            super().set_value(value, cast)
            if not cast or self.value >= 0:
                return
        except ValueError:
            pass
        flag = f"--{self.name.replace('_', '-')}"
        raise ParseError(f"error: {flag} {value!r} is not a whole number of 0 or more: pass e.g. {flag} {self.default}")


class PlaybookTask(invoke.Task):
    """An invoke task that turns PlaybookError into one clear line and exit code 1."""

    def get_arguments(self, ignore_unknown_help=None):
        arguments = super().get_arguments(ignore_unknown_help)
        for argument in arguments:
            if argument.kind is int:
                argument.__class__ = CountArgument
        return arguments

    def __call__(self, *args, **kwargs):
        try:
            if args and isinstance(getattr(args[0], "config", None), invoke.Config):
                # A --json task checks inside its document (jsonout.document), which then says so too.
                problem = None if kwargs.get("json") else config_problem(args[0].config)
                if problem:
                    raise PlaybookError(problem)
            return super().__call__(*args, **kwargs)
        except PlaybookError as error:
            raise Exit(f"error: {error}", code=1) from None


task = partial(invoke.task, klass=PlaybookTask)
