#!/usr/bin/env bash
# The chat's own tests (pytest, no browser) and the decision view server's. The real-browser tests
# of both are browser-tests/test.sh.
set -euo pipefail
source "$(dirname "$0")/../envoy/lib.sh"
cd "$ROOT"

ensure_venv envoy/requirements.txt chat/requirements.txt
log "chat and decision view server tests (pytest)"
"$PYTHON" -m pytest -q -p no:cacheprovider chat/tests decision-view/tests/test_serve.py
