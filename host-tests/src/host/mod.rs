//! The host side of the ABI: what each VM's store holds, what all VMs share, and every host
//! function, one named function per export, linked from one table ([`EXPORTS`]), after
//! proxy-wasm-cpp-host's `exports.cc`.
//!
//! Each function follows the proxy-wasm ABI 0.2.1 spec and, where the spec leaves room, Envoy's
//! implementation (proxy-wasm-cpp-host plus Envoy's `Context`): statuses, which buffers and maps
//! exist in which callback, how `set_buffer_bytes` edits a body, the CAS counter of shared data.
//! A function the module imports that the harness does not implement is still linked, as a stub
//! that traps with its name, so a test that reaches it fails saying which call it was.
//!
//! One file per concern: `logging` (log, log level, clocks, ticks), `buffers`, `headers`,
//! `properties`, `stream_control` (local replies, effective context, continue/close, done, foreign
//! functions), `shared_data` (shared data and shared queues), `http_call`, `metrics`, `wasi`.
//! `state` holds what a VM's store and the shared process hold; `guest` reads and writes guest
//! memory.

mod buffers;
mod guest;
mod headers;
mod http_call;
mod logging;
mod metrics;
mod properties;
mod shared_data;
mod state;
mod stream_control;
mod wasi;

pub(crate) use headers::replace_header;
pub(crate) use http_call::UpstreamScript;
pub use http_call::{HttpCall, UpstreamReply};
pub(crate) use state::{Event, HostState, Phase, Shared, Stream};
pub use state::{HostMode, LocalReply, LogLine, Metric};

use buffers::{proxy_get_buffer_bytes, proxy_get_buffer_status, proxy_set_buffer_bytes};
use headers::{
    proxy_add_header_map_value, proxy_get_header_map_pairs, proxy_get_header_map_size, proxy_get_header_map_value,
    proxy_remove_header_map_value, proxy_replace_header_map_value, proxy_set_header_map_pairs,
};
use http_call::proxy_http_call;
use logging::{proxy_get_current_time_nanoseconds, proxy_get_log_level, proxy_log, proxy_set_tick_period_milliseconds};
use metrics::{proxy_define_metric, proxy_get_metric, proxy_increment_metric, proxy_record_metric};
use properties::{proxy_get_property, proxy_set_property};
use shared_data::{
    proxy_dequeue_shared_queue, proxy_enqueue_shared_queue, proxy_get_shared_data, proxy_register_shared_queue,
    proxy_resolve_shared_queue, proxy_set_shared_data,
};
use stream_control::{
    proxy_call_foreign_function, proxy_close_stream, proxy_continue_stream, proxy_done, proxy_send_local_response,
    proxy_set_effective_context,
};
use wasi::{
    args_get, args_sizes_get, clock_time_get, environ_get, environ_sizes_get, fd_write, proc_exit, random_get,
    sched_yield,
};
use wasmtime::{Error, Linker, Module, Result};

const ENV: &str = "env";
const WASI: &str = "wasi_snapshot_preview1";

/// One host function: the module it is imported from, its name, and how it is linked.
pub(crate) struct Export {
    pub module: &'static str,
    pub name: &'static str,
    link: fn(&mut Linker<HostState>) -> Result<()>,
}

/// `(module, function)`: one table row per export; the function has the export's name.
macro_rules! exports {
    ($(($module:ident, $name:ident)),* $(,)?) => {
        &[$(Export {
            module: $module,
            name: stringify!($name),
            link: |linker| {
                linker.func_wrap($module, stringify!($name), $name)?;
                Ok(())
            },
        }),*]
    };
}

/// Every host function the harness implements.
pub(crate) static EXPORTS: &[Export] = exports![
    (ENV, proxy_log),
    (ENV, proxy_get_log_level),
    (ENV, proxy_get_current_time_nanoseconds),
    (ENV, proxy_set_tick_period_milliseconds),
    (ENV, proxy_get_buffer_bytes),
    (ENV, proxy_get_buffer_status),
    (ENV, proxy_set_buffer_bytes),
    (ENV, proxy_get_header_map_pairs),
    (ENV, proxy_get_header_map_size),
    (ENV, proxy_set_header_map_pairs),
    (ENV, proxy_get_header_map_value),
    (ENV, proxy_add_header_map_value),
    (ENV, proxy_replace_header_map_value),
    (ENV, proxy_remove_header_map_value),
    (ENV, proxy_get_property),
    (ENV, proxy_set_property),
    (ENV, proxy_send_local_response),
    (ENV, proxy_get_shared_data),
    (ENV, proxy_set_shared_data),
    (ENV, proxy_register_shared_queue),
    (ENV, proxy_resolve_shared_queue),
    (ENV, proxy_enqueue_shared_queue),
    (ENV, proxy_dequeue_shared_queue),
    (ENV, proxy_http_call),
    (ENV, proxy_define_metric),
    (ENV, proxy_increment_metric),
    (ENV, proxy_record_metric),
    (ENV, proxy_get_metric),
    (ENV, proxy_set_effective_context),
    (ENV, proxy_continue_stream),
    (ENV, proxy_close_stream),
    (ENV, proxy_done),
    (ENV, proxy_call_foreign_function),
    (WASI, fd_write),
    (WASI, clock_time_get),
    (WASI, random_get),
    (WASI, environ_get),
    (WASI, environ_sizes_get),
    (WASI, args_get),
    (WASI, args_sizes_get),
    (WASI, proc_exit),
    (WASI, sched_yield),
];

/// Links every row of [`EXPORTS`]; anything else the module imports traps with its own name when
/// called.
pub(crate) fn link(linker: &mut Linker<HostState>, module: &Module) -> Result<()> {
    for export in EXPORTS {
        (export.link)(linker)?;
    }
    for import in module.imports() {
        let implemented = EXPORTS.iter().any(|e| e.module == import.module() && e.name == import.name());
        if let (wasmtime::ExternType::Func(ty), false) = (import.ty(), implemented) {
            let call = format!("{}.{}", import.module(), import.name());
            linker.func_new(import.module(), import.name(), ty, move |_, _, _| {
                Err(Error::msg(format!(
                    "{call}: the plugin called a host function the test harness does not implement"
                )))
            })?;
        }
    }
    Ok(())
}
