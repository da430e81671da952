#!/usr/bin/env bash
# ./build.sh ui: a simulated fleet, the scraper and Envoy with the plugin, plus the Gradio chat and
# the decision view on localhost, until Ctrl-C (envoy/ui.py prints the URLs).
#   envoy/ui.sh [--pods 4] [--chat-port 7860] [--view-port 7861]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

prepare_ui_stack release
log "starting the stack with the chat and the decision view (Ctrl-C stops it)"
exec "$PYTHON" "$ROOT/envoy/ui.py" "$@"
