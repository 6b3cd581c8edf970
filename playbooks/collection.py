"""The root collection: the root tasks, and each registered service's tasks and defaults."""

from invoke import Collection

from playbooks import config_check, forward, registry, root
from playbooks.defaults import DEFAULTS

# Loaded by `invoke` too, before invoke reads invoke.yaml: its own config errors become one line.
config_check.install_load_error_hook()

ns = Collection(root.target, root.up, root.down, root.status, root.smoke, root.env)
ns.add_collection(forward.ns)
defaults = dict(DEFAULTS)
for service in registry.services():
    ns.add_collection(service.collection)
    defaults[service.name] = service.defaults
ns.configure(defaults)
