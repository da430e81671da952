//! The plugin's configuration: Envoy's `PluginConfig.configuration`, JSON.
//!
//! Every field has a default, so `{}` is a complete configuration: llm-d's default profile
//! (prefix-cache 3, queue 2, kv-cache-utilization 2, max-score picker; no saturation filter, see
//! `plugin/CONFIG.md`), the two OpenAI inference paths, and the limits below. Unknown fields are errors (a typo must not silently
//! fall back to a default), and every error names the field path, e.g.
//! `endpointPickerConfig.plugins[2].parameters.queueThreshold: invalid type: string "x", expected u32`.
//! The reference with a complete example is `plugin/CONFIG.md`.

use crate::memory::MAX_EVENT_HASHES;
use crate::scheduler::scorers::prefix_cache::PrefixCacheParams;
use crate::scheduler::scorers::session_affinity::SessionAffinityParams;
use crate::session::{MIN_KEY_BYTES, SessionKey};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Where the filter runs, which decides which host calls it may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Full endpoint picker: shared data, timers, outbound calls, metrics.
    #[default]
    Envoy,
    /// Google Cloud Service Extensions: none of those exist; stateless model extraction and
    /// prefix-affinity key only.
    ServiceExtensions,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PluginConfig {
    pub mode: Mode,
    /// llm-d's `EndpointPickerConfig`; absent = the llm-d guide's default profile.
    pub endpoint_picker_config: Option<EndpointPickerConfig>,
    pub pool: PoolConfig,
    pub models: ModelsConfig,
    /// Objective name (header `x-gateway-inference-objective`) → priority; below zero is sheddable.
    pub objectives: BTreeMap<String, i32>,
    /// Priority of a request that names no known objective.
    pub default_priority: i32,
    pub limits: Limits,
    /// Request paths (query string ignored) that are scheduled; others pass through untouched.
    pub inference_paths: Vec<String>,
    pub headers: HeaderNames,
    /// Adds a header naming the chosen endpoint and each scorer's score (to the upstream request
    /// and the response). Off by default: it reveals pool addresses to clients.
    pub debug_header: DebugHeader,
    pub shared_state: SharedStateConfig,
    /// Resolved from the `prefix-cache-scorer` plugin's parameters (or defaults) after parsing.
    #[serde(skip)]
    pub prefix: PrefixSettings,
    /// The session-token key, resolved from the `session-affinity-scorer` plugin's parameters.
    #[serde(skip)]
    pub session: Option<SessionKey>,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Envoy,
            endpoint_picker_config: None,
            pool: PoolConfig::default(),
            models: ModelsConfig::default(),
            objectives: BTreeMap::new(),
            default_priority: 0,
            limits: Limits::default(),
            inference_paths: vec!["/v1/completions".into(), "/v1/chat/completions".into()],
            headers: HeaderNames::default(),
            debug_header: DebugHeader::Off,
            shared_state: SharedStateConfig::default(),
            prefix: PrefixSettings::default(),
            session: None,
        }
    }
}

/// What the debug header carries. Written as `false` / `true` (= `"summary"`) / `"summary"` /
/// `"json"` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DebugHeader {
    #[default]
    Off,
    /// One line: the winner, its scores and weights, predicted prefix blocks, fallbacks.
    Summary,
    /// The whole decision as compact JSON (every endpoint's scores, at most
    /// [`crate::decision::MAX_DEBUG_ROWS`] rows), for the decision view and access logs.
    Json,
}

impl DebugHeader {
    pub fn enabled(self) -> bool {
        self != Self::Off
    }
}

impl<'de> Deserialize<'de> for DebugHeader {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Name(String),
        }
        match Raw::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected true, false, \"summary\" or \"json\""))?
        {
            Raw::Flag(false) => Ok(Self::Off),
            Raw::Flag(true) => Ok(Self::Summary),
            Raw::Name(name) => match name.as_str() {
                "off" => Ok(Self::Off),
                "summary" => Ok(Self::Summary),
                "json" => Ok(Self::Json),
                other => Err(serde::de::Error::custom(format!(
                    "unknown debug header format '{other}': expected true, false, \"summary\" or \"json\""
                ))),
            },
        }
    }
}

/// llm-d's `EndpointPickerConfig`, as its users write it (converted from YAML to JSON).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPickerConfig {
    /// Accepted and ignored, so an llm-d file carries over as is.
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub plugins: Vec<PluginSpec>,
    #[serde(default)]
    pub scheduling_profiles: Vec<ProfileSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSpec {
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Reference name for profiles; defaults to the type.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub parameters: serde_json::Value,
}

