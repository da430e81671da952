# Shared shell functions for build.sh and the component scripts. Source it; do not run it.
# Every install step here is idempotent and project-local: a clean clone on a fresh machine
# must get everything it needs from these functions, and a second run must do nothing.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$ROOT/.venv"
PLUGIN_WASM="$CARGO_TARGET_DIR/wasm32-wasip1/wasm-release/wasm_inference_scheduler.wasm"
export WIS_PLUGIN_WASM="${WIS_PLUGIN_WASM:-$PLUGIN_WASM}"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

ensure_rust_target() {
    local target="$1"
    rustup target list --installed 2>/dev/null | grep -qx "$target" && return 0
    log "installing Rust target $target"
    rustup target add "$target"
}

# Builds the release .wasm (size-optimised profile) and reports its size and sha256.
build_plugin() {
    ensure_rust_target wasm32-wasip1
    log "building the plugin (wasm32-wasip1, profile wasm-release)"
    cargo build --locked -p wasm-inference-scheduler --target wasm32-wasip1 --profile wasm-release
    local size sum
    size=$(wc -c <"$PLUGIN_WASM")
    sum=$(sha256sum "$PLUGIN_WASM" | cut -d' ' -f1)
    printf '%s  %s\n' "$sum" "$(basename "$PLUGIN_WASM")" >"$PLUGIN_WASM.sha256"
    log "plugin: $PLUGIN_WASM ($((size / 1024)) KiB, sha256 $sum)"
}

# The decision view's browser module: the scheduling core for wasm32-unknown-unknown, then its
# JavaScript bindings (decision-view/bindgen, pinned by Cargo.lock), into $VIEW_PKG.
VIEW_PKG="$CARGO_TARGET_DIR/decision-view/pkg"
export WIS_VIEW_PKG="${WIS_VIEW_PKG:-$VIEW_PKG}"
build_decision_view() {
    ensure_rust_target wasm32-unknown-unknown
    log "building the decision view (scheduling core for wasm32-unknown-unknown + wasm-bindgen glue)"
    cargo build --locked -p decision-view --target wasm32-unknown-unknown --profile view-release
    cargo build --locked -p decision-view-bindgen
    "$CARGO_TARGET_DIR/debug/wis-bindgen" \
        "$CARGO_TARGET_DIR/wasm32-unknown-unknown/view-release/decision_view.wasm" "$VIEW_PKG"
    log "decision view: $VIEW_PKG ($(($(wc -c <"$VIEW_PKG/decision_view_bg.wasm") / 1024)) KiB of wasm)"
}

# Debian's Chromium for the real-browser tests (Playwright's own browser download does not work on
# our machines). Installed with apt when missing and we are root; otherwise a clear error: the
# browser tests fail rather than pass without a browser.
CHROMIUM="${WIS_CHROMIUM:-/usr/bin/chromium}"
ensure_chromium() {
    export WIS_CHROMIUM="$CHROMIUM"
    [ -x "$CHROMIUM" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing Debian's chromium for the browser tests"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
            || die "could not install chromium with apt-get: the browser tests need it"
    fi
    [ -x "$CHROMIUM" ] || die "no Chromium at $CHROMIUM: install Debian's chromium package (or set WIS_CHROMIUM)"
}

# playwright-core (pinned in browser-tests/package-lock.json), installed with npm ci when the lock
# file changed.
ensure_playwright() {
    command -v npm >/dev/null || die "npm is needed for the browser tests (Node.js 20 or newer)"
    local dir="$ROOT/browser-tests" stamp want
    stamp="$dir/node_modules/.stamp"
    want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing playwright-core for the browser tests (npm ci)"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in browser-tests failed"
        echo "$want" >"$stamp"
    fi
}

# Creates .venv (once) and installs the given requirement files into it when they changed.
ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating the project virtualenv at .venv"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip
    fi
    local req stamp want
    for req in "$@"; do
        stamp="$VENV/.stamp-$(echo "$req" | tr '/' '_')"
        want=$(sha256sum "$ROOT/$req" | cut -d' ' -f1)
        if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
            log "installing Python packages from $req"
            "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/$req"
            echo "$want" >"$stamp"
        fi
    done
}

# Qwen's own BPE vocabulary for `sim fleet --vocab` (qwen.tiktoken: 151,643 ranks, the base Qwen2
# and Qwen3 build on). It ships inside the dashscope wheel on PyPI; the pinned wheel is downloaded
# once into .venv/cache (never committed), the file extracted and checked against its sha256.
# Exports WIS_QWEN_VOCAB=<path>.
DASHSCOPE_VERSION="2.0.2"
QWEN_VOCAB_SHA256="b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
ensure_qwen_vocab() {
    local dir="$VENV/cache/qwen-vocab"
    local vocab="$dir/qwen.tiktoken"
    if [ "$(sha256sum "$vocab" 2>/dev/null | cut -d' ' -f1)" != "$QWEN_VOCAB_SHA256" ]; then
        ensure_venv
        log "fetching Qwen's vocabulary (qwen.tiktoken from the dashscope $DASHSCOPE_VERSION wheel)"
        mkdir -p "$dir"
        "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            -d "$dir" "dashscope==$DASHSCOPE_VERSION" \
            || die "could not download the dashscope $DASHSCOPE_VERSION wheel (it carries qwen.tiktoken)"
        "$VENV/bin/python" - "$dir/dashscope-$DASHSCOPE_VERSION-py3-none-any.whl" "$vocab" <<'PY' \
            || die "could not extract qwen.tiktoken from the dashscope wheel"
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    data = z.read("dashscope/resources/qwen.tiktoken")
with open(out + ".tmp", "wb") as f:
    f.write(data)
os.replace(out + ".tmp", out)
PY
        local got
        got=$(sha256sum "$vocab" | cut -d' ' -f1)
        if [ "$got" != "$QWEN_VOCAB_SHA256" ]; then
            rm -f "$vocab"
            die "qwen.tiktoken from dashscope $DASHSCOPE_VERSION has sha256 $got, expected $QWEN_VOCAB_SHA256"
        fi
        rm -f "$dir"/dashscope-*.whl
    fi
    export WIS_QWEN_VOCAB="$vocab"
}
