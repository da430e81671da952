//! The simulated Envoy: N worker VMs of one module over one shared-data store, a test clock, a
//! scripted cluster manager, and the stream driver that calls the plugin the way Envoy's HTTP
//! filter does.

use crate::abi::{Action, Headers, LogLevel};
use crate::host::{
    self, Event, HostMode, HostState, HttpCall, LocalReply, LogLine, Metric, Phase, Shared, Stream, UpstreamReply,
    UpstreamScript,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};
use wasmtime::{Engine, Extern, Instance, Linker, Module, Store, WasmParams, WasmResults};

/// Why the harness could not do what the test asked: a plugin trap (with its stderr), a refused
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

/// Where the built plugin is: `$WIS_PLUGIN_WASM` (exported by `scripts/common.sh`), else
/// `$CARGO_TARGET_DIR/...`, else the workspace's `target/...`.
pub fn plugin_wasm_path() -> HostResult<PathBuf> {
    const RELATIVE: &str = "wasm32-wasip1/wasm-release/wasm_inference_scheduler.wasm";
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("WIS_PLUGIN_WASM") {
        candidates.push(PathBuf::from(path));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join(RELATIVE));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(RELATIVE));
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        HostError(format!(
            "the plugin .wasm is missing (looked at {}): run ./build.sh first",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    })
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        // Like Envoy's runtimes: optimised code, so the benchmark measures what production runs.
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        Engine::new(&config).expect("wasmtime engine with the default configuration")
    })
}

/// Compiles a module once per process and hands out clones. A module read from a file is also
/// cached on disk beside it (`<file>.<hash>.cwasm`): a debug build of Cranelift takes ~15 s for
/// the plugin, and every test binary would pay it again.
fn compile(bytes: &[u8], file: Option<&Path>) -> HostResult<Module> {
    static MODULES: OnceLock<Mutex<HashMap<u64, Module>>> = OnceLock::new();
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    let key = hasher.finish();
    // Held while compiling: tests starting together wait for one compile instead of each doing it.
    let mut modules = MODULES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(module) = modules.get(&key) {
        return Ok(module.clone());
    }
    let cache = file.map(|f| f.with_extension(format!("{key:016x}.cwasm")));
    // SAFETY: the file is one this harness serialized from the same bytes with the same engine
    // configuration (the name carries their hash); wasmtime still checks the engine's version
    // and settings and refuses a mismatch, in which case we compile afresh.
    let cached =
        cache.as_ref().filter(|c| c.is_file()).and_then(|c| unsafe { Module::deserialize_file(engine(), c) }.ok());
    let module = match cached {
        Some(module) => module,
        None => {
            let module =
                Module::new(engine(), bytes).map_err(|e| HostError(format!("the module does not compile: {e:#}")))?;
            if let (Some(cache), Ok(serialized)) = (&cache, module.serialize()) {
                // Write then rename, so a concurrent test binary never reads half a file.
                let partial = cache.with_extension(format!("partial.{}", std::process::id()));
                if std::fs::write(&partial, serialized).is_ok() && std::fs::rename(&partial, cache).is_ok() {
                    remove_stale_caches(cache);
                }
            }
            module
        }
    };
    modules.insert(key, module.clone());
    Ok(module)
}

