#!/usr/bin/env bash
# Manifest and packaging tests, offline: renders every overlay with kubectl kustomize, validates each
# object against the Kubernetes schemas and the CRDs in ../shared/crds, checks the Dockerfiles, the
# OCI layout writer and that the committed Envoy config matches envoy/render.py. Run by ./build.sh test.
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
command -v kubectl >/dev/null || die "kubectl not found: install kubectl (1.32+, it carries Kustomize v5) and re-run; the manifests are rendered with 'kubectl kustomize'"
[ -d "$ROOT/../shared/crds" ] || die "CRDs not found at $ROOT/../shared/crds (the tests read the official CRDs there)"
ensure_venv manifests/requirements.txt
cd manifests
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
