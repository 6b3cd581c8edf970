"""One module per service: its plan, its tasks and its smoke check."""