/// Removes caches of earlier builds of the same file (`<stem>.<other hash>.cwasm`).
fn remove_stale_caches(current: &Path) {
    let (Some(dir), Some(name)) = (current.parent(), current.file_name().and_then(|n| n.to_str())) else { return };
    let Some(stem) = name.split('.').next() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let other = entry.file_name();
        let Some(other) = other.to_str() else { continue };
        if other != name && other.starts_with(&format!("{stem}.")) && other.ends_with(".cwasm") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

enum WasmSource {
    Plugin,
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Configures an [`Envoy`]: the module, the workers, the plugin's configuration and what the host
/// knows (clusters, properties, mode).
pub struct EnvoyBuilder {
    wasm: WasmSource,
    workers: usize,
    plugin_config: Vec<u8>,
    vm_config: Vec<u8>,
    mode: HostMode,
    plugin_name: String,
    root_id: String,
    vm_id: String,
    properties: BTreeMap<String, Vec<u8>>,
    clusters: BTreeMap<String, UpstreamScript>,
    start_ms: u64,
    echo_logs: bool,
    request_buffer_limit: Option<usize>,
}

impl EnvoyBuilder {
    /// The `.wasm` under test; default: the built plugin ([`plugin_wasm_path`]).
    pub fn wasm_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.wasm = WasmSource::File(path.into());
        self
    }

    /// A module given as bytes (e.g. `wat::parse_str(..)` output).
    pub fn wasm_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.wasm = WasmSource::Bytes(bytes.into());
        self
    }

    /// Worker threads, each with its own VM (Envoy's `--concurrency`). Default 1.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// `PluginConfig.configuration` (a JSON string, or a `serde_json::Value`).
    pub fn plugin_config(mut self, config: impl ToString) -> Self {
        self.plugin_config = config.to_string().into_bytes();
        self
    }

    pub fn vm_config(mut self, config: impl ToString) -> Self {
        self.vm_config = config.to_string().into_bytes();
        self
    }

    /// A Service Extensions host: refuses timers, shared data, queues, metrics and HTTP calls.
    pub fn service_extensions(mut self) -> Self {
        self.mode = HostMode::ServiceExtensions;
        self
    }

    /// `plugin_name` property (Envoy's `PluginConfig.name`). Default `wis`.
    pub fn plugin_name(mut self, name: &str) -> Self {
        self.plugin_name = name.to_string();
        self
    }

    pub fn root_id(mut self, id: &str) -> Self {
        self.root_id = id.to_string();
        self
    }

    pub fn vm_id(mut self, id: &str) -> Self {
        self.vm_id = id.to_string();
        self
    }

    /// A property every context can read, by its dotted path (e.g. `xds.cluster_name`).
    pub fn property(mut self, path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.insert(path.to_string(), value.into());
        self
    }

    /// A cluster the plugin may call; with nothing scripted it answers 503 (no healthy upstream).
    pub fn cluster(mut self, name: &str) -> Self {
        self.clusters.entry(name.to_string()).or_default();
        self
    }

    /// Unix milliseconds on the test clock at start. Default 1 700 000 000 000.
    pub fn start_ms(mut self, ms: u64) -> Self {
        self.start_ms = ms;
        self
    }

    /// Do not echo the plugin's log lines to stderr (the benchmark).
    pub fn quiet(mut self) -> Self {
        self.echo_logs = false;
        self
    }

    /// Envoy's buffer limit for a request body held by a filter (`per_connection_buffer_limit_bytes`):
    /// beyond it Envoy itself answers 413. Default: no limit.
    pub fn request_buffer_limit(mut self, bytes: usize) -> Self {
        self.request_buffer_limit = Some(bytes);
        self
    }

    /// Loads the module in every worker and starts it as Envoy does: `_initialize` (or `_start`),
    /// root context, `proxy_on_vm_start`, `proxy_on_configure`. A VM that refuses its
    /// configuration is an error carrying the plugin's log.
    pub fn build(self) -> HostResult<Envoy> {
        let (bytes, file) = match &self.wasm {
            WasmSource::Plugin => {
                let path = plugin_wasm_path()?;
                (
                    std::fs::read(&path).map_err(|e| HostError(format!("cannot read {}: {e}", path.display())))?,
                    Some(path),
                )
            }
            WasmSource::File(path) => (
                std::fs::read(path).map_err(|e| HostError(format!("cannot read {}: {e}", path.display())))?,
                Some(path.clone()),
            ),
            WasmSource::Bytes(bytes) => (bytes.clone(), None),
        };
        let module = compile(&bytes, file.as_deref())?;
        let abi = ["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"];
        if !module.exports().any(|e| abi.contains(&e.name())) {
            return Err(HostError("the module exports no proxy_abi_version_0_2_1 (or 0_2_0) marker".into()));
        }
        let mut shared = Shared::new(self.mode, self.start_ms, self.vm_id.clone());
        shared.echo_logs = self.echo_logs;
        shared.clusters = self.clusters;
        let shared = Rc::new(RefCell::new(shared));
        let mut linker = Linker::new(engine());
        host::link(&mut linker, &module).map_err(|e| HostError(format!("linking the host functions failed: {e:#}")))?;
        let mut properties = self.properties;
        properties.entry("plugin_name".into()).or_insert_with(|| self.plugin_name.clone().into_bytes());
        properties.entry("plugin_root_id".into()).or_insert_with(|| self.root_id.clone().into_bytes());
        properties.entry("plugin_vm_id".into()).or_insert_with(|| self.vm_id.clone().into_bytes());
        let mut vms = Vec::with_capacity(self.workers);
        for index in 0..self.workers {
            let mut state = HostState::new(index, shared.clone(), ROOT_CONTEXT_ID);
            state.vm_config = self.vm_config.clone();
            state.plugin_config = self.plugin_config.clone();
            state.plugin_properties = properties.clone();
            let mut store = Store::new(engine(), state);
            let instance = linker
                .instantiate(&mut store, &module)
                .map_err(|e| HostError(format!("vm{index}: instantiation failed: {e:#}")))?;
            let mut vm = Vm { store, instance, next_context: ROOT_CONTEXT_ID + 1, crashed: None };
            vm.start(self.vm_config.len(), self.plugin_config.len())?;
            vms.push(vm);
        }
        let mut inner = Inner { vms, shared, request_buffer_limit: self.request_buffer_limit };
        // What the start-up posted to the dispatcher (e.g. queue notifications) runs now.
        inner.settle()?;
        Ok(Envoy { inner: Rc::new(RefCell::new(inner)) })
    }
}

