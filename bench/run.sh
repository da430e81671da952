#!/usr/bin/env bash
# ./build.sh bench: builds the plugin, the simulator, the scraper, wis-epp and the ext_proc baseline (release),
# installs Envoy, vllm-router and wrk (idempotent), then runs bench/bench.py:
#   bench/run.sh [--quick] [--only quality|overhead] [--routers a,b] [--help]
set -euo pipefail
source "$(dirname "$0")/../envoy/lib.sh"
cd "$ROOT"

build_plugin
build_native_tools release
log "building the ext_proc baseline picker (release)"
cargo build --locked --release -p ext-proc-picker
export WIS_EXT_PROC_BIN="$CARGO_TARGET_DIR/release/ext-proc-picker"
ensure_envoy
ensure_venv bench/requirements.txt
if ! command -v wrk >/dev/null; then
    log "installing wrk (Debian) for the overhead run"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; } \
        || die "could not install wrk"
fi
export WIS_PLUGIN_WASM="$PLUGIN_WASM"
exec "$PYTHON" "$ROOT/bench/bench.py" "$@"
