//! One request's lifecycle, shared by every host of the core: the proxy-wasm filter (`host/`) and
//! the out-of-process endpoint picker (`wis-epp`). Named after GAIE's request-control `Director`.
//!
//! ```text
//! request body   → Director::route: parse, resolve the session token, schedule
//!                  → Routed { destination header, debug header, Flight } or a LocalReply
//! routed         → Flight::routed_event         (count it in flight, record its prefix)
//! response start → Flight::served_by(address)   (a retry may have moved it: Moved)
//! response end   → Flight::on_usage(usage)      (the pod's token counts: calibration, correction)
//! stream end     → Flight::finish               (Reported + Released, exactly once)
//! ```
//!
//! The director decides; the host carries the events to the routing memory (directly in one
//! process, through the replicated log across Envoy workers) and turns outcomes into headers,
//! replies and stats. Nothing here touches a host ABI.

use crate::config::{DebugHeader, PluginConfig};
use crate::decision::Decision;
use crate::endpoints::Pool;
use crate::error::LocalReply;
use crate::feedback::ReportedUsage;
use crate::memory::{Report, RoutingEvent, RoutingMemory};
use crate::pool::PoolSnapshot;
use crate::prefix::RESET_MIN_PREDICTED_BLOCKS;
use crate::request::{self, ApiKind, RequestHeaders, SchedulingRequest};
use crate::scheduler::{Scheduler, SchedulingContext};
use crate::service_extensions::{self, StatelessRoute};
use crate::session::{Pseudonym, SessionKey, TokenRejection};
use hashbrown::HashMap;

/// What a session token the client sent came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// No token, or no session scorer in the profile.
    None,
    /// Authentic, unexpired, naming a pool member: honoured.
    Accepted,
    /// Forged or tampered.
    Invalid,
    Expired,
    /// Authentic, but its endpoint left the pool.
    EndpointGone,
}

/// A routed request: what the host sets on it, and what it keeps for the response.
#[derive(Debug)]
pub struct Routed {
    /// Value of the destination header (`primary,fallback,...`).
    pub destination: String,
    /// Value of the debug header, when `debugHeader` is on.
    pub debug: Option<String>,
    pub decision: Decision,
    pub session: SessionOutcome,
    pub flight: Flight,
}

/// What a `usage` report told us, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageOutcome {
    /// The pod reported `cached_tokens`.
    pub had_cached_tokens: bool,
    pub predicted_blocks: u32,
    /// `cached_tokens` in the index's blocks, at the learned ratio.
    pub observed_blocks: u32,
    pub prompt_blocks: u32,
}

/// One request in flight: what the response side needs.
#[derive(Debug, Clone)]
pub struct Flight {
    /// The endpoint charged with the in-flight count: the primary until a retry moves it.
    endpoint: String,
    model: String,
    hashes: Vec<u64>,
    prompt_tokens: u32,
    prompt_bytes: u32,
    predicted_blocks: u32,
    expects_usage: bool,
    report: Option<Report>,
    finished: bool,
}

impl Flight {
    /// The endpoint serving it (as far as the gateway knows).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether the response can carry `usage`: a non-streamed response always does, a stream only
    /// with `stream_options.include_usage`. When false the host need not look at the body.
    pub fn expects_usage(&self) -> bool {
        self.expects_usage
    }

    /// Prompt tokens charged in flight (the prompt's bytes at the learned ratio).
    pub fn prompt_tokens(&self) -> u32 {
        self.prompt_tokens
    }

    /// The event that records the routing: in flight on the primary, prefix recorded there (the
    /// blocks the primary was predicted to hold named by their last one).
    pub fn routed_event(&self) -> RoutingEvent {
        RoutingEvent::routed(&self.endpoint, &self.hashes, self.predicted_blocks, self.prompt_tokens)
    }

    /// The endpoint that actually answered (a retry past a dead primary names a fallback). Returns
    /// the event moving the request there, when it moved to another pool member.
    pub fn served_by(&mut self, address: &str, pool: &Pool) -> Option<RoutingEvent> {
        if address == self.endpoint || pool.position_of(address).is_none() {
            return None;
        }
        let from = std::mem::replace(&mut self.endpoint, address.to_string());
        Some(RoutingEvent::Moved {
            from,
            to: self.endpoint.clone(),
            hashes: self.hashes.clone(),
            prompt_tokens: self.prompt_tokens,
        })
    }

