"""Developer tools of a checkout, not part of the `playbooks` package: a kind cluster to try things on, the test tasks."""
