#!/usr/bin/env bash
# ./build.sh demo: from a clean clone, install and build what the demo needs (wasm target, plugin,
# simulator and scraper in release, .venv with the pinned Envoy), then run envoy/demo.py:
# a simulated vLLM fleet + scraper + real Envoy with the plugin, a chat workload with shared
# system prompts, the same workload through plain round-robin, and the comparison.
# The chat (Gradio) and the decision view run beside the plugin phase (their URLs are printed).
# The fleet tokenizes with Qwen's BPE vocabulary (fetched once by ensure_qwen_vocab), else cl100k_base.
#   envoy/demo.sh [--pods 4] [--groups 32] [--concurrency 96] [--duration 25] [--no-ui] [--with-ui] [--help]
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

# ensure_qwen_vocab dies when it cannot fetch the vocabulary; tried in a subshell first, so that
# failing is a fallback here, not the end of the run.
if ( ensure_qwen_vocab ); then
    ensure_qwen_vocab
else
    log "Qwen's vocabulary is not available: the fleet tokenizes with cl100k_base"
fi

log "running the demo (about 2 minutes; Ctrl-C stops it and every process it started)"
exec "$PYTHON" "$ROOT/envoy/demo.py" "$@"