    /// The pod's `usage` at the end of the response: kept for [`finish`](Self::finish), converted
    /// to the index's blocks at `memory`'s learned ratio for stats.
    pub fn on_usage(&mut self, usage: ReportedUsage, memory: &RoutingMemory) -> UsageOutcome {
        let observed = usage.cached_tokens.map(|cached| memory.cached_blocks(&self.model, cached)).unwrap_or(0);
        let may_reset = usage.cached_tokens == Some(0) && self.predicted_blocks >= RESET_MIN_PREDICTED_BLOCKS;
        self.report = Some(Report {
            endpoint: self.endpoint.clone(),
            model: self.model.clone(),
            hashes: if may_reset { self.hashes.clone() } else { Vec::new() },
            predicted_blocks: self.predicted_blocks,
            prompt_bytes: self.prompt_bytes,
            prompt_tokens: usage.prompt_tokens,
            cached_tokens: usage.cached_tokens,
        });
        UsageOutcome {
            had_cached_tokens: usage.cached_tokens.is_some(),
            predicted_blocks: self.predicted_blocks,
            observed_blocks: observed,
            prompt_blocks: self.hashes.len() as u32,
        }
    }

    /// The events that close the request, once: the pod's report (if any) and the release. Empty
    /// on every later call (a stream that ends and is then reset is released once).
    pub fn finish(&mut self) -> Vec<RoutingEvent> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        let mut events = Vec::with_capacity(2);
        if let Some(report) = self.report.take() {
            events.push(RoutingEvent::Reported(report));
        }
        events.push(RoutingEvent::Released { endpoint: self.endpoint.clone(), prompt_tokens: self.prompt_tokens });
        events
    }
}

/// Session-token pseudonyms of one pool's members, built when the pool is installed.
#[derive(Debug, Default, Clone)]
struct SessionTable {
    by_pseudonym: HashMap<Pseudonym, String>,
    by_address: HashMap<String, Pseudonym>,
}

/// The configured scheduling core of one host.
pub struct Director {
    config: PluginConfig,
    scheduler: Scheduler,
    /// Present when `session-affinity-scorer` is in the profile.
    session: Option<SessionKey>,
    sessions: std::cell::RefCell<SessionTable>,
}

impl Director {
    pub fn new(config: PluginConfig) -> Result<Self, crate::config::ConfigError> {
        let scheduler = Scheduler::new(&config)?;
        let session = if scheduler.uses("session-affinity-scorer") { config.session.clone() } else { None };
        Ok(Self { config, scheduler, session, sessions: Default::default() })
    }

