//! Command-line flags, after GAIE's EPP (`--grpc-port`, `--grpc-health-port`, `--metrics-port`,
//! `--pool-name`, `--pool-namespace`, `--pool-group`, `--secure-serving`, ...).

use clap::{ArgAction, Parser};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Parser)]
#[command(name = "wis-epp", about = "The wasm inference scheduler's core as a GAIE Endpoint Picker (Envoy ext_proc).")]
pub struct Cli {
    /// ext_proc gRPC port (the InferencePool's endpointPickerRef port).
    #[arg(long, default_value_t = 9002)]
    pub grpc_port: u16,
    /// gRPC health port (grpc.health.v1: liveness, readiness, envoy.service.ext_proc.v3.ExternalProcessor).
    #[arg(long, default_value_t = 9003)]
    pub grpc_health_port: u16,
    /// HTTP port of /metrics (Prometheus text), /healthz and /readyz.
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Address the three ports listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// InferencePool to serve (read through the Kubernetes API).
    #[arg(long)]
    pub pool_name: Option<String>,
    /// Namespace of the InferencePool and its pods (default: $POD_NAMESPACE, else the service
    /// account's namespace, else "default").
    #[arg(long)]
    pub pool_namespace: Option<String>,
    /// API group of the InferencePool (v1).
    #[arg(long, default_value = "inference.networking.k8s.io")]
    pub pool_group: String,
    /// The Kubernetes API server to read the InferencePool from, without credentials (e.g.
    /// `kubectl proxy`'s http://127.0.0.1:8001); default: the pod's service account, else kubeconfig.
    #[arg(long)]
    pub kube_api_url: Option<String>,
    /// A fixed pool instead of an InferencePool: ip:port,ip:port (ranges ip:first-last allowed).
    #[arg(long)]
    pub static_endpoints: Option<String>,
    /// The plugin's JSON configuration (same schema as the filter's, plugin/CONFIG.md); none = `{}`.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// Metric vocabulary of the model servers: vllm, sglang or trtllm.
    #[arg(long, default_value = "vllm")]
    pub engine: String,
    /// How often each pod's /metrics is scraped.
    #[arg(long, default_value_t = 50)]
    pub scrape_interval_ms: u64,
    /// Serve the ext_proc port over TLS with a self-signed certificate generated at start (GAIE's
    /// default); `--secure-serving=false` for plaintext.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub secure_serving: bool,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// error, warn, info or debug.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

impl Cli {
    /// Exactly one of the two discovery sources.
    pub fn check_discovery(&self) -> Result<(), String> {
        match (&self.pool_name, &self.static_endpoints) {
            (Some(_), Some(_)) => Err("pass either --pool-name (InferencePool) or --static-endpoints, not both".into()),
            (None, None) => {
                Err("no pool: pass --pool-name NAME [--pool-namespace NS] or --static-endpoints ip:port,...".into())
            }
            _ => Ok(()),
        }
    }

    /// The namespace of the InferencePool.
    pub fn namespace(&self) -> String {
        if let Some(ns) = &self.pool_namespace {
            return ns.clone();
        }
        if let Ok(ns) = std::env::var("POD_NAMESPACE")
            && !ns.is_empty()
        {
            return ns;
        }
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_gaies_ports_and_secure_serving() {
        let cli = Cli::try_parse_from(["wis-epp", "--static-endpoints", "127.0.0.1:8000"]).unwrap();
        assert_eq!((cli.grpc_port, cli.grpc_health_port, cli.metrics_port), (9002, 9003, 9090));
        assert!(cli.secure_serving);
        assert_eq!(cli.pool_group, "inference.networking.k8s.io");
        assert_eq!(cli.scrape_interval_ms, 50);
        assert!(cli.check_discovery().is_ok());
        let plain = Cli::try_parse_from(["wis-epp", "--pool-name", "p", "--secure-serving=false"]).unwrap();
        assert!(!plain.secure_serving);
        let both = Cli::try_parse_from(["wis-epp", "--pool-name", "p", "--static-endpoints", "127.0.0.1:1"]).unwrap();
        assert!(both.check_discovery().unwrap_err().contains("not both"));
        let none = Cli::try_parse_from(["wis-epp"]).unwrap();
        assert!(none.check_discovery().unwrap_err().contains("no pool"));
    }
}
