//! One simulated vLLM server: an HTTP front end (hyper 1) over an [`Engine`] driven by a timer task.
//!
//! The engine task sleeps until the planned end of each step (model time × `--time-scale`), applies
//! it and hands every token to its request's channel; with nothing to do it waits for a request. No
//! busy loop: an idle pod costs nothing, a busy one one wake-up per engine step.
//!
//! Every response carries `x-sim-pod: <ip:port>` so routing can be observed through a proxy.
//! Faults (`POST /admin/fault {"mode": ...}` or `--fault` at start-up) act on everything but `/admin`:
//! `stall` (requests and the engine hang until the mode changes), `error500`, `close` (the connection
//! is closed without a response), `exit` (the pod stops listening and drops its connections; the other
//! pods of the fleet keep running), `metrics404` and `metrics-garbage` (only `/metrics` breaks: a 404,
//! or a 200 whose text is not a Prometheus exposition; serving goes on), `none`.
//!
//! Parts: `server` (connections, routing, admin), `faults` (the modes), `stream` (SSE and full
//! answers), `metrics` (the exposition as a table of families).

mod admit;
mod faults;
mod metrics;
mod server;
mod stream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};

use crate::engine::{Engine, EngineConfig, EngineRequest, Output};
use crate::tokenizer::Tokenizer;

pub use faults::FaultMode;
pub use metrics::{FAMILIES, Family, Read};

/// Header naming the pod that answered.
pub const POD_HEADER: &str = "x-sim-pod";
/// Largest request body accepted (a 40,960-token prompt is ~160 KB of text; JSON overhead on top).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Bound on persisted `vllm:lora_requests_info` label sets (vLLM keeps every one; we cap memory).
pub const MAX_LORA_INFO_SERIES: usize = 256;
/// Output length when a request sets no `max_tokens`: drawn per prompt in this range, as a model
/// stopping at EOS would (finish reason `stop`).
pub const DEFAULT_OUTPUT_TOKENS: (u32, u32) = (16, 256);

/// How `vllm:lora_requests_info` lists adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraInfoStyle {
    /// Recent vLLM: every adapter with a waiting *or* running request appears in both labels.
    Recent,
    /// Older vLLM (~0.8-0.10): an adapter appears in a label only when its count there is > 0.
    Split,
}

/// Everything one pod needs to know.
#[derive(Debug, Clone)]
pub struct PodConfig {
    pub engine: EngineConfig,
    /// `--model` (the `root` in /v1/models).
    pub model: String,
    /// `--served-model-name`: the name clients must send.
    pub served_model_name: String,
    /// `--lora-modules name=path`; LoRA is enabled when non-empty or `enable_lora`.
    pub lora_modules: Vec<(String, String)>,
    pub enable_lora: bool,
    pub enable_prompt_tokens_details: bool,
    pub time_scale: f64,
    pub lora_info_style: LoraInfoStyle,
    pub gpu_memory_utilization: f64,
    pub fault: FaultMode,
    /// Shared by every pod of a fleet (so is its cache of encoded messages).
    pub tokenizer: Arc<Tokenizer>,
}

impl PodConfig {
    pub(crate) fn lora_enabled(&self) -> bool {
        self.enable_lora || !self.lora_modules.is_empty()
    }
}

struct Core {
    engine: Engine,
    sinks: HashMap<u64, mpsc::UnboundedSender<Output>>,
    /// `vllm:lora_requests_info` label sets (max, running, waiting) with their last Unix time.
    lora_series: Vec<((String, String, String), f64)>,
}

