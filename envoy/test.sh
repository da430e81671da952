#!/usr/bin/env bash
# End-to-end tests with a real Envoy: the renderer (each config validated by Envoy itself), the
# plugin in front of two static Python servers (issue #3's check), then the plugin with the
# simulated vLLM fleet and the scraper. Loopback only; every process is stopped when a test ends.
#   envoy/test.sh [pytest args]     e.g. envoy/test.sh -k static -x
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

build_plugin
# Debug: `cargo test --workspace` (run before this by ./build.sh test) has already compiled every
# dependency in the debug profile, so this costs seconds; the tests put no load that needs release.
build_native_tools debug
ensure_envoy
export WIS_PLUGIN_WASM="$PLUGIN_WASM"

log "end-to-end tests (pytest, envoy/tests)"
cd "$ROOT/envoy"
exec "$PYTHON" -m pytest "$@"
