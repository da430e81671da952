//! The cheapest proxy-wasm HTTP filter there is, in two modes chosen by its configuration:
//!
//! - default: one root context, one HTTP context per request, and every callback answers
//!   `Continue` without a host call. Envoy still creates the context in V8, copies nothing, and
//!   calls `proxy_on_request_headers`, `proxy_on_request_body`, `proxy_on_response_headers`,
//!   `proxy_on_response_body`, `proxy_on_log` and `proxy_on_done` across the VM boundary for every
//!   request.
//! - `{"passthrough": {"readBody": true}}` (the configuration may hold anything else beside it):
//!   the request headers pause until the whole body is buffered, the body is copied into the VM
//!   once and one request header is set, as any picker that reads the body must. Nothing is
//!   parsed or scheduled.
//!
//! `./build.sh bench` runs both as the `passthrough-wasm` and `passthrough-body` rows of the
//! overhead table, so the report can tell the price of hosting any proxy-wasm filter, and of
//! buffering the body into it, from the price of our plugin's own work.
//! Built like the plugin: `cargo build -p passthrough-filter --target wasm32-wasip1 --profile wasm-release`.

#![cfg(all(target_arch = "wasm32", target_os = "wasi"))]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PassthroughRoot { read_body: false }) });
}}

/// The mode, read once from the configuration.
struct PassthroughRoot {
    read_body: bool,
}

impl Context for PassthroughRoot {}

impl RootContext for PassthroughRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        // A configuration that is not JSON (or has no such key) is the default mode.
        self.read_body = serde_json::from_slice::<serde_json::Value>(&config)
            .ok()
            .and_then(|v| v.pointer("/passthrough/readBody").and_then(serde_json::Value::as_bool))
            .unwrap_or(false);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.read_body { Some(Box::new(ReadsBody)) } else { Some(Box::new(Passthrough)) }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request: the SDK's default callbacks, each of which returns `Action::Continue`.
struct Passthrough;

impl Context for Passthrough {}

impl HttpContext for Passthrough {}

/// One request whose whole body is read before it continues.
struct ReadsBody;

impl Context for ReadsBody {}

impl HttpContext for ReadsBody {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if end_of_stream { Action::Continue } else { Action::Pause }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        self.set_http_request_header("x-passthrough-body-bytes", Some(&body.len().to_string()));
        Action::Continue
    }
}
