//! Every call into the plugin's scheduling core (crate `wasm-inference-scheduler`), in one file.
//!
//! It follows the filter's lifecycle (`plugin/src/host/http.rs`) step by step, so that a change of
//! the core's API lands here and nowhere else:
//!
//! request headers → [`Core::classify`]: an inference path or a passthrough, and the headers the
//!   scheduler reads;
//! request body → [`Core::on_request_body`]: parsed, scheduled, a [`Routed`] ticket with the
//!   destination (or a [`LocalReply`]), the in-flight count charged;
//! response headers → [`Core::on_response_headers`]: which endpoint really served (a retry may have
//!   moved it), the pod's ORCA load report, the response headers to add;
//! response body → [`Routed::observe_body`] keeps a bounded tail; at its end
//!   [`Core::on_response_end`] reads the pod's `cached_tokens` report;
//! end of stream (normal or reset) → [`Core::release`], exactly once.
//!
//! The lifecycle itself is the core's [`Director`] and [`Flight`], the same the filter runs: this
//! file only carries their events to the one [`RoutingMemory`] of this process (directly, no shared
//! log) and turns outcomes into headers and stats. The core's scheduler holds its scorers as
//! `Box<dyn Scorer>` without a `Send` bound (the filter is single-threaded), so the core lives on
//! one thread of its own and the gRPC tasks hand it work through a [`CoreHandle`]: a single owner,
//! no lock, each job a few microseconds. What only reads the configuration ([`classify`]) runs on
//! the caller's task.

use crate::stats::Stats;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;
use wasm_inference_scheduler::config::{HeaderNames, PluginConfig};
use wasm_inference_scheduler::director::{Director, Flight};
use wasm_inference_scheduler::endpoints::Pool;
use wasm_inference_scheduler::error::LocalReply;
use wasm_inference_scheduler::feedback::{self, ResponseTail};
use wasm_inference_scheduler::memory::{RoutingEvent, RoutingMemory};
use wasm_inference_scheduler::pool::PoolSnapshot;
use wasm_inference_scheduler::request::{ApiKind, RequestHeaders};
use wasm_inference_scheduler::scheduler::SchedulingContext;

/// The plugin's director (configuration and scheduler), the routing memory and the pool they
/// decide on.
pub struct Core {
    director: Director,
    memory: RoutingMemory,
    /// The scraper's latest snapshot, else the static endpoints (never scraped, so stale).
    pool: Pool,
    /// `sequence` of the adopted scraper snapshot; `None` while on the static endpoints.
    adopted: Option<u64>,
    stats: Arc<Stats>,
    seed: u64,
}

/// What the request headers say about a request.
#[derive(Debug, Clone)]
pub struct RequestStart {
    pub api: ApiKind,
    pub headers: RequestHeaders,
}

/// A request that was routed: what the response side needs, until it is released.
#[derive(Debug)]
pub struct Routed {
    /// `x-gateway-destination-endpoint`: primary, then fallbacks.
    pub destination: String,
    /// The debug header's value, when the configuration turns it on.
    pub debug: Option<String>,
    /// What the response side needs (the core's lifecycle of this request).
    flight: Flight,
    tail: ResponseTail,
}

impl Routed {
    /// Keeps the bounded tail of the response body where the pod's usage report sits; nothing
    /// when the response cannot carry one (a stream without `include_usage`).
    pub fn observe_body(&mut self, chunk: &[u8]) {
        if self.flight.expects_usage() {
            let keep = chunk.len().min(feedback::RESPONSE_TAIL_BYTES);
            self.tail.push(&chunk[chunk.len() - keep..]);
        }
    }

    /// The endpoint the request is charged to (the served one once the response said so).
    pub fn charged(&self) -> &str {
        self.flight.endpoint()
    }
}

/// Headers to add to a response.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResponseHeaders {
    pub set: Vec<(String, String)>,
}