    pub fn config(&self) -> &PluginConfig {
        &self.config
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Whether responses carry a session token (only with `session-affinity-scorer` in the profile).
    pub fn issues_session_tokens(&self) -> bool {
        self.session.is_some()
    }

    /// Installs a new pool in `memory` (see [`RoutingMemory::install`]) and prepares its session
    /// pseudonyms: one HMAC per member per snapshot, none per request.
    pub fn install(&self, memory: &mut RoutingMemory, snapshot: PoolSnapshot) -> Pool {
        let pool = memory.install(snapshot);
        if let Some(key) = &self.session {
            let mut table = self.sessions.borrow_mut();
            let known = pool.endpoints().len() == table.by_address.len()
                && pool.endpoints().iter().all(|e| table.by_address.contains_key(&e.address));
            if !known {
                *table = SessionTable::default();
                for e in pool.endpoints() {
                    let p = key.pseudonym(&e.address);
                    table.by_pseudonym.insert(p, e.address.clone());
                    table.by_address.insert(e.address.clone(), p);
                }
            }
        }
        pool
    }

    /// Parses and schedules one request body. A bad request, an unknown model or a pool that cannot
    /// take it becomes the reply to send instead.
    pub fn route(
        &self,
        api: ApiKind,
        body: &[u8],
        headers: &RequestHeaders,
        ctx: &SchedulingContext,
    ) -> Result<Routed, LocalReply> {
        let mut request = request::parse_request(api, body, headers, &self.config).map_err(|e| LocalReply::from(&e))?;
        let session = self.resolve_session(&mut request, ctx.now_ms);
        let decision = self.scheduler.schedule(&request, ctx).map_err(|e| LocalReply::from(&e))?;
        let pool = ctx.pool;
        let debug = match self.config.debug_header {
            DebugHeader::Off => None,
            DebugHeader::Summary => Some(decision.debug_summary(pool)),
            DebugHeader::Json => Some(decision.debug_json(pool)),
        };
        let flight = Flight {
            endpoint: decision.primary_address(pool).to_string(),
            prompt_tokens: ctx.memory.estimate_tokens(&request.model, request.prompt_bytes),
            // Only an exact count teaches the bytes-per-token ratio (0 = no sample).
            prompt_bytes: if request.prompt_bytes_exact {
                u32::try_from(request.prompt_bytes).unwrap_or(u32::MAX)
            } else {
                0
            },
            predicted_blocks: decision.predicted_cached_blocks,
            expects_usage: !request.stream || request.include_usage,
            model: request.model,
            hashes: request.block_hashes,
            report: None,
            finished: false,
        };
        Ok(Routed { destination: decision.header_value(pool), debug, decision, session, flight })
    }

    /// Whether the debug detail should be built for a request (the debug header is on).
    pub fn wants_detail(&self) -> bool {
        self.config.debug_header.enabled()
    }

    /// Service Extensions mode: no pool view, no shared state; the headers a stateless route sets.
    pub fn route_stateless(
        &self,
        api: ApiKind,
        body: &[u8],
        headers: &RequestHeaders,
    ) -> Result<StatelessRoute, LocalReply> {
        let request = request::parse_request(api, body, headers, &self.config).map_err(|e| LocalReply::from(&e))?;
        Ok(service_extensions::route(&request, &self.config))
    }

    /// The session token for a response served by `address`, when tokens are issued.
    pub fn session_token(&self, address: &str, now_ms: u64) -> Option<String> {
        let key = self.session.as_ref()?;
        let table = self.sessions.borrow();
        let pseudonym = table.by_address.get(address).copied().unwrap_or_else(|| key.pseudonym(address));
        Some(key.issue(&pseudonym, now_ms))
    }

    fn resolve_session(&self, request: &mut SchedulingRequest, now_ms: u64) -> SessionOutcome {
        let (Some(key), Some(token)) = (&self.session, request.session_token.as_deref()) else {
            return SessionOutcome::None;
        };
        match key.verify(token, now_ms) {
            Err(TokenRejection::Invalid) => SessionOutcome::Invalid,
            Err(TokenRejection::Expired) => SessionOutcome::Expired,
            Ok(pseudonym) => match self.sessions.borrow().by_pseudonym.get(&pseudonym) {
                Some(address) => {
                    request.session_endpoint = Some(address.clone());
                    SessionOutcome::Accepted
                }
                None => SessionOutcome::EndpointGone,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolSnapshot;

    const NOW: u64 = 1_000_000;

    fn pool_of(memory: &mut RoutingMemory, director: &Director, n: usize) -> Pool {
        let addresses: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:8000")).collect();
        director.install(memory, PoolSnapshot::from_static(&addresses))
    }

    fn ctx<'a>(pool: &'a Pool, memory: &'a RoutingMemory) -> SchedulingContext<'a> {
        SchedulingContext { now_ms: NOW, pool, memory, random_seed: 1, detail: false }
    }

    fn chat(text: &str) -> Vec<u8> {
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]}).to_string().into_bytes()
    }

    fn session_director() -> Director {
        let config = PluginConfig::from_json(
            br#"{"endpointPickerConfig":{"plugins":[{"type":"session-affinity-scorer","parameters":{"secret":"0123456789abcdef-key"}},
                {"type":"queue-scorer"}],"schedulingProfiles":[{"name":"s","plugins":[{"pluginRef":"session-affinity-scorer","weight":10},
                {"pluginRef":"queue-scorer"}]}]}}"#,
        )
        .unwrap();
        Director::new(config).unwrap()
    }

    #[test]
    fn a_flight_records_moves_reports_and_releases_once() {
        let director = Director::new(PluginConfig::default()).unwrap();
        let mut memory = RoutingMemory::new(director.config());
        let pool = pool_of(&mut memory, &director, 3);
        let mut routed = director
            .route(ApiKind::ChatCompletions, &chat(&"hello ".repeat(100)), &Default::default(), &ctx(&pool, &memory))
            .unwrap();
        let primary = routed.flight.endpoint().to_string();
        memory.apply(&routed.flight.routed_event());
        assert_eq!(memory.in_flight_of(&primary).requests, 1);
        let other = pool.endpoints().iter().find(|e| e.address != primary).unwrap().address.clone();
        assert!(routed.flight.served_by("192.168.1.1:80", &pool).is_none(), "not a pool member: ignored");
        let moved = routed.flight.served_by(&other, &pool).unwrap();
        memory.apply(&moved);
        assert_eq!(memory.in_flight_of(&other).requests, 1);
        routed.flight.on_usage(ReportedUsage { prompt_tokens: Some(120), cached_tokens: Some(0) }, &memory);
        let events = routed.flight.finish();
        assert_eq!(events.len(), 2);
        for e in &events {
            memory.apply(e);
        }
        assert_eq!(memory.in_flight_of(&other).requests, 0);
        assert!(routed.flight.finish().is_empty(), "released once");
        assert_eq!(memory.calibration().samples("m"), 1);
    }

    #[test]
    fn streams_without_include_usage_expect_no_usage() {
        let director = Director::new(PluginConfig::default()).unwrap();
        let mut memory = RoutingMemory::new(director.config());
        let pool = pool_of(&mut memory, &director, 2);
        let body = |extra: &str| format!(r#"{{"model":"m","prompt":"hi"{extra}}}"#).into_bytes();
        let route =
            |b: Vec<u8>| director.route(ApiKind::Completions, &b, &Default::default(), &ctx(&pool, &memory)).unwrap();
        assert!(route(body("")).flight.expects_usage());
        assert!(!route(body(r#","stream":true"#)).flight.expects_usage());
        assert!(route(body(r#","stream":true,"stream_options":{"include_usage":true}"#)).flight.expects_usage());
    }

    #[test]
    fn no_session_tokens_without_the_session_scorer() {
        let config = PluginConfig::from_json(
            br#"{"endpointPickerConfig":{"plugins":[{"type":"session-affinity-scorer","parameters":{"secret":"0123456789abcdef-key"}},{"type":"queue-scorer"}],
                "schedulingProfiles":[{"name":"q","plugins":[{"pluginRef":"queue-scorer"}]}]}}"#,
        )
        .unwrap();
        let director = Director::new(config).unwrap();
        assert!(!director.issues_session_tokens(), "declared but not in the profile");
        assert_eq!(director.session_token("10.0.0.1:8000", NOW), None);
        assert!(!Director::new(PluginConfig::default()).unwrap().issues_session_tokens());
    }

    #[test]
    fn a_session_token_steers_back_and_forgeries_do_not() {
        let director = session_director();
        let mut memory = RoutingMemory::new(director.config());
        let pool = pool_of(&mut memory, &director, 4);
        let token = director.session_token("10.0.0.2:8000", NOW).unwrap();
        assert!(!token.contains("10.0.0.2"));
        let headers = |t: &str| RequestHeaders { session_token: Some(t.to_string()), ..Default::default() };
        let route =
            |h: &RequestHeaders| director.route(ApiKind::ChatCompletions, &chat("q"), h, &ctx(&pool, &memory)).unwrap();
        let honoured = route(&headers(&token));
        assert_eq!(honoured.session, SessionOutcome::Accepted);
        assert_eq!(honoured.flight.endpoint(), "10.0.0.2:8000");
        let hex: String = "10.0.0.3:8000".bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(route(&headers(&format!("wis1.{hex}"))).session, SessionOutcome::Invalid, "the old address token");
        let mut tampered = token.clone();
        tampered.replace_range(6..7, if &token[6..7] == "A" { "B" } else { "A" });
        assert_eq!(route(&headers(&tampered)).session, SessionOutcome::Invalid);
        let expired = SchedulingContext { now_ms: NOW + 3_600_000, ..ctx(&pool, &memory) };
        let r = director.route(ApiKind::ChatCompletions, &chat("q"), &headers(&token), &expired).unwrap();
        assert_eq!(r.session, SessionOutcome::Expired);
        let smaller = pool_of(&mut memory, &director, 2);
        let r =
            director.route(ApiKind::ChatCompletions, &chat("q"), &headers(&token), &ctx(&smaller, &memory)).unwrap();
        assert_eq!(r.session, SessionOutcome::EndpointGone);
    }

    #[test]
    fn bad_requests_and_unservable_ones_become_replies() {
        let director = Director::new(PluginConfig::default()).unwrap();
        let mut memory = RoutingMemory::new(director.config());
        let pool = pool_of(&mut memory, &director, 2);
        let err = director
            .route(ApiKind::ChatCompletions, b"{not json", &Default::default(), &ctx(&pool, &memory))
            .unwrap_err();
        assert_eq!(err.status, 400);
        let empty = Pool::empty();
        let err = director
            .route(ApiKind::ChatCompletions, &chat("q"), &Default::default(), &ctx(&empty, &memory))
            .unwrap_err();
        assert_eq!(err.status, 503);
    }

    #[test]
    fn the_configurations_the_manifests_ship_are_accepted_and_route() {
        let shipped: [(&str, &[u8]); 2] = [
            ("envoy-gateway", include_bytes!("../../manifests/components/envoy-gateway/plugin-config.json")),
            ("epp", include_bytes!("../../manifests/components/epp/epp-config.json")),
        ];
        let body = serde_json::json!({"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "hi"}]});
        for (name, json) in shipped {
            let config = PluginConfig::from_json(json).unwrap_or_else(|e| panic!("{name}: {e}"));
            let director = Director::new(config).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut memory = RoutingMemory::new(director.config());
            let pool = pool_of(&mut memory, &director, 2);
            let routed = director
                .route(ApiKind::ChatCompletions, body.to_string().as_bytes(), &Default::default(), &ctx(&pool, &memory))
                .unwrap_or_else(|e| panic!("{name}: {}", e.status));
            assert!(routed.destination.starts_with("10.0.0."), "{name}: {}", routed.destination);
        }
    }
}
