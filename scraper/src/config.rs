//! Flags and the config file. Both describe the same [`Options`]; a flag wins over the file.
//!
//! The file is JSON (which YAML readers also accept), keys are the flag names in snake_case:
//! ```json
//! {"k8s_service": "vllm-qwen", "k8s_port": "http", "engine": "vllm",
//!  "interval_ms": 50, "listen": "127.0.0.1:9190", "metric_kv_usage": ["vllm:kv_cache_usage_perc"]}
//! ```

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use wasm_inference_scheduler::pool::Engine;

use crate::discovery::{self, K8sSettings, PortRef};
use crate::scrape::ScrapeSettings;
use crate::vocab::{CacheInfo, Selector, Vocabulary};
use crate::{DiscoverySettings, Settings};

/// Default scrape period: the plugin refreshes its snapshot at the same rate.
pub const DEFAULT_INTERVAL_MS: u64 = 50;
/// Below this the scraper's own CPU dominates and no engine refreshes its gauges that fast.
pub const MIN_INTERVAL_MS: u64 = 5;
/// A `/metrics` answer slower than five default intervals is too old to route on.
pub const DEFAULT_SCRAPE_TIMEOUT_MS: u64 = 250;
/// A vLLM exposition is ~50–200 KB per engine; 4 MiB covers DP=8 with room, and bounds memory
/// at 256 concurrent scrapes.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Headless-Service records change when pods come and go; seconds are fast enough.
pub const DEFAULT_DNS_REFRESH_MS: u64 = 5_000;
/// Localhost only: the snapshot is for the proxy next to us.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9190";

#[derive(Debug, Parser)]
#[command(
    name = "wis-scraper",
    version,
    about = "Scrapes an inference pool's model servers and serves one pool snapshot."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub options: Options,
    /// JSON config file with the same keys as the flags (snake_case); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stop after this many milliseconds (benchmarks).
    #[arg(long, value_name = "MS")]
    pub exit_after_ms: Option<u64>,
    /// Log level: error, warn, info, debug.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Tokio worker threads.
    #[arg(long, global = true, default_value_t = 2)]
    pub threads: usize,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a fixed exposition on many ports (stand-in pods for benchmarks).
    FixtureServer(FixtureArgs),
}

#[derive(Debug, Args)]
pub struct FixtureArgs {
    /// Number of ports (pods) to serve.
    #[arg(long, default_value_t = 256)]
    pub count: u16,
    /// First port; the pods listen on base-port .. base-port+count-1.
    #[arg(long)]
    pub base_port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Which built-in exposition to serve: vllm, sglang, trtllm.
    #[arg(long, default_value = "vllm")]
    pub engine: String,
    /// Serve this file instead of a built-in exposition.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Append this many histogram-bucket lines (~120 bytes each) to reach a live server's size:
    /// a vLLM pod's full exposition is ~500-1,000 lines, mostly buckets.
    #[arg(long, default_value_t = 0)]
    pub pad_lines: usize,
    /// Stop after this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub exit_after_ms: Option<u64>,
}

