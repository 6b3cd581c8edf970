"""The `playbooks` console script: the same collection as `invoke` in a checkout."""

import os

from invoke import Program

from playbooks import __version__
from playbooks.collection import ns


class PlaybooksProgram(Program):
    def parse_collection(self) -> None:
        super().parse_collection()
        # A bundled namespace has no tasks.py to anchor project config on: read
        # invoke.yaml from the working directory, as `invoke` would in a checkout.
        self.config.set_project_location(os.getcwd())
        self.config.load_project()


program = PlaybooksProgram(name="datalab-playbooks", binary="playbooks", namespace=ns, version=__version__)


def main() -> None:
    program.run()