/// Endpoint counts by state, for the metrics page.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolCounts {
    pub total: usize,
    pub healthy: usize,
    /// Healthy, but the latest scrape gave no reading: scheduled on our own counts.
    pub unknown_metrics: usize,
    pub in_flight: u64,
    pub snapshot_age_ms: Option<u64>,
}

impl Core {
    /// Builds the core from a configuration read by [`read_config`].
    pub fn new(config: PluginConfig, stats: Arc<Stats>) -> Result<Self, String> {
        let director = Director::new(config).map_err(|e| format!("configuration rejected: {e}"))?;
        let mut memory = RoutingMemory::new(director.config());
        let pool = director.install(&mut memory, PoolSnapshot::from_static(&director.config().pool.endpoints));
        Ok(Self { director, memory, pool, adopted: None, stats, seed: seed_from_clock() })
    }

    /// Adopts the scraper's snapshot if it is newer than the one in use; the memory follows the
    /// pool (departed endpoints forgotten, prefix capacity from each pod's KV cache).
    pub fn adopt_pool(&mut self, snapshot: &PoolSnapshot) {
        if self.adopted == Some(snapshot.sequence) {
            return;
        }
        self.pool = self.director.install(&mut self.memory, snapshot.clone());
        self.adopted = Some(snapshot.sequence);
    }

    pub fn pool(&self) -> &PoolSnapshot {
        &self.pool.snapshot
    }

    pub fn pool_counts(&self, now_ms: u64) -> PoolCounts {
        let max_age = self.director.config().pool.metrics_staleness_ms;
        let mut counts = PoolCounts { total: self.pool.len(), ..Default::default() };
        for (endpoint, &id) in self.pool.endpoints().iter().zip(self.pool.ids()) {
            counts.healthy += usize::from(endpoint.healthy);
            counts.unknown_metrics += usize::from(endpoint.healthy && !endpoint.metrics_known(now_ms, max_age));
            counts.in_flight += u64::from(self.memory.in_flight(id).requests);
        }
        counts.snapshot_age_ms = self.adopted.map(|_| now_ms.saturating_sub(self.pool.snapshot.generated_at_ms));
        counts
    }

    /// Request body (the whole of it): the decision, or the local reply that takes its place.
    pub fn on_request_body(&mut self, start: &RequestStart, body: &[u8]) -> Result<Routed, LocalReply> {
        let started = Instant::now();
        self.seed = scheduler_seed(self.seed);
        let ctx = SchedulingContext {
            now_ms: unix_ms(),
            pool: &self.pool,
            memory: &self.memory,
            random_seed: self.seed,
            detail: self.director.wants_detail(),
        };
        let routed = self.director.route(start.api, body, &start.headers, &ctx)?;
        self.memory.apply(&routed.flight.routed_event());
        self.stats.decision(routed.flight.endpoint(), routed.decision.fell_back_to_all, started.elapsed());
        Ok(Routed {
            destination: routed.destination,
            debug: routed.debug,
            flight: routed.flight,
            tail: ResponseTail::default(),
        })
    }

    /// Response headers: `served` is the endpoint the proxy reports (metadata or
    /// `upstream.address`), `orca` the pod's `endpoint-load-metrics` header.
    pub fn on_response_headers(
        &mut self,
        routed: &mut Routed,
        served: Option<&str>,
        orca: Option<&str>,
    ) -> ResponseHeaders {
        if let Some(moved) = served.and_then(|served| routed.flight.served_by(served, &self.pool)) {
            self.stats.served_elsewhere();
            self.memory.apply(&moved);
        }
        if let Some(report) = orca {
            self.pool.apply_orca(routed.flight.endpoint(), &feedback::parse_orca(report), unix_ms());
        }
        let names = &self.director.config().headers;
        let mut out = ResponseHeaders::default();
        if let Some(token) = self.director.session_token(routed.flight.endpoint(), unix_ms()) {
            out.set.push((names.session.clone(), token));
        }
        if let Some(debug) = &routed.debug {
            out.set.push((names.debug.clone(), debug.clone()));
        }
        out
    }

