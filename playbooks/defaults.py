"""Collection defaults. Users override them in invoke.yaml, INVOKE_* variables or flags."""

MLFLOW_VERSION = "3.17.2"
# The release before it: the upgrade tests deploy it, then `up` the current one (scripts/lab-images.sh).
MLFLOW_PREVIOUS_VERSION = "3.16.1"
# Dask Gateway: chart version, images and the smoke client (pyproject.toml) share one release.
GATEWAY_VERSION = "2026.3.0"
# The smoke client pins dask[distributed] to the same release (pyproject.toml).
DASK_VERSION = "2026.8.0"
# The official image's PostgreSQL release (the lab's stand-in: scripts/lab-images.sh).
POSTGRES_VERSION = "16.11"

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
    # Local mode: services as processes on this machine.
    "local": {
        "state_dir": ".playbooks/local",
        "start_timeout": 120,
        "stop_grace": 10,
        # How long a run waits for another that holds the state folder (seconds).
        "lock_timeout": 300,
        # Each service's well-known port, taken when free (else its port of last time, else any
        # free one); 0: no preference.
        "ports": {
            "mlflow": 5000,
            "dask": 8786,
            "dask_dashboard": 8787,
            "storage": 9000,
            "gateway": 8000,
            "gateway_proxy": 8001,
            "postgres": 5432,
        },
    },
    # `invoke forward`: supervised port-forwards to the running services (cluster modes).
    "forward": {
        # None: $XDG_STATE_HOME/datalab-playbooks/forwards (~/.local/state/...), a folder per target.
        "state_dir": None,
        # Seconds `forward` waits until every forward answers.
        "timeout": 60,
        # The local port of each forward when free (else its port of last time, else any free one).
        "ports": {
            "mlflow": 5000,
            "dask": 8786,
            "dask_dashboard": 8787,
            "gateway": 8000,
            "gateway_proxy": 8001,
            "storage": 9000,
            "postgres": 5432,
        },
    },
    "storage": {
        "name": "storage",
        "bucket": "datalab",
        # The image ships `mc`, which the bucket Job uses.
        "image": "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z",
        "storage_size": "2Gi",
        "storage_class": None,
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "250m", "memory": "256Mi"},
        },
        "rollout_timeout": 300,
        "job_timeout": 180,
    },
    # Pod Security Standard "restricted" for every pod the playbooks create (README: Security).
    "security": {
        "pod": {
            "runAsNonRoot": True,
            # uid 1000 is the `dask` user of the dask-gateway images; the other images run as
            # any uid. fsGroup makes the volumes (database, objects) writable for it.
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "container": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            # Each pod mounts an emptyDir on /tmp (and HOME points there where the image
            # allows); data goes to its volume. Set false if a changed image writes elsewhere.
            "readOnlyRootFilesystem": True,
        },
        # A NetworkPolicy per service admitting ingress only from pods of the same namespace.
        # Off by default: some platforms forbid creating NetworkPolicies. `invoke up --network-policy`.
        "network_policy": False,
    },
    "tools": {
        "kubectl": "kubectl",
        "helm": "helm",
        "field_manager": "datalab-playbooks",
    },
    "postgres": {
        "name": "postgres",
        # Run with an explicit command (initdb on an empty volume, then postgres): no entrypoint script needed.
        "image": f"docker.io/library/postgres:{POSTGRES_VERSION}-bookworm",
        # The application's database and its owner (the cluster's bootstrap superuser, as the official
        # image's POSTGRES_USER is); the password is generated once and kept in the Secret <name>-app.
        "database": "mlflow",
        "user": "mlflow",
        "storage_size": "1Gi",
        "storage_class": None,
        # Small by design (README: Resources): shared_buffers and max_connections below.
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "250m", "memory": "256Mi"},
        },
        # Server settings (`postgres -c`): 64MB of buffers inside the 256Mi limit, a few MLflow workers' pools.
        "shared_buffers": "64MB",
        "max_connections": 30,
        # Local mode: the folder of initdb/postgres/pg_isready; "" finds them (pg_config --bindir,
        # /usr/lib/postgresql/<newest>/bin, the pgserver wheel).
        "bin_dir": "",
        "rollout_timeout": 300,
        "smoke_timeout": 60,
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
        # The backend store when `mlflow.up` gets no --backend and no server runs: sqlite or postgres.
        "backend": "sqlite",
        # With postgres, which database (--database): None picks by the order of mlflow_db.py.
        "database": None,
        # Server workers: None is 1 for SQLite (more lock the database), postgres_workers for PostgreSQL.
        "workers": None,
        "postgres_workers": 1,
        # MLflow 3.17's job execution (MLFLOW_SERVER_ENABLE_JOB_EXECUTION, on by MLflow's default)
        # starts huey_consumer processes of ~245 MB each: the server is OOM-killed at a 768Mi
        # limit, and locally the consumers ignore SIGTERM, so every stop waits the full grace.
        "job_execution": False,
        "rollout_timeout": 300,
        "smoke_timeout": 120,
        # A new MLflow on an existing database (mlflow_upgrade.py): the whole schema migration (the
        # Job's image pull included), and the schema check, in seconds.
        "upgrade_timeout": 600,
        "upgrade_check_timeout": 60,
        # The cluster's schema-check Job runs beside the old server: it fits the `medium` quota's rest.
        "upgrade_check_resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "100m", "memory": "96Mi"},
        },
        # Local mode: the `mlflow` executable the server runs (None: this environment's, else PATH's).
        "local_command": None,
    },
    "dask": {
        "name": "dask",
        "image": f"ghcr.io/dask/dask:{DASK_VERSION}-py3.11",
        # Kept from the running deployment when `dask.up` is run without --workers.
        "workers": 2,
        # With the MLflow defaults: 1.7 CPU and 1920Mi of limits, inside the `medium`
        # quota (2 CPU, 2Gi); the in-cluster smoke Job fits in the 300m/128Mi left.
        "scheduler_resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "200m", "memory": "256Mi"},
        },
        "worker_resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "500m", "memory": "448Mi"},
        },
        "worker_scratch_size": "1Gi",
        "smoke_resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "250m", "memory": "128Mi"},
        },
        "rollout_timeout": 300,
        "smoke_timeout": 120,
        # The whole in-cluster smoke Job, image pull included.
        "smoke_job_timeout": 300,
    },
    "gateway": {
        "release": "dask-gateway",
        # dask/dask-gateway from the repository below, a local chart directory, or oci://...
        "chart": "dask/dask-gateway",
        "chart_version": GATEWAY_VERSION,
        "repo_name": "dask",
        "repo_url": "https://helm.dask.org",
        "server_image": f"ghcr.io/dask/dask-gateway-server:{GATEWAY_VERSION}",
        "backend_image": f"ghcr.io/dask/dask-gateway:{GATEWAY_VERSION}",
        "traefik_image": "docker.io/traefik:3.3.5",
        # Pods of the release (chart keys gateway/controller/traefik.resources).
        "resources": {
            "gateway": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
            "controller": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "250m", "memory": "256Mi"}},
            "traefik": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "250m", "memory": "256Mi"}},
        },
        # Each Dask cluster's pods (chart keys gateway.backend.scheduler/worker); the worker's
        # --memory-limit is its memory limit, so the nanny and the OOM killer agree.
        "scheduler": {"cores": {"request": 0.1, "limit": 1}, "memory": {"request": "512M", "limit": "1G"}},
        "worker": {"cores": {"request": 0.25, "limit": 1}, "memory": {"request": "1G", "limit": "1G"}, "threads": 1},
        # helm --wait --timeout for up; deletions for down.
        "timeout": 600,
        # The whole smoke check: cluster start, image pulls for 2 workers, compute, shutdown.
        "smoke_timeout": 300,
    },
}
