#!/usr/bin/env bash
# ./build.sh package: everything a deployment needs from this checkout.
#   - builds the plugin .wasm (and its .sha256)
#   - writes the plugin's OCI image layout (one layer, plugin.wasm) to $CARGO_TARGET_DIR/package/wis-plugin-oci
#     (for components/plugin-image-volume, Istio WasmPlugin, Envoy Gateway; push it with skopeo)
#   - writes the build context of the Envoy gateway image (the pinned Envoy with plugin.wasm baked in,
#     manifests/images/envoy.Dockerfile) to $CARGO_TARGET_DIR/package/wis-envoy, and builds the image
#     as ${WIS_IMAGE_REGISTRY:+REGISTRY/}wis-envoy:TAG when docker or podman is on PATH
#   - re-renders the gateway's Envoy config into the kustomize tree (components/envoy-gateway/envoy-config)
#   - statically checks every Dockerfile in manifests/images
# TAG is $WIS_IMAGE_TAG, by default the templates' tag (manifests/components/images).
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
ensure_venv manifests/requirements.txt
build_plugin
out="$CARGO_TARGET_DIR/package"
mkdir -p "$out"
default_tag="$("$VENV/bin/python" -c 'import sys, yaml; print({i["name"]: i["newTag"] for i in yaml.safe_load(open(sys.argv[1]))["images"]}["wis-envoy"])' manifests/components/images/kustomization.yaml)"
tag="${WIS_IMAGE_TAG:-$default_tag}"
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# Reproducible: the image's timestamps come from the last commit, not the clock.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
"$VENV/bin/python" manifests/tools/oci_layout.py build --wasm "$PLUGIN_WASM" --out "$out/wis-plugin-oci" \
    --tag "$tag" --revision "$rev"
cp "$PLUGIN_WASM" "$out/plugin.wasm"
(cd "$out" && sha256sum plugin.wasm >plugin.wasm.sha256)
cmp -s <(cut -d' ' -f1 "$out/plugin.wasm.sha256") <(cut -d' ' -f1 "$PLUGIN_WASM.sha256") \
    || die "plugin.wasm changed while packaging: its sha256 differs from the build's"

# The Envoy image's build context: nothing but the Dockerfile, the module and its hash.
ctx="$out/wis-envoy"
rm -rf "$ctx" && mkdir -p "$ctx"
cp manifests/images/envoy.Dockerfile "$ctx/Dockerfile"
cp "$out/plugin.wasm" "$out/plugin.wasm.sha256" "$ctx/"

manifests/render-envoy-config.sh
"$VENV/bin/python" manifests/tools/dockerfile_check.py manifests/images/*.Dockerfile

image="${WIS_IMAGE_REGISTRY:+$WIS_IMAGE_REGISTRY/}wis-envoy:$tag"
engine=""
for candidate in docker podman; do
    # A client without a reachable daemon cannot build; look for one that answers.
    if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then
        engine="$candidate"
        break
    fi
done
if [ -n "$engine" ]; then
    log "building $image with $engine"
    "$engine" build -t "$image" "$ctx"
else
    log "no working docker or podman here: build the Envoy image elsewhere from $ctx, e.g."
    log "  docker build -t $image $ctx      or      gcloud builds submit --tag $image $ctx"
fi
log "package: $out/wis-plugin-oci (OCI layout, tag $tag), $out/plugin.wasm + .sha256, $ctx (wis-envoy build context)"
log "images built from the repository root: manifests/images/{scraper,epp,chat}.Dockerfile"