    /// End of the response body: the pod's usage report calibrates bytes per token and corrects
    /// the prefix index (the events apply at [`release`](Self::release)).
    pub fn on_response_end(&mut self, routed: &mut Routed) {
        let Some(usage) = feedback::scan_usage(routed.tail.as_bytes()) else {
            self.stats.no_feedback();
            return;
        };
        let outcome = routed.flight.on_usage(usage, &self.memory);
        if outcome.had_cached_tokens {
            self.stats.feedback(outcome.predicted_blocks, outcome.observed_blocks, outcome.prompt_blocks as usize);
        } else {
            // The pod runs without --enable-prompt-tokens-details: the index runs open loop.
            self.stats.no_feedback();
        }
    }

    /// Releases the in-flight count (and applies the pod's report), once, whether the stream ended
    /// normally or was reset.
    pub fn release(&mut self, routed: &mut Routed) {
        let events: Vec<RoutingEvent> = routed.flight.finish();
        if events.is_empty() {
            return;
        }
        for event in &events {
            self.memory.apply(event);
        }
        self.stats.released();
    }

    /// Requests routed to `endpoint` and not yet released.
    pub fn in_flight(&self, endpoint: &str) -> u32 {
        self.memory.in_flight_of(endpoint).requests
    }

    #[cfg(test)]
    pub fn matched_blocks(&self, body: &[u8], endpoint: &str) -> u32 {
        let config = self.director.config();
        let request = wasm_inference_scheduler::request::parse_request(
            ApiKind::ChatCompletions,
            body,
            &RequestHeaders::default(),
            config,
        )
        .expect("a valid body");
        self.memory.id_of(endpoint).map_or(0, |id| self.memory.prefix.matched_blocks(&request.block_hashes, id))
    }
}

/// Reads the plugin's JSON configuration (the filter's schema, `plugin/CONFIG.md`), with the static
/// endpoints used until the scraper's first snapshot, and checks that a scheduler can be built.
pub fn read_config(config_json: &[u8], static_endpoints: &[String]) -> Result<PluginConfig, String> {
    let mut config = PluginConfig::from_json(config_json).map_err(|e| format!("configuration rejected: {e}"))?;
    if !static_endpoints.is_empty() {
        config.pool.endpoints = static_endpoints.to_vec();
    }
    Director::new(config.clone()).map_err(|e| format!("configuration rejected: {e}"))?;
    Ok(config)
}

/// Request headers: the API of an inference path, or `None` for a path that passes through.
pub fn classify(
    config: &PluginConfig,
    path: &str,
    header: impl Fn(&str) -> Option<String>,
    subset: Option<String>,
) -> Option<RequestStart> {
    let api = ApiKind::from_path(path, config)?;
    let names = &config.headers;
    let headers = RequestHeaders { subset, objective: header(&names.objective), session_token: header(&names.session) };
    Some(RequestStart { api, headers })
}

/// The header names of the configuration.
pub fn header_names(config: &PluginConfig) -> &HeaderNames {
    &config.headers
}

/// The body limit of the configuration (beyond it: 413).
pub fn max_body_bytes(config: &PluginConfig) -> usize {
    config.limits.max_body_bytes
}

type Job = Box<dyn FnOnce(&mut Core) + Send>;

/// The way to the core's thread: jobs run there one at a time, in the order they were sent.
#[derive(Clone)]
pub struct CoreHandle {
    config: Arc<PluginConfig>,
    jobs: mpsc::Sender<Job>,
}

