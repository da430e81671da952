//! The simulated Envoy: N worker VMs of one module over one shared-data store, a test clock, a
//! scripted cluster manager, and the stream driver that calls the module the way Envoy's HTTP
//! filter does.
//!
//! - `builder`: [`EnvoyBuilder`], what a test configures, and the VMs' start-up.
//! - `module`: the wasmtime engine and the compile cache.
//! - `vm`: one worker's VM and every call into it.
//! - `dispatcher`: the clock: ticks and posted events in time order.
//! - `filter_chain`: one stream through the filter, as Envoy's HTTP filter manager drives it.

mod builder;
mod dispatcher;
mod filter_chain;
mod module;
mod vm;

pub use builder::EnvoyBuilder;
pub(crate) use dispatcher::Inner;
pub(crate) use filter_chain::describe_request_state;

use crate::host::{HttpCall, LogLine, Metric, Phase, Shared, UpstreamReply, UpstreamScript};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use vm::ROOT_CONTEXT_ID;
use wasmtime::{WasmParams, WasmResults};

/// Why the harness could not do what the test asked: a module trap (with its stderr), a refused
/// call, a rejected configuration, a missing `.wasm`.
#[derive(Clone, PartialEq, Eq)]
pub struct HostError(pub String);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tests `unwrap()`/`expect()` these: print the message itself, newlines included.
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostError {}

pub type HostResult<T> = Result<T, HostError>;

/// A simulated Envoy running a module. Cheap to clone (a handle); single-threaded like one
/// Envoy dispatcher per worker, run in turn on the test's thread.
#[derive(Clone)]
pub struct Envoy {
    pub(crate) inner: Rc<RefCell<Inner>>,
}

/// One worker's view: where requests arrive.
#[derive(Clone)]
pub struct Worker {
    pub(crate) envoy: Envoy,
    pub(crate) vm: usize,
}

impl Envoy {
    pub fn worker(&self, index: usize) -> Worker {
        let workers = self.inner.borrow().vms.len();
        assert!(index < workers, "worker {index} does not exist: this Envoy has {workers} worker(s)");
        Worker { envoy: self.clone(), vm: index }
    }

    pub fn workers(&self) -> usize {
        self.inner.borrow().vms.len()
    }

    fn shared(&self) -> Rc<RefCell<Shared>> {
        self.inner.borrow().shared.clone()
    }

    /// Unix milliseconds on the test clock.
    pub fn now_ms(&self) -> u64 {
        self.shared().borrow().now_ms()
    }

    /// Moves the clock forward, firing every tick and every HTTP-call answer that falls due, in
    /// time order (ties: answers first, then ticks by worker). Panics if the module traps.
    pub fn advance_ms(&self, ms: u64) {
        self.try_advance_ms(ms).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn try_advance_ms(&self, ms: u64) -> HostResult<()> {
        let mut inner = self.inner.borrow_mut();
        let target = inner.shared.borrow().now_ns + ms * 1_000_000;
        inner.run_until(target)?;
        inner.shared.borrow_mut().now_ns = target;
        Ok(())
    }

    /// The scripted upstream of a cluster (declaring it if needed).
    pub fn upstream(&self, cluster: &str) -> UpstreamHandle {
        self.shared().borrow_mut().clusters.entry(cluster.to_string()).or_default();
        UpstreamHandle { envoy: self.clone(), cluster: cluster.to_string() }
    }

    /// Every `proxy_http_call` made so far.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.shared().borrow().http_calls.clone()
    }

    /// Counters and gauges by name (Envoy shows them as `wasmcustom.<name>`), summed over workers.
    pub fn stats(&self) -> BTreeMap<String, i64> {
        let shared = self.shared();
        let shared = shared.borrow();
        shared.metrics.iter().filter(|(_, m)| m.samples.is_empty()).map(|(k, m)| (k.clone(), m.value)).collect()
    }

    /// One counter or gauge; panics naming the defined metrics if the module never defined it.
    pub fn stat(&self, name: &str) -> i64 {
        let shared = self.shared();
        let shared = shared.borrow();
        match shared.metrics.get(name) {
            Some(metric) => metric.value,
            None => panic!(
                "the plugin defined no metric {name:?}; it defined: {}",
                shared.metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    pub fn metric(&self, name: &str) -> Option<Metric> {
        self.shared().borrow().metrics.get(name).cloned()
    }

    /// Every shared-data entry: key → (value, CAS).
    pub fn shared_data(&self) -> BTreeMap<String, (Vec<u8>, u32)> {
        self.shared().borrow().shared_data.clone()
    }

    /// Bytes of shared data held (keys plus values), what Envoy keeps for the plugin process-wide.
    pub fn shared_data_bytes(&self) -> usize {
        self.shared().borrow().shared_data.iter().map(|(k, (v, _))| k.len() + v.len()).sum()
    }

    pub fn logs(&self) -> Vec<LogLine> {
        self.shared().borrow().logs.clone()
    }

    /// Log lines containing `needle`.
    pub fn logs_containing(&self, needle: &str) -> Vec<String> {
        self.logs().into_iter().filter(|l| l.message.contains(needle)).map(|l| l.message).collect()
    }

    /// Tick period the worker's root context set (0 = none).
    pub fn tick_period_ms(&self, worker: usize) -> u32 {
        self.inner.borrow().vms[worker].store.data().tick_period_ms
    }

    /// Live streams on a worker (created, not yet deleted).
    pub fn live_streams(&self, worker: usize) -> usize {
        self.inner.borrow().vms[worker].store.data().streams.len()
    }

    /// Calls any export of one worker's VM with the root context effective (harness tests).
    pub fn call_export<P: WasmParams, R: WasmResults>(
        &self,
        worker: usize,
        name: &str,
        params: P,
    ) -> HostResult<Option<R>> {
        self.inner.borrow_mut().vms[worker].call(name, Phase::Idle, ROOT_CONTEXT_ID, params)
    }
}

/// Scripts what a cluster answers.
pub struct UpstreamHandle {
    envoy: Envoy,
    cluster: String,
}

impl UpstreamHandle {
    /// The answer to every call from now on (after any one-shot answers).
    pub fn always(&self, reply: UpstreamReply) -> &Self {
        self.with(|s| s.always = Some(reply));
        self
    }

    /// The answer to the next call only.
    pub fn then(&self, reply: UpstreamReply) -> &Self {
        self.with(|s| s.once.push_back(reply));
        self
    }

    fn with(&self, f: impl FnOnce(&mut UpstreamScript)) {
        let shared = self.envoy.shared();
        let mut shared = shared.borrow_mut();
        f(shared.clusters.entry(self.cluster.clone()).or_default());
    }
}
