"""Datalab playbooks: run extra services next to a data-science session."""

__version__ = "0.1.0"