impl CoreHandle {
    /// Starts the core's thread; it ends when the last handle is dropped.
    pub fn spawn(config: PluginConfig, stats: Arc<Stats>) -> Result<Self, String> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (built, outcome) = mpsc::channel();
        let for_core = config.clone();
        std::thread::Builder::new()
            .name("wis-epp-core".into())
            .spawn(move || {
                let mut core = match Core::new(for_core, stats) {
                    Ok(core) => {
                        let _ = built.send(Ok(()));
                        core
                    }
                    Err(e) => {
                        let _ = built.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    job(&mut core);
                }
            })
            .map_err(|e| format!("cannot start the core's thread: {e}"))?;
        outcome.recv().map_err(|_| "the core's thread ended at start".to_string())??;
        Ok(Self { config: Arc::new(config), jobs })
    }

    pub fn config(&self) -> &PluginConfig {
        &self.config
    }

    /// Runs `f` on the core and waits for its answer. `None` only if the core's thread is gone.
    pub async fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Core) -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |core| {
            let _ = tx.send(f(core));
        });
        self.jobs.send(job).ok()?;
        rx.await.ok()
    }

    /// Runs `f` on the core without waiting (a release from a destructor).
    pub fn tell(&self, f: impl FnOnce(&mut Core) + Send + 'static) {
        let _ = self.jobs.send(Box::new(f));
    }
}

/// Unix milliseconds (the snapshot's clock).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
}

