"""Task entry point for `invoke` in a checkout: the playbooks, plus the test suites."""

from playbooks import testing
from playbooks.collection import ns

ns.add_collection(testing.ns)