impl PluginSpec {
    pub fn reference(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.plugin_type)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {
    pub name: String,
    pub plugins: Vec<PluginRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginRef {
    pub plugin_ref: String,
    /// Scorer weight; llm-d's default is 1. Ignored for filters and pickers.
    #[serde(default)]
    pub weight: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Static pool members (`ip:port`), used until the first snapshot arrives and whenever no
    /// snapshot cluster is configured.
    pub endpoints: Vec<String>,
    /// Envoy cluster of the scraper sidecar; none = static endpoints only.
    pub snapshot_cluster: Option<String>,
    /// Path of the scraper's snapshot.
    pub snapshot_path: String,
    /// `:authority` of the snapshot request.
    pub snapshot_authority: String,
    /// How often the snapshot is fetched (and each VM refreshes): llm-d's 50 ms refresh.
    pub refresh_interval_ms: u64,
    /// A snapshot call slower than this is abandoned; routing goes on with the last snapshot.
    pub fetch_timeout_ms: u64,
    /// A pod's metrics older than this are unknown (20 refresh intervals: a dead scraper shows within
    /// a second); the pod stays a candidate, scored on the gateway's own counts.
    pub metrics_staleness_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            snapshot_cluster: None,
            snapshot_path: "/snapshot".into(),
            snapshot_authority: "scraper".into(),
            refresh_interval_ms: 50,
            fetch_timeout_ms: 500,
            metrics_staleness_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Base model names the pool serves; empty together with `adapters` = accept any model.
    pub served: Vec<String>,
    /// LoRA adapters the pool serves; a request naming one is routed with LoRA affinity.
    pub adapters: Vec<String>,
}

impl ModelsConfig {
    pub fn accepts_any(&self) -> bool {
        self.served.is_empty() && self.adapters.is_empty()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body buffered: long-context chat requests reach a few MiB; beyond this → 413.
    pub max_body_bytes: usize,
    /// Bytes per token to start from, until the pods' `usage.prompt_tokens` reports teach the real
    /// ratio (see `calibration.rs`); also fixes the hashed block size in bytes
    /// (`blockSizeTokens × charsPerToken`), which must not move as the ratio is learned (llm-d: 4).
    pub chars_per_token: u32,
    /// Fallback endpoints listed after the primary, for Envoy's retries.
    pub fallback_count: usize,
    /// Leading prompt blocks that identify a conversation (≈ 512 characters): the key for
    /// rendezvous placement of new prefixes and the Service Extensions affinity key.
    pub affinity_key_blocks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 4 * 1024 * 1024, chars_per_token: 4, fallback_count: 2, affinity_key_blocks: 8 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HeaderNames {
    /// The Endpoint Picker Protocol's destination header.
    pub destination: String,
    /// Subset hint: comma-separated `ip:port` the choice is restricted to.
    pub subset: String,
    /// Names the request's objective (priority).
    pub objective: String,
    /// Session-affinity token this filter returns on responses and reads on requests.
    pub session: String,
    /// Model name header set in Service Extensions mode, for HTTPRoute matching.
    pub model: String,
    /// Prefix-affinity key set in Service Extensions mode, for the load balancer's hashing.
    pub affinity_key: String,
    /// Debug header (only when `debugHeader` is not `false`).
    pub debug: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        Self {
            destination: "x-gateway-destination-endpoint".into(),
            subset: "x-gateway-destination-endpoint-subset".into(),
            objective: "x-gateway-inference-objective".into(),
            session: "x-session-token".into(),
            model: "x-gateway-model-name".into(),
            affinity_key: "x-gateway-prefix-affinity-key".into(),
            debug: "x-wis-decision".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SharedStateConfig {
    /// Slots of the routing log in shared data: how far a worker may fall behind before it loses
    /// events. Each slot holds one event (≤ 4 KiB), so 1024 slots bound the log to ~4 MiB.
    pub log_slots: u32,
}

impl Default for SharedStateConfig {
    fn default() -> Self {
        Self { log_slots: 1024 }
    }
}

/// Prefix hashing and index sizing, from the `prefix-cache-scorer` parameters (llm-d names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefixSettings {
    /// Tokens per block (vLLM's default block size).
    pub block_size_tokens: u32,
    /// Bytes per hashed block: `blockSizeTokens × limits.charsPerToken`, fixed for the VM's life.
    pub block_bytes: usize,
    /// Blocks hashed per request at most (llm-d: 256): bounds per-request CPU on long prompts.
    pub max_prefix_blocks: usize,
    /// Blocks remembered per endpoint when the pod does not report its KV block count (llm-d:
    /// 31,250, about 500K tokens).
    pub lru_capacity_per_server: usize,
    /// Blocks remembered in total across endpoints: bounds the index's memory in every VM.
    pub max_total_blocks: usize,
}

impl Default for PrefixSettings {
    fn default() -> Self {
        Self {
            block_size_tokens: 16,
            block_bytes: 64,
            max_prefix_blocks: 256,
            lru_capacity_per_server: 31_250,
            max_total_blocks: 1_000_000,
        }
    }
}

/// A configuration that cannot be used, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Deserializes `T` from a JSON value, reporting the field path under `prefix` on error.
pub fn parse_parameters<T: serde::de::DeserializeOwned + Default>(
    value: &serde_json::Value,
    prefix: &str,
) -> Result<T, ConfigError> {
    if value.is_null() {
        return Ok(T::default());
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." { prefix.to_string() } else { format!("{prefix}.{inner}") };
        ConfigError::new(path, e.into_inner().to_string())
    })
}

impl PluginConfig {
    /// Parses and validates; the error names the field path and what was expected.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let mut config: PluginConfig = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::new(if path == "." { String::new() } else { path }, e.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        for (i, endpoint) in self.pool.endpoints.iter().enumerate() {
            if endpoint.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::new(
                    format!("pool.endpoints[{i}]"),
                    format!("{endpoint:?} is not ip:port (override_host needs an address, not a name)"),
                ));
            }
        }
        if self.pool.refresh_interval_ms == 0 {
            return Err(ConfigError::new("pool.refreshIntervalMs", "must be at least 1"));
        }
        if self.limits.max_body_bytes == 0 {
            return Err(ConfigError::new("limits.maxBodyBytes", "must be at least 1"));
        }
        if self.shared_state.log_slots == 0 {
            return Err(ConfigError::new("sharedState.logSlots", "must be at least 1"));
        }
        if self.inference_paths.iter().any(|p| !p.starts_with('/')) {
            return Err(ConfigError::new("inferencePaths", "every path must start with '/'"));
        }
        if self.limits.chars_per_token == 0 {
            return Err(ConfigError::new("limits.charsPerToken", "must be at least 1"));
        }
        self.resolve_plugin_settings()
    }

