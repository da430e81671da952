//! The cheapest proxy-wasm HTTP filter there is: one root context, one HTTP context per request,
//! and every callback answers `Continue` without a host call. Envoy still creates the context in
//! V8, copies nothing, and calls `proxy_on_request_headers`, `proxy_on_request_body`,
//! `proxy_on_response_headers`, `proxy_on_response_body`, `proxy_on_log` and `proxy_on_done` across
//! the VM boundary for every request.
//!
//! `./build.sh bench` runs it as the `passthrough-wasm` row of the overhead table, so the report can
//! tell the price of hosting any proxy-wasm filter from the price of our plugin's own work.
//! Built like the plugin: `cargo build -p passthrough-filter --target wasm32-wasip1 --profile wasm-release`.

#![cfg(all(target_arch = "wasm32", target_os = "wasi"))]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PassthroughRoot) });
}}

/// Holds no configuration and no state.
struct PassthroughRoot;

impl Context for PassthroughRoot {}

impl RootContext for PassthroughRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Passthrough))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request: the SDK's default callbacks, each of which returns `Action::Continue`.
struct Passthrough;

impl Context for Passthrough {}

impl HttpContext for Passthrough {}
