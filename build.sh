#!/usr/bin/env bash
# The one entry point.
#   ./build.sh            build the plugin .wasm (optimised for speed, stripped) and report its size and sha256
#   ./build.sh test       every test: formatting, lints, unit tests, host tests, end-to-end, manifests, browser
#   ./build.sh ui         a live local stack with the chat and the decision view, until Ctrl-C
#   ./build.sh demo       the main job: simulated vLLM fleet + scraper + real Envoy with the plugin, a chat workload
#   ./build.sh bench      benchmarks against the peers (round-robin, least-request, vllm-router, ext_proc)
#   ./build.sh package    plugin OCI image layout + sha256, rendered Envoy config, Dockerfile checks
#   ./build.sh lint       cargo fmt --check and clippy only
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"
cd "$ROOT"

lint() {
    log "cargo fmt --check"
    cargo fmt --all -- --check
    log "cargo clippy (native, all targets)"
    cargo clippy --locked --workspace --all-targets -- -D warnings
    log "cargo clippy (plugin, wasm32-wasip1: the proxy-wasm host adapter)"
    cargo clippy --locked -p wasm-inference-scheduler --target wasm32-wasip1 -- -D warnings
}

# Component test scripts, run in this order after the Rust tests; each owns its setup.
COMPONENT_TESTS=(envoy/test.sh manifests/test.sh chat/test.sh browser-tests/test.sh)

run_tests() {
    build_plugin
    lint
    log "cargo test (workspace: plugin core, host tests on the built .wasm, scraper, sim)"
    cargo test --locked --workspace
    local t
    for t in "${COMPONENT_TESTS[@]}"; do
        if [ -x "$ROOT/$t" ]; then
            log "running $t"
            "$ROOT/$t"
        fi
    done
    log "all tests passed"
}

case "${1:-build}" in
    build) build_plugin ;;
    test) run_tests ;;
    lint) ensure_rust_target wasm32-wasip1; lint ;;
    demo) exec "$ROOT/envoy/demo.sh" "${@:2}" ;;
    ui) exec "$ROOT/envoy/ui.sh" "${@:2}" ;;
    bench) exec "$ROOT/bench/run.sh" "${@:2}" ;;
    package) exec "$ROOT/manifests/package.sh" "${@:2}" ;;
    -h | --help | help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$1' (try ./build.sh help)" ;;
esac
