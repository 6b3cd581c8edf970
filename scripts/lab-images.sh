#!/usr/bin/env bash
# Build and load, on the real-node lab, every image the real-pod tests deploy (pods there cannot pull):
# the services' images, tagged as playbooks/defaults.py names them (the kit's datalab-images.sh), and
# the session image: Python with this project's core dependencies (no extras), as `pip install
# datalab-playbooks` gives a Datalab session; the test installs the project's wheel into it.
# mlflow is built here, not by the kit: the real -full image ships psycopg2 (MLflow on PostgreSQL), the kit's has none.
# mlflow-previous: the previous MLflow release (playbooks/defaults.py MLFLOW_PREVIOUS_VERSION) under the
# name its official image has, for the upgrade test (tests/e2e/test_mlflow_upgrade_e2e.py).
#   scripts/lab-images.sh [NAME ...]   names: dask mlflow mlflow-previous gateway-server gateway-backend traefik postgres
#                                      session (default: all)
# env: LAB_KIT (default: shared/lab beside this checkout), LAB_DIR (the kit's, default ~/k8s-lab). The node must be up.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=${LAB_KIT:-../shared/lab}
[ -x "$kit/images/mkpyimage.sh" ] || { echo "no lab kit at $kit: set LAB_KIT" >&2; exit 1; }
want=("$@"); [ ${#want[@]} -gt 0 ] || want=(dask mlflow mlflow-previous gateway-server gateway-backend traefik postgres session)
services=()
for name in "${want[@]}"; do case "$name" in session|mlflow|mlflow-previous|postgres) ;; *) services+=("$name") ;; esac; done
[ ${#services[@]} -eq 0 ] || "$kit/images/datalab-images.sh" "${services[@]}"
case " ${want[*]} " in
  *" mlflow "*)
    version=$(python3 -c 'import re; print(re.search(r"MLFLOW_VERSION = \"(.+?)\"", open("playbooks/defaults.py").read())[1])')
    "$kit/images/mkpyimage.sh" "ghcr.io/mlflow/mlflow:v$version-full" "mlflow==$version" boto3 psycopg2-binary
    ;;
esac
case " ${want[*]} " in
  *" postgres "*)
    # A stand-in for the official postgres image (pods on the lab cannot pull): PostgreSQL 16 server binaries
    # from the pgserver wheel (initdb, postgres, pg_ctl, pg_isready, pg_dump, psql), on PATH as in the official
    # image. The manifests run an explicit command, so the official image's entrypoint is never needed.
    image=$(python3 -c 'from playbooks.defaults import DEFAULTS; print(DEFAULTS["postgres"]["image"])')
    bin=/opt/venv/lib/python3.11/site-packages/pgserver/pginstall/bin
    IMAGE_ENV="PATH=$bin:/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      IMAGE_CMD='["postgres"]' "$kit/images/mkpyimage.sh" "$image" 'pgserver==0.1.4'
    ;;
esac
case " ${want[*]} " in
  *" session "*)
    mapfile -t deps < <(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
    IMAGE_CMD='["sleep","infinity"]' "$kit/images/mkpyimage.sh" datalab-playbooks/session:core pip "${deps[@]}"
    ;;
esac
case " ${want[*]} " in
  *" mlflow-previous "*)
    previous=$(python3 -c 'import ast; print(next(n.value.value for n in ast.parse(open("playbooks/defaults.py").read()).body if isinstance(n, ast.Assign) and n.targets[0].id == "MLFLOW_PREVIOUS_VERSION"))')
    "$kit/images/mkpyimage.sh" "ghcr.io/mlflow/mlflow:v$previous-full" "mlflow==$previous" boto3 psycopg2-binary
    ;;
esac
