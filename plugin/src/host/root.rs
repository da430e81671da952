//! The root context: configuration, the tick, and the snapshot call's answer.
//!
//! Envoy runs a root context in every worker VM and one on the main thread; each ticks. On each
//! tick a VM (1) tries to take the fetch lease and, if it wins, asks the scraper for the pool
//! snapshot with `dispatch_http_call`; (2) re-reads the shared snapshot if its version changed;
//! (3) applies new routing-log events. So the scraper is asked about once per interval whatever
//! the number of workers, and every worker schedules on the same pool and the same memory. Until a
//! VM holds its first snapshot, its requests also look for one in shared data (`Vm::refresh_before_first_snapshot`),
//! so the workers that lost the first lease do not answer 503 until their next tick.

use super::abi::{self, Buffer, LogLevel, Map};
use super::http::Filter;
use super::shared::{self, HostStore};
use super::vm::{Vm, VmRef};
use crate::config::{Mode, PluginConfig};
use crate::director::Director;
use crate::pool::MAX_SNAPSHOT_BYTES;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;

pub struct Root {
    context_id: u32,
    vm: Option<VmRef>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Self { context_id, vm: None }
    }

    fn configure(&mut self, size: usize) -> Result<(), String> {
        let bytes = abi::get_buffer(Buffer::PluginConfiguration, 0, size)
            .map_err(|e| format!("cannot read the plugin configuration: {e}"))?
            .unwrap_or_default();
        let json: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        let config = PluginConfig::from_json(json).map_err(|e| format!("configuration rejected: {e}"))?;
        let envoy_mode = config.mode == Mode::Envoy;
        let refresh_ms = config.pool.refresh_interval_ms;
        // Service Extensions hosts have no properties worth asking for here; the name only scopes
        // shared-data keys, which that mode never uses.
        let plugin_name = if envoy_mode { plugin_name() } else { "default".to_string() };
        let holder = abi::now_nanos().map(|n| (n as u32) ^ self.context_id.rotate_left(16)).unwrap_or(self.context_id);
        let director = Director::new(config).map_err(|e| format!("configuration rejected: {e}"))?;
        let mut vm = Vm::new(director, &plugin_name, holder);
        if envoy_mode {
            vm.open_log();
            if let Err(e) = abi::set_tick_period_ms(u32::try_from(refresh_ms).unwrap_or(u32::MAX).max(1)) {
                abi::log(LogLevel::Warn, &format!("wis: no timer ({e}); the pool snapshot will not refresh"));
            }
        }
        abi::log(
            LogLevel::Info,
            &format!(
                "wis: configured (mode {}, plugin {plugin_name}, {} static endpoints, snapshot cluster {})",
                if envoy_mode { "envoy" } else { "service-extensions" },
                vm.config().pool.endpoints.len(),
                vm.config().pool.snapshot_cluster.as_deref().unwrap_or("none"),
            ),
        );
        self.vm = Some(Rc::new(RefCell::new(vm)));
        Ok(())
    }

    fn tick(vm: &mut Vm) {
        let Ok(now) = abi::now_ms() else { return };
        Self::maybe_fetch(vm, now);
        vm.refresh_snapshot(now);
        vm.sync_log();
        vm.flush_events();
        vm.flush_stats(now);
    }

    /// Starts a snapshot fetch if this VM wins the lease for this interval.
    fn maybe_fetch(vm: &mut Vm, now: u64) {
        let Some(cluster) = vm.config().pool.snapshot_cluster.clone() else { return };
        let timeout_ms = vm.config().pool.fetch_timeout_ms;
        if let Some((_, started)) = vm.fetch_in_flight {
            if now.saturating_sub(started) <= timeout_ms {
                return;
            }
            // The host should have answered by now (with a timeout); forget it and try again.
            vm.fetch_in_flight = None;
        }
        let period = vm.config().pool.refresh_interval_ms.max(1);
        if !shared::try_take_lease(&HostStore, &vm.keys.lease, vm.holder, now, period) {
            return;
        }
        let path = vm.config().pool.snapshot_path.clone();
        let authority = vm.config().pool.snapshot_authority.clone();
        let headers = [
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", authority.as_str()),
            ("accept", "application/json"),
        ];
        // Through the SDK, not `abi`: its dispatcher must register the token to route the answer
        // back to this root context (an unregistered token makes it panic). For this call Envoy
        // answers Ok, BadArgument (no such cluster) or InternalFailure, all of which it returns as
        // values.
        let timeout = std::time::Duration::from_millis(timeout_ms);
        match proxy_wasm::hostcalls::dispatch_http_call(&cluster, headers.to_vec(), None, Vec::new(), timeout) {
            Ok(token) => {
                vm.fetch_in_flight = Some((token, now));
            }
            Err(status) => {
                vm.stats(|s| s.fixed.snapshot_fetch_failed.inc());
                vm.warn(
                    "fetch-dispatch",
                    now,
                    &format!("wis: cannot call the scraper cluster '{cluster}': {status:?}"),
                );
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(vm) = &self.vm else { return };
        let Ok(mut vm) = vm.try_borrow_mut() else { return };
        if vm.fetch_in_flight.map(|(t, _)| t) == Some(token) {
            vm.fetch_in_flight = None;
        }
        let now = abi::now_ms().unwrap_or(0);
        let status = abi::get_header_snapshot(Map::HttpCallResponseHeaders)
            .ok()
            .and_then(|headers| headers.get(":status"))
            .unwrap_or_default();
        let outcome = if status != "200" {
            Err(format!(
                "scraper answered status {:?}",
                if status.is_empty() { "none (timeout or reset)" } else { &status }
            ))
        } else if body_size > MAX_SNAPSHOT_BYTES {
            Err(format!("snapshot of {body_size} bytes exceeds the {MAX_SNAPSHOT_BYTES}-byte limit"))
        } else {
            match abi::get_buffer(Buffer::HttpCallResponseBody, 0, body_size) {
                Ok(Some(body)) => vm.accept_fetched_snapshot(&body),
                Ok(None) => Err("scraper answered with an empty body".to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        match outcome {
            Ok(()) => vm.stats(|s| s.fixed.snapshot_fetch_ok.inc()),
            Err(why) => {
                vm.stats(|s| s.fixed.snapshot_fetch_failed.inc());
                vm.warn("fetch", now, &format!("wis: pool snapshot not updated, routing on the last one: {why}"));
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        match self.configure(plugin_configuration_size) {
            Ok(()) => true,
            Err(why) => {
                // Returning false makes Envoy refuse the configuration: the VM does not start.
                abi::log(LogLevel::Error, &format!("wis: {why}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(vm) = &self.vm
            && let Ok(mut vm) = vm.try_borrow_mut()
        {
            Self::tick(&mut vm);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a configuration there is nothing to decide with; a context that passes
        // everything through keeps traffic flowing (Envoy's fallback policy picks a pool member).
        Some(Box::new(Filter::new(context_id, self.vm.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Envoy's `plugin_name` for this filter instance, to scope shared-data keys.
fn plugin_name() -> String {
    abi::get_property(&["plugin_name"])
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "default".to_string())
}
