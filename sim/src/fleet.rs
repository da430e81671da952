//! `sim fleet`: many independent pods in one process (one port each).

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;

use crate::engine::EngineConfig;
use crate::pod::{FaultMode, LoraInfoStyle, Pod, PodConfig};
use crate::profile;
use crate::tokenizer::Tokenizer;

/// Flags of `sim fleet` (engine flags use vLLM's names).
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Number of pods on consecutive ports from --base-port (ignored with --addresses).
    #[arg(long, default_value_t = 4)]
    pub pods: usize,
    /// First port; 0 = ephemeral ports (the chosen addresses are printed).
    #[arg(long, default_value_t = 8000)]
    pub base_port: u16,
    /// Host the pods bind when --pods/--base-port are used.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Explicit pod addresses, comma-separated ip:port (alias --listen).
    #[arg(long, alias = "listen", value_delimiter = ',')]
    pub addresses: Vec<String>,
    /// Model/GPU profile: qwen3-0.6b-l4 (default) or qwen3-0.6b-a100; sets the defaults below.
    #[arg(long, default_value = "qwen3-0.6b-l4")]
    pub profile: String,
    /// --model of vLLM (the root of /v1/models); default: the profile's model.
    #[arg(long)]
    pub model: Option<String>,
    /// The model name clients send; default: --model, as in vLLM.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// bpe (a real BPE vocabulary: cl100k_base, or the --vocab file) or chars:N (N characters per
    /// token, e.g. chars:1.5 for CJK-like text, chars:3 for code).
    #[arg(long, default_value = "bpe")]
    pub tokenizer: String,
    /// A .tiktoken ranks file (e.g. Qwen's qwen.tiktoken), split with Qwen's pattern.
    #[arg(long)]
    pub vocab: Option<String>,
    /// Memory for encoded messages, shared by the fleet's pods (0 = tokenize every message every time).
    #[arg(long, default_value_t = 64)]
    pub tokenizer_cache_mb: usize,
    /// Token block size of the KV cache.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// KV blocks per pod (vLLM's --num-gpu-blocks-override); default: the profile's.
    #[arg(long, alias = "num-gpu-blocks-override")]
    pub num_gpu_blocks: Option<usize>,
    /// Maximum running requests per step.
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    /// Token budget per step.
    #[arg(long)]
    pub max_num_batched_tokens: Option<usize>,
    /// Context length (prompt + output).
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Turn prefix caching off.
    #[arg(long)]
    pub no_enable_prefix_caching: bool,
    /// Report usage.prompt_tokens_details.cached_tokens (off by default, as in vLLM).
    #[arg(long)]
    pub enable_prompt_tokens_details: bool,
    /// Enable LoRA (implied by --lora-modules).
    #[arg(long)]
    pub enable_lora: bool,
    /// LoRA adapters, name=path, space- or comma-separated.
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    pub lora_modules: Vec<String>,
    /// LoRA slots on the GPU.
    #[arg(long, default_value_t = 1)]
    pub max_loras: usize,
    /// Adapter load time in milliseconds (model time); default: the profile's.
    #[arg(long)]
    pub lora_load_ms: Option<f64>,
    /// vllm:lora_requests_info style: recent (both labels list every active adapter) or split.
    #[arg(long, default_value = "recent")]
    pub lora_info_style: String,
    /// Wall time per model second: 0.1 makes everything 10x faster.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Fault at start-up: MODE for every pod, or POD=MODE with POD an index or ip:port (repeatable).
    #[arg(long)]
    pub fault: Vec<String>,
    /// Tokio worker threads (1 is plenty for 16 pods).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Limits on the flags, with the reason.
const MAX_PODS: usize = 256; // one process, one port each; more is a configuration mistake
const MIN_TIME_SCALE: f64 = 0.001; // below this timer granularity (1 ms) dominates every step
const MAX_GPU_BLOCKS: usize = 4_000_000; // 64M tokens at block size 16: beyond any single GPU's KV cache
const MAX_TIME_SCALE: f64 = 1000.0; // slower than this, one decode step takes seconds: a typo
const MAX_TOKENIZER_CACHE_MB: usize = 64 * 1024; // 64 GiB: more than the machine has is a typo

