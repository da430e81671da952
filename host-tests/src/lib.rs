//! A proxy-wasm host on wasmtime that runs the built plugin the way Envoy does, for tests that
//! read as request stories.
//!
//! ```no_run
//! use host_tests::wis;
//! let envoy = wis::envoy().workers(2).plugin_config(r#"{"pool":{"endpoints":["10.0.0.1:8000"]}}"#).build().unwrap();
//! let mut r = envoy.worker(0).request(wis::CHAT).json(&wis::chat(wis::MODEL, "be brief", "hi")).send();
//! r.assert_destination("10.0.0.1:8000");
//! r.respond(200).body_chunks(["data: {}\n\n", "data: [DONE]\n\n"]).finish();
//! assert_eq!(envoy.stat("wis.decisions"), 1);
//! ```
//!
//! - [`Envoy`]: worker VMs of one module over one shared-data store, a test clock
//!   ([`Envoy::advance_ms`] fires ticks and HTTP-call answers), scripted clusters
//!   ([`Envoy::upstream`]), stats, shared data and logs.
//! - [`RequestBuilder`] / [`Exchange`] / [`ResponseBuilder`]: one stream, driven as Envoy's HTTP
//!   filter chain drives it (body buffering while the filter pauses, local replies through the
//!   response callbacks, log/done/delete at the end, resets).
//! - `host` module: every host function, one named function per export linked from one table,
//!   faithful to the ABI 0.2.1 spec and to Envoy; anything the module imports that is not
//!   implemented traps with its name.
//! - [`wis`]: the only module that knows this project's plugin (its `.wasm`, header names,
//!   snapshots, request bodies); the rest is a generic proxy-wasm host.

pub mod abi;
mod envoy;
mod host;
mod story;
pub mod wis;

pub use abi::{Headers, LogLevel, MetricKind};
pub use envoy::{Envoy, EnvoyBuilder, HostError, HostResult, UpstreamHandle, Worker};
pub use host::{HostMode, HttpCall, LocalReply, LogLine, Metric, UpstreamReply};
pub use story::{ClientResponse, Exchange, RequestBuilder, ResponseBuilder};