/// A running pod.
pub struct Pod {
    pub address: SocketAddr,
    config: PodConfig,
    core: Mutex<Core>,
    wake: Notify,
    fault: watch::Sender<FaultMode>,
    t0: Instant,
    created_unix: f64,
    next_id: AtomicU64,
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Pod {
    /// Model time now: real time since start divided by the time scale.
    fn vnow(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() / self.config.time_scale
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock would be a bug; keep serving with the state as it is.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn fault(&self) -> FaultMode {
        *self.fault.borrow()
    }

    pub fn set_fault(&self, mode: FaultMode) {
        self.fault.send_replace(mode);
        self.wake.notify_one();
    }

    fn abort(&self, id: u64) {
        let now = self.vnow();
        let mut core = self.lock();
        core.sinks.remove(&id);
        core.engine.abort(id, now);
    }

    /// Binds the listener and starts the pod's tasks on the current tokio runtime.
    pub async fn start(address: SocketAddr, config: PodConfig) -> std::io::Result<Arc<Pod>> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let (fault, _) = watch::channel(config.fault);
        let engine = Engine::new(config.engine.clone());
        let pod = Arc::new(Pod {
            address,
            config,
            core: Mutex::new(Core { engine, sinks: HashMap::new(), lora_series: Vec::new() }),
            wake: Notify::new(),
            fault,
            t0: Instant::now(),
            created_unix: unix_now(),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(run_engine(pod.clone()));
        tokio::spawn(server::accept_loop(pod.clone(), listener));
        Ok(pod)
    }

    /// Resolves when the pod has exited (fault `exit`).
    pub async fn exited(&self) {
        let mut rx = self.fault.subscribe();
        let _ = rx.wait_for(|m| *m == FaultMode::Exit).await;
    }

    /// The Prometheus exposition of this pod.
    pub fn metrics_text(&self) -> String {
        metrics::exposition(&self.lock(), &self.config, self.created_unix)
    }

    fn record_lora_info(core: &mut Core, config: &PodConfig) {
        if !config.lora_enabled() {
            return;
        }
        let (running, waiting) = core.engine.lora_adapters();
        let (running, waiting) = match config.lora_info_style {
            LoraInfoStyle::Split => (running.join(","), waiting.join(",")),
            LoraInfoStyle::Recent => {
                let mut all = running;
                for w in waiting {
                    if !all.contains(&w) {
                        all.push(w);
                    }
                }
                let s = all.join(",");
                (s.clone(), s)
            }
        };
        let key = (config.engine.max_loras.to_string(), running, waiting);
        let now = unix_now();
        if let Some(entry) = core.lora_series.iter_mut().find(|(k, _)| *k == key) {
            entry.1 = now;
        } else {
            if core.lora_series.len() >= MAX_LORA_INFO_SERIES {
                core.lora_series.remove(0);
            }
            core.lora_series.push((key, now));
        }
    }

    fn models_json(&self) -> Value {
        let created = self.created_unix as u64;
        let c = &self.config;
        let mut data = vec![json!({
            "id": c.served_model_name, "object": "model", "created": created, "owned_by": "vllm",
            "root": c.model, "parent": null, "max_model_len": c.engine.max_model_len,
        })];
        for (name, path) in &c.lora_modules {
            data.push(json!({
                "id": name, "object": "model", "created": created, "owned_by": "vllm",
                "root": path, "parent": c.served_model_name, "max_model_len": null,
            }));
        }
        json!({"object": "list", "data": data})
    }

    fn submit(&self, req: EngineRequest) -> mpsc::UnboundedReceiver<Output> {
        let (tx, rx) = mpsc::unbounded_channel();
        let now = self.vnow();
        {
            let mut core = self.lock();
            core.sinks.insert(req.id, tx);
            core.engine.add_request(req, now);
        }
        self.wake.notify_one();
        rx
    }
}

/// The engine loop of one pod (see the module comment).
async fn run_engine(pod: Arc<Pod>) {
    let mut fault = pod.fault.subscribe();
    let mut clock = 0.0f64;
    let mut busy = false;
    loop {
        let mode = *fault.borrow_and_update();
        match mode {
            FaultMode::Exit => break,
            FaultMode::Stall => {
                if fault.changed().await.is_err() {
                    break;
                }
                busy = false;
                continue;
            }
            _ => {}
        }
        let now = if busy { clock } else { clock.max(pod.vnow()) };
        let step = pod.lock().engine.schedule(now);
        let Some(step) = step else {
            busy = false;
            tokio::select! {
                _ = pod.wake.notified() => {}
                r = fault.changed() => if r.is_err() { break },
            }
            continue;
        };
        busy = true;
        let end = step.start + step.duration;
        let wake_at = pod.t0 + Duration::from_secs_f64((end * pod.config.time_scale).max(0.0));
        tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at)).await;
        clock = end;
        let mut core = pod.lock();
        let outputs = core.engine.complete(step, end);
        Pod::record_lora_info(&mut core, &pod.config);
        let mut gone = Vec::new();
        for out in outputs {
            let (id, done) = match &out {
                Output::Token { id, .. } => (*id, false),
                Output::Finished { id, .. } => (*id, true),
            };
            let delivered = core.sinks.get(&id).is_some_and(|tx| tx.send(out).is_ok());
            if done {
                core.sinks.remove(&id);
            } else if !delivered {
                gone.push(id);
            }
        }
        for id in gone {
            core.sinks.remove(&id);
            core.engine.abort(id, end);
        }
    }
    // Exit: drop every sink so streams in flight end.
    pod.lock().sinks.clear();
}
