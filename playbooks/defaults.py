"""Collection defaults. Users override them in invoke.yaml, INVOKE_* variables or flags."""

MLFLOW_VERSION = "3.17.2"

DEFAULTS: dict = {
    "target": {
        # None means: detect. See playbooks/target.py for the order of the sources.
        "namespace": None,
        "mode": None,
        "kubeconfig": None,
        "context": None,
        "api_timeout": 10,
        "cluster_domain": "cluster.local",
    },
    # Pod Security Standard "restricted" for every pod the playbooks create.
    "security": {
        "pod": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "container": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    },
    "tools": {
        "kubectl": "kubectl",
        "helm": "helm",
        "field_manager": "datalab-playbooks",
    },
    "mlflow": {
        "name": "mlflow",
        "image": f"ghcr.io/mlflow/mlflow:v{MLFLOW_VERSION}-full",
        "bucket": None,
        "prefix": "mlflow",
        "port": 5000,
        "storage_size": "1Gi",
        "storage_class": None,
        # With the Dask defaults this stays inside the `medium` quota (README: Resources).
        "resources": {
            "requests": {"cpu": "100m", "memory": "512Mi"},
            "limits": {"cpu": "500m", "memory": "768Mi"},
        },
        "extra_allowed_hosts": [],
        "rollout_timeout": 300,
        "smoke_timeout": 120,
    },
}
