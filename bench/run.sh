#!/usr/bin/env bash
# ./build.sh bench: builds the plugin, the simulator, the scraper, wis-epp, the ext_proc baseline, the floor
# backend (release) and the pass-through wasm filter; installs Envoy, vllm-router, wrk and Qwen's
# BPE vocabulary (idempotent), then runs bench/bench.py:
#   bench/run.sh [--quick] [--only profiles,quality,overhead,host,scraper] [--help]
set -euo pipefail
source "$(dirname "$0")/../envoy/lib.sh"
cd "$ROOT"

build_plugin
build_native_tools release
log "building the overhead run's tools: ext_proc baseline picker, floor backend (release), pass-through wasm filter"
cargo build --locked --release -p ext-proc-picker -p floor-server
cargo build --locked -p passthrough-filter --target wasm32-wasip1 --profile wasm-release
export WIS_EXT_PROC_BIN="$CARGO_TARGET_DIR/release/ext-proc-picker"
export WIS_FLOOR_SERVER_BIN="$CARGO_TARGET_DIR/release/floor-server"
export WIS_PASSTHROUGH_WASM="$CARGO_TARGET_DIR/wasm32-wasip1/wasm-release/passthrough_filter.wasm"
ensure_envoy
ensure_venv bench/requirements.txt
# Real-BPE English runs with Qwen's own vocabulary when it can be had; without it the simulator's
# embedded cl100k_base stands in (bench/bench.py says which one a run used).
# ensure_qwen_vocab dies when it cannot fetch the vocabulary; tried in a subshell first, so that
# failing is a fallback here, not the end of the run.
if ( ensure_qwen_vocab ); then
    ensure_qwen_vocab
else
    log "Qwen's vocabulary is not available: the real-BPE runs use cl100k_base"
fi
if ! command -v wrk >/dev/null; then
    log "installing wrk (Debian) for the overhead run"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; } \
        || die "could not install wrk"
fi
export WIS_PLUGIN_WASM="$PLUGIN_WASM"
exec "$PYTHON" "$ROOT/bench/bench.py" "$@"