/// Envoy's first context id in a VM is the root context's.
const ROOT_CONTEXT_ID: u32 = 1;

pub(crate) struct Vm {
    pub store: Store<HostState>,
    instance: Instance,
    next_context: u32,
    crashed: Option<String>,
}

impl Vm {
    fn index(&self) -> usize {
        self.store.data().vm
    }

    fn start(&mut self, vm_config_len: usize, plugin_config_len: usize) -> HostResult<()> {
        let has = |vm: &mut Vm, name: &str| vm.instance.get_export(&mut vm.store, name).is_some();
        if has(self, "_initialize") {
            self.call::<(), ()>("_initialize", Phase::Idle, ROOT_CONTEXT_ID, ())?;
            if has(self, "main") {
                self.call::<(i32, i32), i32>("main", Phase::Idle, ROOT_CONTEXT_ID, (0, 0))?;
            }
        } else {
            self.call::<(), ()>("_start", Phase::Idle, ROOT_CONTEXT_ID, ())?;
        }
        let root = ROOT_CONTEXT_ID as i32;
        self.call::<(i32, i32), ()>("proxy_on_context_create", Phase::Idle, ROOT_CONTEXT_ID, (root, 0))?;
        let started = self.call::<(i32, i32), i32>(
            "proxy_on_vm_start",
            Phase::VmStart,
            ROOT_CONTEXT_ID,
            (root, vm_config_len as i32),
        )?;
        if started == Some(0) {
            return Err(self.refusal("proxy_on_vm_start returned false"));
        }
        let configured = self.call::<(i32, i32), i32>(
            "proxy_on_configure",
            Phase::Configure,
            ROOT_CONTEXT_ID,
            (root, plugin_config_len as i32),
        )?;
        if configured == Some(0) {
            return Err(self.refusal("proxy_on_configure returned false: the plugin rejected its configuration"));
        }
        Ok(())
    }