impl FleetArgs {
    /// The pod addresses the flags name.
    pub fn addresses(&self) -> Result<Vec<SocketAddr>, String> {
        let list: Vec<String> = if self.addresses.is_empty() {
            if self.pods == 0 || self.pods > MAX_PODS {
                return Err(format!("--pods must be 1..={MAX_PODS}, got {}", self.pods));
            }
            (0..self.pods)
                .map(|i| {
                    let port = if self.base_port == 0 { 0 } else { u32::from(self.base_port) + i as u32 };
                    format!("{}:{port}", self.host)
                })
                .collect()
        } else {
            self.addresses.clone()
        };
        list.iter()
            .map(|a| {
                let a = a.trim();
                a.parse::<SocketAddr>().map_err(|e| format!("bad pod address {a:?} ({e}); expected ip:port"))
            })
            .collect()
    }

    /// The pod configuration the flags describe (faults applied per pod by [`FleetArgs::faults`]).
    pub fn pod_config(&self) -> Result<PodConfig, String> {
        let p = profile::by_name(&self.profile)?;
        if !(MIN_TIME_SCALE..=MAX_TIME_SCALE).contains(&self.time_scale) {
            return Err(format!(
                "--time-scale must be in {MIN_TIME_SCALE}..={MAX_TIME_SCALE}, got {}",
                self.time_scale
            ));
        }
        if self.block_size == 0 || self.block_size > 1024 {
            return Err(format!("--block-size must be 1..=1024, got {}", self.block_size));
        }
        let mut time = p.time;
        if let Some(ms) = self.lora_load_ms {
            time.lora_load_s = ms / 1000.0;
        }
        let (lora_modules, lora_info_style) = self.lora()?;
        let num_gpu_blocks = self.num_gpu_blocks.unwrap_or(p.num_gpu_blocks);
        if !(2..=MAX_GPU_BLOCKS).contains(&num_gpu_blocks) {
            return Err(format!(
                "--num-gpu-blocks must be 2..={MAX_GPU_BLOCKS} (block 0 is the null block), got {num_gpu_blocks}"
            ));
        }
        let max_num_seqs = self.max_num_seqs.unwrap_or(p.max_num_seqs).max(1);
        let max_num_batched_tokens = self.max_num_batched_tokens.unwrap_or(p.max_num_batched_tokens).max(1);
        let model = self.model.clone().unwrap_or_else(|| p.model.to_string());
        let tokenizer = self.tokenizer()?;
        Ok(PodConfig {
            engine: EngineConfig {
                block_size: self.block_size,
                num_gpu_blocks,
                max_num_seqs,
                max_num_batched_tokens,
                max_model_len: self.max_model_len.unwrap_or(p.max_model_len).max(2),
                enable_prefix_caching: !self.no_enable_prefix_caching,
                max_loras: self.max_loras.max(1),
                time,
            },
            served_model_name: self.served_model_name.clone().unwrap_or_else(|| model.clone()),
            model,
            lora_modules,
            enable_lora: self.enable_lora,
            enable_prompt_tokens_details: self.enable_prompt_tokens_details,
            time_scale: self.time_scale,
            lora_info_style,
            gpu_memory_utilization: p.gpu_memory_utilization,
            fault: FaultMode::None,
            tokenizer: Arc::new(tokenizer),
        })
    }

    /// `--lora-modules` as (name, path) pairs, and `--lora-info-style`.
    fn lora(&self) -> Result<(Vec<(String, String)>, LoraInfoStyle), String> {
        let mut modules = Vec::new();
        for m in &self.lora_modules {
            let (name, path) = m.split_once('=').unwrap_or((m.as_str(), m.as_str()));
            if name.is_empty() {
                return Err(format!("bad --lora-modules entry {m:?}; expected name=path"));
            }
            modules.push((name.to_string(), path.to_string()));
        }
        let style = match self.lora_info_style.as_str() {
            "recent" => LoraInfoStyle::Recent,
            "split" => LoraInfoStyle::Split,
            other => return Err(format!("--lora-info-style must be recent or split, got {other:?}")),
        };
        Ok((modules, style))
    }

    /// `--tokenizer`, `--vocab` and `--tokenizer-cache-mb`: the fleet's one tokenizer.
    pub fn tokenizer(&self) -> Result<Tokenizer, String> {
        if self.tokenizer_cache_mb > MAX_TOKENIZER_CACHE_MB {
            return Err(format!(
                "--tokenizer-cache-mb must be 0..={MAX_TOKENIZER_CACHE_MB}, got {}",
                self.tokenizer_cache_mb
            ));
        }
        Ok(Tokenizer::from_flags(&self.tokenizer, self.vocab.as_deref())?
            .with_cache_bytes(self.tokenizer_cache_mb * 1024 * 1024))
    }

