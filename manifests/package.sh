#!/usr/bin/env bash
# ./build.sh package: everything a deployment needs, without a container engine.
#   - builds the plugin .wasm (and its .sha256)
#   - writes the plugin's OCI image layout (one layer, plugin.wasm) to $CARGO_TARGET_DIR/package/wis-plugin-oci
#   - re-renders the gateway's Envoy config into the kustomize tree (manifests/base/envoy-config)
#   - statically checks the Dockerfiles of the scraper, plugin and chat images
# Push the layout with `skopeo copy oci:DIR:TAG docker://REGISTRY/wis-plugin:TAG` (docs/deploy.md).
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
ensure_venv manifests/requirements.txt
build_plugin
out="$CARGO_TARGET_DIR/package"
mkdir -p "$out"
tag="${WIS_IMAGE_TAG:-0.1.0}"
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# Reproducible: the image's timestamps come from the last commit, not the clock.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
"$VENV/bin/python" manifests/tools/oci_layout.py build --wasm "$PLUGIN_WASM" --out "$out/wis-plugin-oci" \
    --tag "$tag" --revision "$rev"
cp "$PLUGIN_WASM" "$out/plugin.wasm"
cp "$PLUGIN_WASM.sha256" "$out/plugin.wasm.sha256.build"
(cd "$out" && sha256sum plugin.wasm >plugin.wasm.sha256 && rm plugin.wasm.sha256.build)
manifests/render-envoy-config.sh
"$VENV/bin/python" manifests/tools/dockerfile_check.py manifests/images/*.Dockerfile
log "package: $out/wis-plugin-oci (OCI layout, tag $tag), $out/plugin.wasm + .sha256"
log "images to build with an engine: manifests/images/{scraper,chat}.Dockerfile (context: repo root)"
