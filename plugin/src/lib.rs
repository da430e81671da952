//! wasm-inference-scheduler: an LLM inference endpoint picker that runs inside the proxy.
//!
//! The scheduling core (every module but `host`) is plain Rust with no proxy-wasm types, unit-tested
//! natively and also compiled for the browser's decision view; `host` is the thin proxy-wasm adapter
//! and exists only in the `wasm32-wasip1` filter build.

pub mod calibration;
pub mod config;
pub mod decision;
pub mod director;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod feedback;
pub mod memory;
pub mod pool;
pub mod prefix;
pub mod replication;
pub mod request;
pub mod scheduler;
pub mod service_extensions;
pub mod session;
pub mod shared_log;

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod host;

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
proxy_wasm::main! {{
    host::register();
}}