    fn refusal(&self, what: &str) -> HostError {
        let vm = self.index();
        let logs: Vec<String> = self
            .store
            .data()
            .shared
            .borrow()
            .logs
            .iter()
            .filter(|l| l.vm == vm)
            .map(|l| format!("  [{:?}] {}", l.level, l.message))
            .collect();
        HostError(format!("vm{vm}: {what}; the plugin logged:\n{}", logs.join("\n")))
    }

    /// Calls an export with `context` as the effective context. `Ok(None)` when the module does not
    /// export it (every callback is optional). A trap marks the VM crashed, as Envoy does.
    pub fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &str,
        phase: Phase,
        context: u32,
        params: P,
    ) -> HostResult<Option<R>> {
        let vm = self.index();
        if let Some(why) = &self.crashed {
            return Err(HostError(format!("vm{vm}: {name} not called: the VM crashed earlier: {why}")));
        }
        let Some(func) = self.instance.get_export(&mut self.store, name).and_then(Extern::into_func) else {
            return Ok(None);
        };
        let func = func
            .typed::<P, R>(&self.store)
            .map_err(|e| HostError(format!("vm{vm}: export {name} has an unexpected signature: {e:#}")))?;
        let logs_before = self.store.data().shared.borrow().logs.len();
        {
            let state = self.store.data_mut();
            state.phase = phase;
            state.effective = context;
        }
        let result = func.call(&mut self.store, params);
        let state = self.store.data_mut();
        state.phase = Phase::Idle;
        state.effective = state.root_id;
        state.flush_output(true);
        match result {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                let stderr: Vec<String> = state.shared.borrow().logs[logs_before..]
                    .iter()
                    .filter(|l| l.vm == vm && l.level >= LogLevel::Error)
                    .map(|l| l.message.clone())
                    .collect();
                let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                let message = format!(
                    "vm{vm}: {name}(context {context}) trapped: {}{}",
                    chain.join(": "),
                    if stderr.is_empty() {
                        String::new()
                    } else {
                        format!("\nplugin stderr/errors:\n  {}", stderr.join("\n  "))
                    }
                );
                self.crashed = Some(message.clone());
                Err(HostError(message))
            }
        }
    }

    fn stream(&mut self, id: u32) -> HostResult<&mut Stream> {
        let vm = self.index();
        self.store.data_mut().streams.get_mut(&id).ok_or_else(|| HostError(format!("vm{vm}: no stream {id}")))
    }
}

pub(crate) struct Inner {
    pub vms: Vec<Vm>,
    pub shared: Rc<RefCell<Shared>>,
    request_buffer_limit: Option<usize>,
}

/// A simulated Envoy running the plugin. Cheap to clone (a handle); single-threaded like one
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
    #[allow(clippy::new_ret_no_self)] // the story reads `Envoy::new().workers(2)...build()`
    pub fn new() -> EnvoyBuilder {
        EnvoyBuilder {
            wasm: WasmSource::Plugin,
            workers: 1,
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            mode: HostMode::Envoy,
            plugin_name: "wis".into(),
            root_id: String::new(),
            vm_id: String::new(),
            properties: BTreeMap::new(),
            clusters: BTreeMap::new(),
            start_ms: 1_700_000_000_000,
            echo_logs: true,
            request_buffer_limit: None,
        }
    }

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
    /// time order (ties: answers first, then ticks by worker). Panics if the plugin traps.
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

    /// One counter or gauge; panics naming the defined metrics if the plugin never defined it.
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