    /// Settings shared by the whole VM that live in plugin parameters: the prefix index's sizing
    /// (`prefix-cache-scorer`) and the session-token key (`session-affinity-scorer`).
    fn resolve_plugin_settings(&mut self) -> Result<(), ConfigError> {
        let plugins = self.endpoint_picker_config.as_ref().map(|e| e.plugins.clone()).unwrap_or_default();
        let mut prefix = PrefixCacheParams::default();
        let mut prefix_path = String::from("endpointPickerConfig.plugins[].parameters");
        for (i, plugin) in plugins.iter().enumerate() {
            let path = format!("endpointPickerConfig.plugins[{i}].parameters");
            match plugin.plugin_type.as_str() {
                "prefix-cache-scorer" => {
                    prefix = parse_parameters(&plugin.parameters, &path)?;
                    prefix_path = path;
                }
                "session-affinity-scorer" => {
                    self.session = Some(session_key(&parse_parameters(&plugin.parameters, &path)?, &path)?);
                }
                _ => {}
            }
        }
        if prefix.block_size_tokens == 0 || prefix.max_prefix_blocks_to_match == 0 {
            return Err(ConfigError::new(prefix_path, "blockSizeTokens and maxPrefixBlocksToMatch must be ≥ 1"));
        }
        if prefix.max_prefix_blocks_to_match > MAX_EVENT_HASHES {
            return Err(ConfigError::new(
                format!("{prefix_path}.maxPrefixBlocksToMatch"),
                format!(
                    "{} is more than a routing event carries ({MAX_EVENT_HASHES} blocks); every worker must apply exactly \
                     what was routed, so longer prefixes cannot be matched",
                    prefix.max_prefix_blocks_to_match
                ),
            ));
        }
        self.prefix = PrefixSettings {
            block_size_tokens: prefix.block_size_tokens,
            block_bytes: (prefix.block_size_tokens as usize).saturating_mul(self.limits.chars_per_token as usize),
            max_prefix_blocks: prefix.max_prefix_blocks_to_match,
            lru_capacity_per_server: prefix.lru_capacity_per_server.max(1),
            max_total_blocks: prefix.max_total_blocks.max(1),
        };
        Ok(())
    }

    /// The priority of a request naming `objective`.
    pub fn priority_of(&self, objective: Option<&str>) -> i32 {
        objective.and_then(|o| self.objectives.get(o).copied()).unwrap_or(self.default_priority)
    }
}

/// The session key from `session-affinity-scorer`'s parameters: inline, or from the VM's environment.
fn session_key(params: &SessionAffinityParams, path: &str) -> Result<SessionKey, ConfigError> {
    let key = match (&params.secret, &params.secret_env) {
        (Some(secret), None) => secret.clone(),
        (None, Some(name)) => std::env::var(name).map_err(|_| {
            ConfigError::new(
                format!("{path}.secretEnv"),
                format!(
                    "environment variable {name} is not set in the wasm VM (Envoy: list it in \
                     vm_config.environment_variables.host_env_keys)"
                ),
            )
        })?,
        (Some(_), Some(_)) => return Err(ConfigError::new(path, "give either secret or secretEnv, not both")),
        (None, None) => {
            return Err(ConfigError::new(
                path,
                "session-affinity-scorer needs a key to authenticate its tokens: secretEnv (an environment \
                 variable of the VM) or secret",
            ));
        }
    };
    if key.trim().len() < MIN_KEY_BYTES {
        return Err(ConfigError::new(path, format!("the session key must be at least {MIN_KEY_BYTES} bytes")));
    }
    Ok(SessionKey::new(key.trim().as_bytes().to_vec(), params.ttl_seconds))
}

#[cfg(test)]
mod tests;
