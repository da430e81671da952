//! [`EnvoyBuilder`]: the module, the workers, the plugin's configuration and what the host knows
//! (clusters, properties, mode), then the VMs started as Envoy starts them.

use super::dispatcher::Inner;
use super::module::{compile, engine};
use super::vm::{ROOT_CONTEXT_ID, Vm};
use super::{Envoy, HostError, HostResult};
use crate::host::{self, HostMode, HostState, Shared, UpstreamScript};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use wasmtime::{Linker, Store};

/// Where the module comes from.
enum WasmSource {
    Unset,
    File(PathBuf),
    /// A file found when the Envoy is built (e.g. a build output that may be missing).
    Located(fn() -> HostResult<PathBuf>),
    Bytes(Vec<u8>),
}

impl WasmSource {
    /// The module's bytes, and the file they came from (for the compile cache).
    fn load(&self) -> HostResult<(Vec<u8>, Option<PathBuf>)> {
        let read = |path: PathBuf| match std::fs::read(&path) {
            Ok(bytes) => Ok((bytes, Some(path))),
            Err(e) => Err(HostError(format!("cannot read {}: {e}", path.display()))),
        };
        match self {
            WasmSource::Unset => {
                Err(HostError("no module to run: give the builder wasm_file, wasm_bytes or wasm_located_by".into()))
            }
            WasmSource::File(path) => read(path.clone()),
            WasmSource::Located(locate) => read(locate()?),
            WasmSource::Bytes(bytes) => Ok((bytes.clone(), None)),
        }
    }
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
    override_host_header: Option<String>,
    env: BTreeMap<String, String>,
    host_env_keys: Vec<String>,
}

impl Envoy {
    #[allow(clippy::new_ret_no_self)] // the story reads `Envoy::new().workers(2)...build()`
    pub fn new() -> EnvoyBuilder {
        EnvoyBuilder {
            wasm: WasmSource::Unset,
            workers: 1,
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            mode: HostMode::Envoy,
            plugin_name: String::new(),
            root_id: String::new(),
            vm_id: String::new(),
            properties: BTreeMap::new(),
            clusters: BTreeMap::new(),
            start_ms: 1_700_000_000_000,
            echo_logs: true,
            request_buffer_limit: None,
            override_host_header: None,
            env: BTreeMap::new(),
            host_env_keys: Vec::new(),
        }
    }
}

impl EnvoyBuilder {
    /// The `.wasm` file to run.
    pub fn wasm_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.wasm = WasmSource::File(path.into());
        self
    }

    /// A `.wasm` file found by `locate` when [`Self::build`] runs; its error fails the build.
    pub fn wasm_located_by(mut self, locate: fn() -> HostResult<PathBuf>) -> Self {
        self.wasm = WasmSource::Located(locate);
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

    /// `plugin_name` property (Envoy's `PluginConfig.name`). Default empty, as in Envoy.
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

    /// The header the upstream cluster's `override_host` load-balancing policy reads
    /// (`override_host_sources: [{header: ..}]`): a response's `upstream.address` is then, unless
    /// the story says otherwise, the first address that header held as the request went upstream.
    /// Default: none, and no `upstream.address` unless the story names one.
    pub fn override_host_header(mut self, name: &str) -> Self {
        self.override_host_header = Some(name.to_ascii_lowercase());
        self
    }

    /// An environment variable of the VM (Envoy's `vm_config.environment_variables.key_values`):
    /// every worker's VM reads it through WASI `environ_get`. The last value given for a key wins.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    /// A variable the VM takes from the test process's environment, if set there (Envoy's
    /// `vm_config.environment_variables.host_env_keys`). Naming a key also given to [`Self::env`]
    /// fails the build, as Envoy rejects the configuration.
    pub fn host_env(mut self, key: &str) -> Self {
        self.host_env_keys.push(key.to_string());
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
        let environment = self.environment()?;
        let (bytes, file) = self.wasm.load()?;
        let module = compile(&bytes, file.as_deref())?;
        let abi = ["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"];
        if !module.exports().any(|e| abi.contains(&e.name())) {
            return Err(HostError("the module exports no proxy_abi_version_0_2_1 (or 0_2_0) marker".into()));
        }
        let mut shared = Shared::new(self.mode, self.start_ms, self.vm_id.clone());
        shared.echo_logs = self.echo_logs;
        shared.clusters = self.clusters.clone();
        let shared = Rc::new(RefCell::new(shared));
        let mut linker = Linker::new(engine());
        host::link(&mut linker, &module).map_err(|e| HostError(format!("linking the host functions failed: {e:#}")))?;
        let mut vms = Vec::with_capacity(self.workers);
        for index in 0..self.workers {
            let mut state = self.host_state(index, shared.clone());
            state.environment = environment.clone();
            let mut store = Store::new(engine(), state);
            let instance = linker
                .instantiate(&mut store, &module)
                .map_err(|e| HostError(format!("vm{index}: instantiation failed: {e:#}")))?;
            let mut vm = Vm::new(store, instance);
            vm.start(self.vm_config.len(), self.plugin_config.len())?;
            vms.push(vm);
        }
        let mut inner = Inner::new(vms, shared, self.request_buffer_limit, self.override_host_header);
        // What the start-up posted to the dispatcher (e.g. queue notifications) runs now.
        inner.settle()?;
        Ok(Envoy { inner: Rc::new(RefCell::new(inner)) })
    }

    /// The VMs' environment: the given values, and the host keys set in this process. Envoy
    /// refuses a key given both ways.
    fn environment(&self) -> HostResult<BTreeMap<String, String>> {
        let mut environment = self.env.clone();
        for key in &self.host_env_keys {
            if self.env.contains_key(key) {
                return Err(HostError(format!(
                    "environment variable {key} is given both as a value and as a host key: Envoy rejects a key \
                     in both key_values and host_env_keys of vm_config.environment_variables"
                )));
            }
            if let Ok(value) = std::env::var(key) {
                environment.insert(key.clone(), value);
            }
        }
        Ok(environment)
    }

    /// What worker `index`'s store starts with: the configurations and the plugin's properties.
    fn host_state(&self, index: usize, shared: Rc<RefCell<Shared>>) -> HostState {
        let mut properties = self.properties.clone();
        properties.entry("plugin_name".into()).or_insert_with(|| self.plugin_name.clone().into_bytes());
        properties.entry("plugin_root_id".into()).or_insert_with(|| self.root_id.clone().into_bytes());
        properties.entry("plugin_vm_id".into()).or_insert_with(|| self.vm_id.clone().into_bytes());
        let mut state = HostState::new(index, shared, ROOT_CONTEXT_ID);
        state.vm_config = self.vm_config.clone();
        state.plugin_config = self.plugin_config.clone();
        state.plugin_properties = properties;
        state
    }
}
