//! The proxy-wasm adapter: the only code that touches the host ABI. It translates host callbacks
//! into calls on the scheduling core and back, and holds no policy.
//!
//! - `root.rs`: configuration, the tick (snapshot fetch under a lease, snapshot refresh, routing
//!   log sync), and the snapshot call's response.
//! - `http.rs`: one request's lifecycle.
//! - `vm.rs`: the state one VM keeps: configuration, scheduler, cached snapshot, routing memory.
//! - `abi.rs`: host calls wrapped in `Result`; `shared.rs`: shared-data layout; `stats.rs`: metrics.

mod abi;
mod http;
mod root;
mod shared;
mod stats;
mod vm;

/// Registers the root context factory. Called once from `_initialize`.
pub fn register() {
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}