/// Everything that may come from a flag or from the config file.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Static endpoints: ip:port[,ip:port...]; ip:first-last for port ranges.
    #[arg(long = "static", value_name = "LIST")]
    #[serde(rename = "static", default, deserialize_with = "string_or_list")]
    pub static_endpoints: Option<String>,
    /// DNS discovery: host:port of a headless Service, re-resolved periodically.
    #[arg(long, value_name = "HOST:PORT")]
    pub dns: Option<String>,
    #[arg(long, value_name = "MS")]
    pub dns_refresh_ms: Option<u64>,
    /// Kubernetes discovery: EndpointSlices of this Service.
    #[arg(long, value_name = "NAME")]
    pub k8s_service: Option<String>,
    /// Kubernetes discovery: EndpointSlices matching this label selector.
    #[arg(long, value_name = "SELECTOR")]
    pub k8s_selector: Option<String>,
    /// Namespace (default: the service account's).
    #[arg(long)]
    pub k8s_namespace: Option<String>,
    /// EndpointSlice port, by name (e.g. http) or number.
    #[arg(long, value_name = "NAME|NUMBER")]
    pub k8s_port: Option<String>,
    /// API server URL (default: in-cluster from KUBERNETES_SERVICE_HOST/PORT).
    #[arg(long, value_name = "URL")]
    pub k8s_api_url: Option<String>,
    /// Bearer token file (default: the mounted service-account token).
    #[arg(long, value_name = "FILE")]
    pub k8s_token_file: Option<PathBuf>,
    /// CA bundle for the API server (default: the mounted service-account ca.crt).
    #[arg(long, value_name = "FILE")]
    pub k8s_ca_file: Option<PathBuf>,
    /// Poll (list) every MS instead of watching.
    #[arg(long, value_name = "MS")]
    pub k8s_poll_ms: Option<u64>,
    /// Metric vocabulary: vllm, sglang or trtllm.
    #[arg(long)]
    pub engine: Option<String>,
    /// Override the waiting-requests metric (repeat for a fallback chain): name or name{label="v"}.
    #[arg(long, value_name = "SELECTOR")]
    #[serde(default)]
    pub metric_waiting: Vec<String>,
    #[arg(long, value_name = "SELECTOR")]
    #[serde(default)]
    pub metric_running: Vec<String>,
    #[arg(long, value_name = "SELECTOR")]
    #[serde(default)]
    pub metric_kv_usage: Vec<String>,
    #[arg(long, value_name = "SELECTOR")]
    #[serde(default)]
    pub metric_prefix_queries: Vec<String>,
    #[arg(long, value_name = "SELECTOR")]
    #[serde(default)]
    pub metric_prefix_hits: Vec<String>,
    /// LoRA info gauge name (labels max_lora, running_lora_adapters, waiting_lora_adapters).
    #[arg(long, value_name = "NAME")]
    pub metric_lora_info: Option<String>,
    /// Cache config info gauge: NAME:BLOCK_SIZE_LABEL:NUM_BLOCKS_LABEL.
    #[arg(long, value_name = "NAME:LABEL:LABEL")]
    pub metric_cache_config: Option<String>,
    /// Scrape period per endpoint.
    #[arg(long, value_name = "MS")]
    pub interval_ms: Option<u64>,
    #[arg(long, value_name = "MS")]
    pub scrape_timeout_ms: Option<u64>,
    #[arg(long, value_name = "BYTES")]
    pub max_response_bytes: Option<usize>,
    /// Connection failures or timeouts in a row before an endpoint is reported unhealthy
    /// (other failures only make its metrics unknown).
    #[arg(long, value_name = "N")]
    pub unhealthy_after: Option<u32>,
    #[arg(long, value_name = "PATH")]
    pub metrics_path: Option<String>,
    /// Address for /snapshot, /healthz, /metrics.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<Either>::deserialize(d)?.map(|e| match e {
        Either::One(s) => s,
        Either::Many(v) => v.join(","),
    }))
}