impl Inner {
    /// Runs every event and tick due at or before `target_ns`, in time order.
    fn run_until(&mut self, target_ns: u64) -> HostResult<()> {
        loop {
            let next_event = self.shared.borrow().events.keys().next().copied().filter(|(t, _)| *t <= target_ns);
            let next_tick = self
                .vms
                .iter()
                .enumerate()
                .filter_map(|(i, vm)| vm.store.data().next_tick_ns.map(|t| (t, i)))
                .filter(|(t, _)| *t <= target_ns)
                .min();
            match (next_event, next_tick) {
                (Some((te, seq)), tick) if tick.is_none_or(|(tt, _)| te <= tt) => {
                    let event = {
                        let mut shared = self.shared.borrow_mut();
                        shared.now_ns = shared.now_ns.max(te);
                        shared.events.remove(&(te, seq))
                    };
                    if let Some(event) = event {
                        self.run_event(event)?;
                    }
                }
                (_, Some((tt, vm))) => {
                    {
                        let mut shared = self.shared.borrow_mut();
                        shared.now_ns = shared.now_ns.max(tt);
                    }
                    let state = self.vms[vm].store.data_mut();
                    state.next_tick_ns = Some(tt + u64::from(state.tick_period_ms) * 1_000_000);
                    let root = state.root_id;
                    self.vms[vm].call::<i32, ()>("proxy_on_tick", Phase::Tick, root, root as i32)?;
                    self.after_event(vm)?;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Runs what is due now (e.g. queue-ready notifications) without moving the clock.
    pub(crate) fn settle(&mut self) -> HostResult<()> {
        let now = self.shared.borrow().now_ns;
        self.run_until(now)
    }

    fn run_event(&mut self, event: Event) -> HostResult<()> {
        match event {
            Event::HttpCallDone { vm, context_id, token, response } => {
                let (headers, body) = match response {
                    Some((headers, body)) => (Some(headers), body),
                    None => (None, Vec::new()),
                };
                let num_headers = headers.as_ref().map_or(0, Vec::len);
                let body_len = body.len();
                self.vms[vm].store.data_mut().call_response = Some((headers, body));
                let params = (context_id as i32, token as i32, num_headers as i32, body_len as i32, 0i32);
                let result = self.vms[vm].call::<(i32, i32, i32, i32, i32), ()>(
                    "proxy_on_http_call_response",
                    Phase::HttpCallResponse { token },
                    context_id,
                    params,
                );
                self.vms[vm].store.data_mut().call_response = None;
                result?;
                self.after_event(vm)
            }
            Event::QueueReady { vm, context_id, queue_id } => {
                self.vms[vm].call::<(i32, i32), ()>(
                    "proxy_on_queue_ready",
                    Phase::Idle,
                    context_id,
                    (context_id as i32, queue_id as i32),
                )?;
                self.after_event(vm)
            }
        }
    }

    /// After a callback not tied to one stream: act on what the plugin asked of any stream.
    fn after_event(&mut self, vm: usize) -> HostResult<()> {
        let ids: Vec<u32> = self.vms[vm].store.data().streams.keys().copied().collect();
        for id in ids {
            self.after_stream_callback(vm, id)?;
        }
        Ok(())
    }

    pub(crate) fn new_stream(&mut self, vm: usize) -> HostResult<u32> {
        let v = &mut self.vms[vm];
        let id = v.next_context;
        v.next_context += 1;
        v.store.data_mut().streams.insert(id, Stream::default());
        let root = v.store.data().root_id;
        v.call::<(i32, i32), ()>("proxy_on_context_create", Phase::Stream, id, (id as i32, root as i32))?;
        Ok(id)
    }

    fn stream_call(&mut self, vm: usize, id: u32, name: &str, params: (i32, i32, i32)) -> HostResult<Action> {
        self.vms[vm].stream(id)?.callbacks.push(name.to_string());
        let result = self.vms[vm].call::<(i32, i32, i32), i32>(name, Phase::Stream, id, params)?;
        Ok(result.map_or(Action::Continue, Action::from_word))
    }

    /// Request headers arrive from the client.
    pub(crate) fn request_headers(
        &mut self,
        vm: usize,
        id: u32,
        headers: Headers,
        end_of_stream: bool,
    ) -> HostResult<()> {
        let n = headers.len();
        {
            let stream = self.vms[vm].stream(id)?;
            stream.request_headers = headers;
            stream.request_eos = end_of_stream;
        }
        let action =
            self.stream_call(vm, id, "proxy_on_request_headers", (id as i32, n as i32, end_of_stream as i32))?;
        let stream = self.vms[vm].stream(id)?;
        if action == Action::Continue && stream.local_reply.is_none() && !stream.close_requested {
            release_request_headers(stream);
        }
        self.after_stream_callback(vm, id)
    }

    /// One request body chunk arrives. Envoy semantics: while the filter paused on the previous
    /// chunk (StopIterationAndBuffer) the chunks accumulate and the filter sees the whole buffer;
    /// once it continued, the buffer went upstream and the next call sees only the new chunk.
    pub(crate) fn request_body(&mut self, vm: usize, id: u32, chunk: &[u8], end_of_stream: bool) -> HostResult<()> {
        let limit = self.request_buffer_limit;
        let size = {
            let stream = self.vms[vm].stream(id)?;
            if stream.ended || stream.local_reply.is_some() || stream.reset {
                // Envoy no longer runs the filter on a stream it answered or reset.
                return Ok(());
            }
            stream.request_eos = end_of_stream;
            let buffer = stream.request_body.get_or_insert_with(Vec::new);
            if !stream.request_body_held {
                buffer.clear();
            }
            buffer.extend_from_slice(chunk);
            buffer.len()
        };
        let action =
            self.stream_call(vm, id, "proxy_on_request_body", (id as i32, size as i32, end_of_stream as i32))?;
        let stream = self.vms[vm].stream(id)?;
        if stream.local_reply.is_none() && !stream.close_requested {
            if action == Action::Continue {
                forward_request_body(stream);
            } else {
                stream.request_body_held = true;
                let held = stream.request_body.as_ref().map_or(0, Vec::len);
                if let Some(limit) = limit
                    && held > limit
                {
                    // Envoy's own answer when a filter buffers past the limit.
                    stream.local_reply = Some(LocalReply {
                        status: 413,
                        details: "request_payload_too_large".into(),
                        headers: vec![("content-type".into(), "text/plain".into())],
                        body: b"Payload Too Large".to_vec(),
                        grpc_status: -1,
                        from_host: true,
                    });
                }
            }
        }
        self.after_stream_callback(vm, id)
    }

    /// The upstream answers: headers, then body chunks; then the stream ends.
    pub(crate) fn respond(
        &mut self,
        vm: usize,
        id: u32,
        upstream_address: Option<String>,
        headers: Headers,
        chunks: Vec<Vec<u8>>,
    ) -> HostResult<()> {
        {
            let stream = self.vms[vm].stream(id)?;
            if stream.upstream_headers.is_none() {
                return Err(HostError(format!(
                    "vm{vm} stream {id}: cannot respond: the request never went upstream ({})",
                    describe_request_state(stream)
                )));
            }
            if let Some(address) = upstream_address {
                stream.properties.insert("upstream.address".into(), address.into_bytes());
            }
            stream.response_headers = Some(headers);
            stream.response_eos = chunks.is_empty();
        }
        let n = self.vms[vm].stream(id)?.response_headers.as_ref().map_or(0, Vec::len);
        let eos = chunks.is_empty();
        let action = self.stream_call(vm, id, "proxy_on_response_headers", (id as i32, n as i32, eos as i32))?;
        {
            let stream = self.vms[vm].stream(id)?;
            if action == Action::Continue && stream.local_reply.is_none() {
                release_response_headers(stream);
            }
        }
        self.after_stream_callback(vm, id)?;
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let eos = i + 1 == count;
            let size = {
                let stream = self.vms[vm].stream(id)?;
                if stream.ended || stream.reset || stream.local_reply.is_some() {
                    break;
                }
                stream.response_eos = eos;
                let buffer = stream.response_body.get_or_insert_with(Vec::new);
                if !stream.response_body_held {
                    buffer.clear();
                }
                buffer.extend_from_slice(&chunk);
                buffer.len()
            };
            let action = self.stream_call(vm, id, "proxy_on_response_body", (id as i32, size as i32, eos as i32))?;
            let stream = self.vms[vm].stream(id)?;
            if stream.local_reply.is_none() {
                if action == Action::Continue {
                    forward_response_body(stream);
                } else {
                    stream.response_body_held = true;
                }
            }
            self.after_stream_callback(vm, id)?;
        }
        let ended = self.vms[vm].stream(id).map(|s| s.ended).unwrap_or(true);
        if !ended {
            self.end_stream(vm, id)?;
        }
        Ok(())
    }

    /// The client or the upstream reset the stream: no more request or response callbacks; Envoy
    /// still writes its access log (`proxy_on_log`) and destroys the context.
    pub(crate) fn reset(&mut self, vm: usize, id: u32) -> HostResult<()> {
        let stream = self.vms[vm].stream(id)?;
        if stream.ended {
            return Ok(());
        }
        stream.reset = true;
        self.end_stream(vm, id)
    }

    /// Acts on what the plugin asked during a callback on stream `id`: a local reply, a resumed
    /// request or response, a closed stream, a finished `proxy_done`.
    fn after_stream_callback(&mut self, vm: usize, id: u32) -> HostResult<()> {
        let Ok(stream) = self.vms[vm].stream(id) else { return Ok(()) };
        if stream.ended {
            return Ok(());
        }
        if stream.close_requested && !stream.reset {
            stream.reset = true;
            return self.end_stream(vm, id);
        }
        if stream.local_reply.is_some() && !stream.local_reply_delivered {
            return self.deliver_local_reply(vm, id);
        }
        if stream.continue_request {
            stream.continue_request = false;
            forward_request_body(stream);
        }
        if stream.continue_response {
            stream.continue_response = false;
            forward_response_body(stream);
        }
        if stream.done_called {
            return self.delete_stream(vm, id);
        }
        Ok(())
    }

    /// Envoy sends a local reply through the encoder filters, this one included, then ends the stream.
    fn deliver_local_reply(&mut self, vm: usize, id: u32) -> HostResult<()> {
        let (n, has_body) = {
            let stream = self.vms[vm].stream(id)?;
            stream.local_reply_delivered = true;
            let reply = stream.local_reply.clone().unwrap_or_else(unreachable_reply);
            let mut headers = vec![(":status".to_string(), reply.status.to_string())];
            headers.extend(reply.headers.iter().cloned());
            if !reply.body.is_empty() {
                if !headers.iter().any(|(k, _)| k == "content-type") {
                    headers.push(("content-type".into(), "text/plain".into()));
                }
                headers.push(("content-length".into(), reply.body.len().to_string()));
            }
            stream.response_headers = Some(headers);
            stream.response_body = None;
            stream.response_body_held = false;
            stream.request_body = None;
            (stream.response_headers.as_ref().map_or(0, Vec::len), !reply.body.is_empty())
        };
        self.stream_call(vm, id, "proxy_on_response_headers", (id as i32, n as i32, (!has_body) as i32))?;
        {
            let stream = self.vms[vm].stream(id)?;
            stream.client_headers = stream.response_headers.clone();
            stream.response_started = true;
        }
        if has_body {
            let body = self.vms[vm].stream(id)?.local_reply.as_ref().map(|r| r.body.clone()).unwrap_or_default();
            let size = body.len();
            self.vms[vm].stream(id)?.response_body = Some(body);
            self.stream_call(vm, id, "proxy_on_response_body", (id as i32, size as i32, 1))?;
            let stream = self.vms[vm].stream(id)?;
            stream.client_body = stream.response_body.take().unwrap_or_default();
        }
        self.vms[vm].stream(id)?.response_complete = true;
        self.end_stream(vm, id)
    }

    /// End of the stream: access log, done, delete (Envoy's order).
    fn end_stream(&mut self, vm: usize, id: u32) -> HostResult<()> {
        {
            let stream = self.vms[vm].stream(id)?;
            if stream.ended || stream.logged {
                return Ok(());
            }
            stream.logged = true;
        }
        self.vms[vm].stream(id)?.callbacks.push("proxy_on_log".into());
        self.vms[vm].call::<i32, ()>("proxy_on_log", Phase::Stream, id, id as i32)?;
        self.vms[vm].stream(id)?.callbacks.push("proxy_on_done".into());
        let done = self.vms[vm].call::<i32, i32>("proxy_on_done", Phase::Stream, id, id as i32)?;
        if done == Some(0) {
            // The plugin keeps the context until it calls proxy_done.
            self.vms[vm].stream(id)?.done_pending = true;
            return Ok(());
        }
        self.delete_stream(vm, id)
    }

    fn delete_stream(&mut self, vm: usize, id: u32) -> HostResult<()> {
        {
            let stream = self.vms[vm].stream(id)?;
            stream.ended = true;
            stream.done_called = false;
            stream.callbacks.push("proxy_on_delete".into());
        }
        self.vms[vm].call::<i32, ()>("proxy_on_delete", Phase::Stream, id, id as i32)?;
        Ok(())
    }

    /// Forgets an ended stream (the exchange took what it needed).
    pub(crate) fn forget(&mut self, vm: usize, id: u32) {
        let streams = &mut self.vms[vm].store.data_mut().streams;
        if streams.get(&id).is_some_and(|s| s.ended) {
            streams.remove(&id);
        }
    }
}

fn unreachable_reply() -> LocalReply {
    LocalReply {
        status: 500,
        details: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
        grpc_status: -1,
        from_host: true,
    }
}

fn release_request_headers(stream: &mut Stream) {
    if stream.upstream_headers.is_none() {
        stream.upstream_headers = Some(stream.request_headers.clone());
        // Headers-only request: it is complete once the headers go.
        if stream.request_eos && stream.request_body.is_none() {
            stream.request_complete = true;
        }
    }
}

/// Continue on the request: headers (if still held) and the buffered body go upstream.
fn forward_request_body(stream: &mut Stream) {
    release_request_headers(stream);
    if let Some(body) = stream.request_body.take() {
        stream.upstream_body.extend_from_slice(&body);
    }
    stream.request_body_held = false;
    if stream.request_eos {
        stream.request_complete = true;
    }
}

fn release_response_headers(stream: &mut Stream) {
    if stream.client_headers.is_none() {
        stream.client_headers = stream.response_headers.clone();
        stream.response_started = true;
        if stream.response_eos && stream.response_body.is_none() {
            stream.response_complete = true;
        }
    }
}

fn forward_response_body(stream: &mut Stream) {
    release_response_headers(stream);
    if let Some(body) = stream.response_body.take() {
        stream.client_body.extend_from_slice(&body);
    }
    stream.response_body_held = false;
    if stream.response_eos {
        stream.response_complete = true;
    }
}

pub(crate) fn describe_request_state(stream: &Stream) -> String {
    if let Some(reply) = &stream.local_reply {
        return format!("the filter replied locally with {} {}", reply.status, String::from_utf8_lossy(&reply.body));
    }
    if stream.reset {
        return "the stream was reset".into();
    }
    match (&stream.upstream_headers, stream.request_eos) {
        (None, true) => "the filter paused the request at end of stream and never resumed it".into(),
        (None, false) => "the filter holds the request headers and the client has not finished sending".into(),
        (Some(_), _) if !stream.request_complete && stream.request_eos => {
            "the headers went upstream but the filter holds the end of the body".into()
        }
        _ => "forwarded".into(),
    }
}
