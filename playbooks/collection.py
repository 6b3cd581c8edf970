"""The root collection: it only assembles the service collections and the root tasks."""

from invoke import Collection

from playbooks import root
from playbooks.defaults import DEFAULTS
from playbooks.services import dask, gateway, mlflow, storage

ns = Collection(root.target, root.up, root.down, root.status, root.smoke)
ns.add_collection(mlflow.ns)
ns.add_collection(dask.ns)
ns.add_collection(gateway.ns)
ns.add_collection(storage.ns)
ns.configure(DEFAULTS)
