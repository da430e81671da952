#!/usr/bin/env bash
# ./build.sh demo: from a clean clone, install and build what the demo needs (wasm target, plugin,
# simulator and scraper in release, .venv with the pinned Envoy), then run envoy/demo.py:
# a simulated vLLM fleet + scraper + real Envoy with the plugin, a chat workload with shared
# system prompts, the same workload through plain round-robin, and the comparison.
# The chat (Gradio) and the decision view run beside the plugin phase (their URLs are printed).
#   envoy/demo.sh [--pods 4] [--groups 32] [--concurrency 32] [--duration 30] [--no-ui] [--with-ui] [--help]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

if [[ " $* " == *" --no-ui "* ]]; then
    build_plugin
    build_native_tools release
    ensure_envoy
    export WIS_PLUGIN_WASM="$PLUGIN_WASM"
else
    prepare_ui_stack release
fi

log "running the demo (about 2-4 minutes; Ctrl-C stops it and every process it started)"
exec "$PYTHON" "$ROOT/envoy/demo.py" "$@"
