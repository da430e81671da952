#!/usr/bin/env bash
# Writes manifests/components/envoy-gateway/envoy-config/envoy.yaml, the gateway's Envoy
# configuration, from the one renderer every Envoy config of this project comes from (envoy/render.py,
# scenario kubernetes). The file is committed; manifests/tests/test_packaging.py fails when it is out
# of date.
#   manifests/render-envoy-config.sh [OUT]     (default: the file in the kustomize tree)
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
out="${1:-manifests/components/envoy-gateway/envoy-config/envoy.yaml}"
"${PYTHON:-$( [ -x "$VENV/bin/python" ] && echo "$VENV/bin/python" || echo python3)}" envoy/render.py --scenario kubernetes \
    --listen 0.0.0.0:8081 --admin 127.0.0.1:9901 \
    --pool-dns vllm-qwen3.wis.svc.cluster.local:8000 \
    --scraper 127.0.0.1:9090 \
    --wasm /etc/envoy/wasm/plugin.wasm \
    --plugin-config manifests/components/envoy-gateway/plugin-config.json \
    --workers 2 --format yaml --out "$out"
