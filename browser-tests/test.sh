#!/usr/bin/env bash
# Real-browser tests (part of ./build.sh test): headless Debian Chromium driven by playwright-core
# against the chat (Gradio) and the decision view on a live local stack (sim fleet + scraper +
# Envoy with the plugin). Installs what it needs: chromium (apt), playwright-core (npm ci), the
# chat's Python packages (.venv), the decision view's browser module, Envoy, sim and scraper.
# Without Chromium the tests fail, saying so; they never pass without a browser.
#   browser-tests/test.sh [test files...]
set -euo pipefail
source "$(dirname "$0")/../envoy/lib.sh"
cd "$ROOT"

ensure_chromium
ensure_playwright
prepare_ui_stack debug

log "browser tests (chromium $("$WIS_CHROMIUM" --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1), playwright-core)"
exec "$PYTHON" "$ROOT/browser-tests/run.py" "$@"
