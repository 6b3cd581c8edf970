"""The root collection: it only assembles the service collections and the root tasks."""

from invoke import Collection

from playbooks import root
from playbooks.defaults import DEFAULTS
from playbooks.services import mlflow

ns = Collection(root.target, root.smoke)
ns.add_collection(mlflow.ns)
ns.configure(DEFAULTS)