    /// The start-up fault of each pod.
    pub fn faults(&self, addresses: &[SocketAddr]) -> Result<Vec<FaultMode>, String> {
        let mut out = vec![FaultMode::None; addresses.len()];
        for f in &self.fault {
            match f.rsplit_once('=') {
                None => {
                    let mode = FaultMode::parse(f)?;
                    out.iter_mut().for_each(|m| *m = mode);
                }
                Some((pod, mode)) => {
                    let mode = FaultMode::parse(mode)?;
                    let i = match pod.parse::<usize>() {
                        Ok(i) if i < addresses.len() => i,
                        Ok(i) => return Err(format!("--fault pod index {i} out of range (0..{})", addresses.len())),
                        Err(_) => addresses
                            .iter()
                            .position(|a| a.to_string() == pod)
                            .ok_or_else(|| format!("--fault names {pod:?}, which is not a pod address"))?,
                    };
                    out[i] = mode;
                }
            }
        }
        Ok(out)
    }
}

/// A started fleet.
pub struct Fleet {
    pub pods: Vec<Arc<Pod>>,
}

impl Fleet {
    /// Starts one pod per address on the current runtime.
    pub async fn start(addresses: &[SocketAddr], config: &PodConfig, faults: &[FaultMode]) -> Result<Fleet, String> {
        let mut pods = Vec::with_capacity(addresses.len());
        for (i, a) in addresses.iter().enumerate() {
            let mut c = config.clone();
            c.fault = faults.get(i).copied().unwrap_or(FaultMode::None);
            let pod = Pod::start(*a, c).await.map_err(|e| format!("cannot listen on {a}: {e}"))?;
            pods.push(pod);
        }
        Ok(Fleet { pods })
    }

    pub fn addresses(&self) -> Vec<String> {
        self.pods.iter().map(|p| p.address.to_string()).collect()
    }

    /// Resolves when every pod has exited.
    pub async fn all_exited(&self) {
        for p in &self.pods {
            p.exited().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        fleet: FleetArgs,
    }

    fn args(argv: &[&str]) -> FleetArgs {
        Cli::try_parse_from(std::iter::once("sim").chain(argv.iter().copied())).unwrap().fleet
    }

    #[test]
    fn pods_take_consecutive_ports_or_explicit_addresses() {
        let a = args(&["--pods", "3", "--base-port", "9000"]).addresses().unwrap();
        assert_eq!(a.iter().map(|x| x.port()).collect::<Vec<_>>(), vec![9000, 9001, 9002]);
        let a = args(&["--listen", "127.0.0.1:1,127.0.0.1:2"]).addresses().unwrap();
        assert_eq!(a.len(), 2);
        assert!(args(&["--addresses", "nonsense"]).addresses().is_err());
    }

    #[test]
    fn faults_apply_to_all_pods_or_one_by_index_or_address() {
        let addrs = args(&["--pods", "3", "--base-port", "9000"]).addresses().unwrap();
        let f =
            args(&["--fault", "stall", "--fault", "1=none", "--fault", "127.0.0.1:9002=exit"]).faults(&addrs).unwrap();
        assert_eq!(f, vec![FaultMode::Stall, FaultMode::None, FaultMode::Exit]);
        assert!(args(&["--fault", "5=stall"]).faults(&addrs).is_err());
        assert!(args(&["--fault", "melt"]).faults(&addrs).is_err());
    }

    #[test]
    fn flags_override_the_profile_and_bad_values_are_refused() {
        let c = args(&["--num-gpu-blocks", "100", "--lora-modules", "a=/x", "b=/y", "--time-scale", "0.5"])
            .pod_config()
            .unwrap();
        assert_eq!(c.engine.num_gpu_blocks, 100);
        assert_eq!(c.lora_modules, vec![("a".to_string(), "/x".to_string()), ("b".to_string(), "/y".to_string())]);
        assert!(args(&["--time-scale", "0"]).pod_config().is_err());
        assert!(args(&["--profile", "h100"]).pod_config().is_err());
    }

    #[test]
    fn the_served_model_name_defaults_to_the_hugging_face_id_as_in_vllm() {
        let c = args(&["--tokenizer", "chars:4"]).pod_config().unwrap();
        assert_eq!((c.model.as_str(), c.served_model_name.as_str()), ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B"));
        let c = args(&["--tokenizer", "chars:4", "--served-model-name", "qwen3"]).pod_config().unwrap();
        assert_eq!(c.served_model_name, "qwen3");
        assert_eq!(c.tokenizer.name(), "chars:4");
        assert!(args(&["--tokenizer", "wordpiece"]).pod_config().is_err());
    }
}