/// A fresh seed per decision for the random pickers (splitmix64 step).
fn scheduler_seed(previous: u64) -> u64 {
    let mut x = previous.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "10.0.0.1:8000";
    const B: &str = "10.0.0.2:8000";

    fn core(config: &str) -> Core {
        let config = read_config(config.as_bytes(), &[A.to_string(), B.to_string()]).unwrap();
        Core::new(config, Arc::new(Stats::default())).unwrap()
    }

    fn chat(text: &str) -> Vec<u8> {
        serde_json::json!({"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": text}]})
            .to_string()
            .into_bytes()
    }

    fn start(core: &Core) -> RequestStart {
        classify(core.director.config(), "/v1/chat/completions", |_| None, None).expect("an inference path")
    }

    #[test]
    fn routing_charges_and_release_frees_exactly_once() {
        let mut core = core("{}");
        let mut routed = core.on_request_body(&start(&core), &chat("hello")).unwrap();
        let primary = routed.charged().to_string();
        assert!(routed.destination.starts_with(&primary));
        assert_eq!(core.in_flight(&primary), 1);
        core.release(&mut routed);
        core.release(&mut routed);
        assert_eq!(core.in_flight(&primary), 0);
    }

    #[test]
    fn a_retry_moves_the_charge_to_the_endpoint_that_served() {
        let mut core = core("{}");
        let mut routed = core.on_request_body(&start(&core), &chat("hello")).unwrap();
        let other = if routed.charged() == A { B } else { A };
        core.on_response_headers(&mut routed, Some(other), None);
        assert_eq!(routed.charged(), other);
        assert_eq!(core.in_flight(other), 1);
        core.on_response_headers(&mut routed, Some("10.9.9.9:1"), None);
        assert_eq!(routed.charged(), other, "a non-member never takes the charge");
        core.release(&mut routed);
        assert_eq!(core.in_flight(A) + core.in_flight(B), 0);
    }

    #[test]
    fn the_pods_cached_tokens_correct_a_wrong_prediction() {
        let config = read_config(b"{}", &[A.to_string()]).unwrap();
        let stats = Arc::new(Stats::default());
        let mut core = Core::new(config, stats.clone()).unwrap();
        let texts: Vec<String> = ["a shared system prompt", "another conversation", "a third one", "and a fourth"]
            .iter()
            .map(|t| format!("{t} that is long enough for several prefix blocks of text. ").repeat(20))
            .collect();
        for text in &texts {
            let mut routed = core.on_request_body(&start(&core), &chat(text)).unwrap();
            core.release(&mut routed);
        }
        assert!(core.matched_blocks(&chat(&texts[3]), A) > 0, "routing recorded every prefix");
        // Three different prompts find nothing cached where the index predicted them: the pod lost
        // its cache (one could have raced another request's prefill).
        for text in &texts[..3] {
            let mut again = core.on_request_body(&start(&core), &chat(text)).unwrap();
            again.observe_body(br#"{"usage":{"prompt_tokens":300,"prompt_tokens_details":{"cached_tokens":0}}}"#);
            core.on_response_end(&mut again);
            core.release(&mut again);
        }
        assert_eq!(core.matched_blocks(&chat(&texts[3]), A), 0, "the pod lost its cache: the index forgets it");
        assert!(core.matched_blocks(&chat(&texts[2]), A) > 0, "it now holds the prompt it just served");
        let page = stats.render(&core.pool_counts(unix_ms()), &[A.to_string()], true);
        assert!(page.contains("wis_epp_prefix_predictions_total{outcome=\"wrong\"} 3"), "{page}");
    }

    #[test]
    fn bad_bodies_and_unknown_models_are_local_replies() {
        let mut core = core(r#"{"models":{"served":["Qwen/Qwen3-0.6B"]}}"#);
        let s = start(&core);
        assert_eq!(core.on_request_body(&s, b"{not json").unwrap_err().status, 400);
        let other = br#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#;
        assert_eq!(core.on_request_body(&s, other).unwrap_err().status, 404);
        let config = core.director.config().clone();
        let subset = classify(&config, "/v1/chat/completions", |_| None, Some("10.9.9.9:1".into())).unwrap();
        assert_eq!(core.on_request_body(&subset, &chat("x")).unwrap_err().status, 503);
        assert!(classify(&config, "/v1/models", |_| None, None).is_none(), "other paths pass through");
    }

    #[test]
    fn session_tokens_only_with_the_session_scorer() {
        let mut plain = core("{}");
        let mut routed = plain.on_request_body(&start(&plain), &chat("x")).unwrap();
        assert_eq!(plain.on_response_headers(&mut routed, None, None), ResponseHeaders::default());
        let mut session = core(
            r#"{"endpointPickerConfig":{"plugins":[{"type":"session-affinity-scorer","parameters":{"secret":"an epp test session key"}},
                {"type":"queue-scorer"}]}}"#,
        );
        let mut routed = session.on_request_body(&start(&session), &chat("x")).unwrap();
        let headers = session.on_response_headers(&mut routed, None, None);
        assert_eq!(headers.set.len(), 1);
        assert_eq!(headers.set[0].0, "x-session-token");
        let hex: String = routed.charged().bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!headers.set[0].1.contains(routed.charged()) && !headers.set[0].1.contains(&hex), "opaque");
    }

    #[test]
    fn a_newer_snapshot_replaces_the_static_pool() {
        let mut core = core("{}");
        let mut snapshot = PoolSnapshot::from_static(&["10.0.0.3:8000".to_string()]);
        snapshot.sequence = 7;
        snapshot.generated_at_ms = unix_ms();
        core.adopt_pool(&snapshot);
        let routed = core.on_request_body(&start(&core), &chat("x")).unwrap();
        assert_eq!(routed.destination, "10.0.0.3:8000");
        assert_eq!(core.pool_counts(unix_ms()).total, 1);
    }

    #[tokio::test]
    async fn the_handle_runs_jobs_on_the_core_in_order() {
        let config = read_config(b"{}", &[A.to_string()]).unwrap();
        let handle = CoreHandle::spawn(config, Arc::new(Stats::default())).unwrap();
        let start = classify(handle.config(), "/v1/chat/completions", |_| None, None).unwrap();
        let routed = handle.call(move |core| core.on_request_body(&start, &chat("x"))).await.unwrap().unwrap();
        assert_eq!(routed.destination, A);
        let mut routed = Some(routed);
        handle.tell(move |core| {
            if let Some(r) = routed.as_mut() {
                core.release(r)
            }
        });
        assert_eq!(handle.call(|core| core.in_flight(A)).await, Some(0), "the release ran before this call");
        assert!(read_config(br#"{"endpointPickerConfig":{"plugins":[{"type":"nope"}]}}"#, &[]).is_err());
    }
}
