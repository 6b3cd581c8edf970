"""Task entry point for `invoke` in a checkout; the tasks live in the playbooks package."""

from playbooks.collection import ns  # noqa: F401
