"""Task entry point for `invoke` in a checkout: the playbooks, plus the developer tools (a kind cluster, the test suites)."""

from devtools import cluster, testing
from playbooks.collection import ns

ns.add_collection(cluster.ns)
ns.add_collection(testing.ns)
