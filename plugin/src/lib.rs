//! wasm-inference-scheduler: an LLM inference endpoint picker that runs inside the proxy.
//!
//! The scheduling core (every module but `host`) is plain Rust with no proxy-wasm types; `host`
//! is the thin proxy-wasm adapter and exists only in the `wasm32-wasip1` filter build.

pub mod feedback;
pub mod pool;
pub mod shared_log;