impl Options {
    /// Reads a config file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read(path).map_err(|e| format!("config file {}: {e}", path.display()))?;
        serde_json::from_slice(&text)
            .map_err(|e| format!("config file {}: {e} (expected JSON with flag names as keys)", path.display()))
    }

    /// `self` (flags) over `file`.
    pub fn over(self, file: Options) -> Options {
        fn vec(a: Vec<String>, b: Vec<String>) -> Vec<String> {
            if a.is_empty() { b } else { a }
        }
        // Discovery is one choice: flags that pick a source replace the file's source entirely.
        let flags_pick_discovery = self.static_endpoints.is_some()
            || self.dns.is_some()
            || self.k8s_service.is_some()
            || self.k8s_selector.is_some();
        let (fs, fd, fks, fksel) = if flags_pick_discovery {
            (None, None, None, None)
        } else {
            (file.static_endpoints, file.dns, file.k8s_service, file.k8s_selector)
        };
        Options {
            static_endpoints: self.static_endpoints.or(fs),
            dns: self.dns.or(fd),
            dns_refresh_ms: self.dns_refresh_ms.or(file.dns_refresh_ms),
            k8s_service: self.k8s_service.or(fks),
            k8s_selector: self.k8s_selector.or(fksel),
            k8s_namespace: self.k8s_namespace.or(file.k8s_namespace),
            k8s_port: self.k8s_port.or(file.k8s_port),
            k8s_api_url: self.k8s_api_url.or(file.k8s_api_url),
            k8s_token_file: self.k8s_token_file.or(file.k8s_token_file),
            k8s_ca_file: self.k8s_ca_file.or(file.k8s_ca_file),
            k8s_poll_ms: self.k8s_poll_ms.or(file.k8s_poll_ms),
            engine: self.engine.or(file.engine),
            metric_waiting: vec(self.metric_waiting, file.metric_waiting),
            metric_running: vec(self.metric_running, file.metric_running),
            metric_kv_usage: vec(self.metric_kv_usage, file.metric_kv_usage),
            metric_prefix_queries: vec(self.metric_prefix_queries, file.metric_prefix_queries),
            metric_prefix_hits: vec(self.metric_prefix_hits, file.metric_prefix_hits),
            metric_lora_info: self.metric_lora_info.or(file.metric_lora_info),
            metric_cache_config: self.metric_cache_config.or(file.metric_cache_config),
            interval_ms: self.interval_ms.or(file.interval_ms),
            scrape_timeout_ms: self.scrape_timeout_ms.or(file.scrape_timeout_ms),
            max_response_bytes: self.max_response_bytes.or(file.max_response_bytes),
            unhealthy_after: self.unhealthy_after.or(file.unhealthy_after),
            metrics_path: self.metrics_path.or(file.metrics_path),
            listen: self.listen.or(file.listen),
        }
    }

    /// Validates and resolves defaults.
    pub fn settings(&self) -> Result<Settings, String> {
        let interval_ms = self.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS);
        if interval_ms < MIN_INTERVAL_MS {
            return Err(format!("interval_ms {interval_ms}: expected at least {MIN_INTERVAL_MS}"));
        }
        let timeout_ms = self.scrape_timeout_ms.unwrap_or(DEFAULT_SCRAPE_TIMEOUT_MS);
        if timeout_ms == 0 {
            return Err("scrape_timeout_ms: expected at least 1".into());
        }
        let max_response_bytes = self.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if max_response_bytes < 1024 {
            return Err(format!("max_response_bytes {max_response_bytes}: expected at least 1024"));
        }
        let path = self.metrics_path.clone().unwrap_or_else(|| "/metrics".into());
        if !path.starts_with('/') {
            return Err(format!("metrics_path {path:?}: expected a path starting with /"));
        }
        // The request target is this path as given (origin form), so it must be a valid one.
        if path.parse::<hyper::Uri>().map_or(true, |u| u.authority().is_some()) {
            return Err(format!("metrics_path {path:?}: expected a path such as /metrics or /prometheus/metrics"));
        }
        let listen_text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| format!("listen {listen_text:?}: expected ip:port such as {DEFAULT_LISTEN}"))?;
        Ok(Settings {
            discovery: self.discovery()?,
            vocabulary: self.vocabulary()?,
            scrape: ScrapeSettings { path, timeout: Duration::from_millis(timeout_ms), max_response_bytes },
            interval: Duration::from_millis(interval_ms),
            unhealthy_after: self.unhealthy_after.unwrap_or(crate::state::DEFAULT_UNHEALTHY_AFTER).max(1),
            listen,
        })
    }

    fn discovery(&self) -> Result<DiscoverySettings, String> {
        let chosen = [
            self.static_endpoints.is_some(),
            self.dns.is_some(),
            self.k8s_service.is_some() || self.k8s_selector.is_some(),
        ];
        match chosen.iter().filter(|c| **c).count() {
            0 => return Err("no discovery: pass --static, --dns or --k8s-service/--k8s-selector".into()),
            1 => {}
            _ => {
                return Err(
                    "several discovery sources: pass exactly one of --static, --dns, --k8s-service/--k8s-selector"
                        .into(),
                );
            }
        }
        if let Some(list) = &self.static_endpoints {
            let addrs = discovery::parse_static(list)?;
            if addrs.is_empty() {
                return Err("--static: expected at least one ip:port".into());
            }
            return Ok(DiscoverySettings::Static(addrs));
        }
        if let Some(target) = &self.dns {
            let bad = || format!("--dns {target:?}: expected host:port of a headless Service");
            let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            if host.is_empty() {
                return Err(bad());
            }
            let refresh = Duration::from_millis(self.dns_refresh_ms.unwrap_or(DEFAULT_DNS_REFRESH_MS).max(100));
            return Ok(DiscoverySettings::Dns { host: host.to_string(), port, refresh });
        }
        let label_selector = match (&self.k8s_service, &self.k8s_selector) {
            (Some(svc), None) => K8sSettings::selector_for_service(svc),
            (None, Some(sel)) => sel.clone(),
            _ => return Err("pass either --k8s-service or --k8s-selector, not both".into()),
        };
        let port: PortRef = self.k8s_port.as_deref().unwrap_or("http").parse()?;
        Ok(DiscoverySettings::Kubernetes(K8sSettings {
            label_selector,
            namespace: self.k8s_namespace.clone(),
            port,
            api_url: self.k8s_api_url.clone(),
            token_file: self.k8s_token_file.clone(),
            ca_file: self.k8s_ca_file.clone(),
            poll: self.k8s_poll_ms.map(|ms| Duration::from_millis(ms.max(100))),
        }))
    }

    fn vocabulary(&self) -> Result<Vocabulary, String> {
        let engine = match self.engine.as_deref().unwrap_or("vllm") {
            "vllm" => Engine::Vllm,
            "sglang" => Engine::Sglang,
            "trtllm" | "tensorrt-llm" => Engine::Trtllm,
            other => return Err(format!("engine {other:?}: expected vllm, sglang or trtllm")),
        };
        let mut v = Vocabulary::for_engine(engine);
        let chain = |list: &[String]| -> Result<Option<Vec<Selector>>, String> {
            if list.is_empty() {
                return Ok(None);
            }
            list.iter().map(|s| s.parse::<Selector>()).collect::<Result<Vec<_>, _>>().map(Some)
        };
        if let Some(c) = chain(&self.metric_waiting)? {
            v.waiting = c;
        }
        if let Some(c) = chain(&self.metric_running)? {
            v.running = c;
        }
        if let Some(c) = chain(&self.metric_kv_usage)? {
            v.kv_usage = c;
            v.kv_used_and_max = None;
        }
        if let Some(c) = chain(&self.metric_prefix_queries)? {
            v.prefix_queries = c;
        }
        if let Some(c) = chain(&self.metric_prefix_hits)? {
            v.prefix_hits = c;
        }
        if let Some(name) = &self.metric_lora_info {
            v.lora_info = Some(name.parse::<Selector>()?.name);
        }
        if let Some(spec) = &self.metric_cache_config {
            let parts: Vec<&str> = spec.split(':').collect();
            // Metric names may hold colons themselves: the last two parts are the labels.
            if parts.len() < 3 {
                return Err(format!("metric_cache_config {spec:?}: expected NAME:BLOCK_SIZE_LABEL:NUM_BLOCKS_LABEL"));
            }
            let n = parts.len();
            v.cache_info = Some(CacheInfo {
                name: parts[..n - 2].join(":"),
                block_size_label: parts[n - 2].to_string(),
                num_blocks_label: parts[n - 1].to_string(),
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_discovery_is_one_choice() {
        let file: Options = serde_json::from_str(
            r#"{"k8s_service":"vllm","k8s_port":"http","engine":"sglang","interval_ms":100,"static":["10.0.0.1:8000"]}"#,
        )
        .unwrap();
        let flags =
            Options { static_endpoints: Some("127.0.0.1:9001".into()), interval_ms: Some(50), ..Default::default() };
        let s = flags.over(file).settings().unwrap();
        assert!(matches!(s.discovery, DiscoverySettings::Static(ref v) if v.len() == 1 && v[0].port() == 9001));
        assert_eq!(s.interval, Duration::from_millis(50));
        assert_eq!(s.vocabulary.engine, Engine::Sglang);
    }

    #[test]
    fn file_alone_configures_kubernetes() {
        let file: Options =
            serde_json::from_str(r#"{"k8s_service":"vllm","k8s_namespace":"llm","k8s_port":"8000"}"#).unwrap();
        let s = Options::default().over(file).settings().unwrap();
        let DiscoverySettings::Kubernetes(k) = s.discovery else { panic!("expected kubernetes") };
        assert_eq!(k.label_selector, "kubernetes.io/service-name=vllm");
        assert_eq!(k.port, PortRef::Number(8000));
        assert_eq!(k.namespace.as_deref(), Some("llm"));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values_with_reasons() {
        assert!(serde_json::from_str::<Options>(r#"{"intervall_ms":5}"#).is_err());
        let bad = |o: Options| o.settings().unwrap_err();
        assert!(bad(Options::default()).contains("no discovery"));
        let base = Options { static_endpoints: Some("127.0.0.1:1".into()), ..Default::default() };
        assert!(bad(Options { engine: Some("tgi".into()), ..base.clone() }).contains("expected vllm"));
        assert!(bad(Options { interval_ms: Some(1), ..base.clone() }).contains("at least"));
        assert!(bad(Options { dns: Some("x:1".into()), ..base.clone() }).contains("several discovery"));
        assert!(bad(Options { metrics_path: Some("/me trics".into()), ..base.clone() }).contains("expected a path"));
        assert!(bad(Options { metric_waiting: vec!["{x}".into()], ..base }).contains("metric selector"));
    }

    #[test]
    fn config_file_is_read_and_its_errors_name_the_file() {
        let path = std::env::temp_dir().join(format!("wis-scraper-config-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"static": "127.0.0.1:9001,127.0.0.1:9002", "engine": "trtllm"}"#).unwrap();
        let o = Options::from_file(&path).unwrap();
        let s = o.settings().unwrap();
        assert!(matches!(s.discovery, DiscoverySettings::Static(ref v) if v.len() == 2));
        assert_eq!(s.vocabulary.engine, Engine::Trtllm);
        std::fs::write(&path, "interval_ms: 50\n").unwrap();
        let err = Options::from_file(&path).unwrap_err();
        assert!(err.contains(&path.display().to_string()) && err.contains("expected JSON"), "{err}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn metric_overrides_replace_the_engine_defaults() {
        let o = Options {
            static_endpoints: Some("127.0.0.1:1".into()),
            metric_waiting: vec!["my:queue{kind=\"w\"}".into(), "my:queue2".into()],
            metric_cache_config: Some("vllm:cache_config_info:block_size:num_gpu_blocks".into()),
            ..Default::default()
        };
        let v = o.settings().unwrap().vocabulary;
        assert_eq!(v.waiting, vec![Selector::with("my:queue", "kind", "w"), Selector::new("my:queue2")]);
        assert_eq!(v.cache_info.unwrap().name, "vllm:cache_config_info");
    }
}
