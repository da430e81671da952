//! One request's lifecycle, translated between Envoy's callbacks and the core's [`Director`].
//!
//! request headers → strip any client-supplied destination, note the path; an inference path
//!   pauses for the body (Envoy must run with `allow_on_headers_stop_iteration: true`).
//! request body → buffered by Envoy up to the limit; routed by the director; destination header set.
//! response headers → which endpoint really served (a retry may have moved it), ORCA load report,
//!   the session token (only with `session-affinity-scorer` in the profile).
//! response body → read only when the response can carry `usage`, and only its tail.
//! log (end of stream, also after a reset) → the in-flight count is released, exactly once.
//!
//! Failure policy: bad input gets a local reply in the OpenAI error shape; a failing host call on
//! the data path fails open (the request continues without a decision and Envoy's fallback policy
//! picks a pool member), counted in `wis.fail_open`. Nothing here panics.
//!
//! [`Director`]: crate::director::Director

use super::abi::{self, Buffer, LogLevel, Map};
use super::vm::{Vm, VmRef};
use crate::config::Mode;
use crate::director::{Flight, Routed, SessionOutcome};
use crate::error::LocalReply;
use crate::feedback::{self, ResponseTail};
use crate::request::{ApiKind, RequestHeaders};
use crate::scheduler::SchedulingContext;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

/// ORCA's load report header (Envoy's and GAIE's name for it).
const ORCA_HEADER: &str = "endpoint-load-metrics";

pub struct Filter {
    context_id: u32,
    vm: Option<VmRef>,
    api: Option<ApiKind>,
    headers: RequestHeaders,
    replied: bool,
    routed: Option<InFlight>,
}

/// What this request was routed with, kept for the response side.
struct InFlight {
    flight: Flight,
    debug: Option<String>,
    tail: ResponseTail,
}

impl Filter {
    pub fn new(context_id: u32, vm: Option<VmRef>) -> Self {
        Self { context_id, vm, api: None, headers: RequestHeaders::default(), replied: false, routed: None }
    }

    fn reply(&mut self, vm: &mut Vm, reply: &LocalReply) {
        self.replied = true;
        vm.stats(|s| s.local_reply(reply.status));
        if let Err(e) = abi::send_local_response(reply.status, &[("content-type", "application/json")], &reply.body) {
            abi::log(LogLevel::Error, &format!("wis: could not send the {} reply: {e}", reply.status));
        }
    }

    fn fail_open(&self, vm: &mut Vm, what: &str) -> Action {
        vm.stats(|s| s.fixed.fail_open.inc());
        let now = abi::now_ms().unwrap_or(0);
        vm.warn("fail-open", now, &format!("wis: {what}; request continues on Envoy's fallback policy"));
        Action::Continue
    }

    fn on_headers(&mut self, vm: &mut Vm, end_of_stream: bool) -> Action {
        // Every header this callback needs, in one host call.
        let headers = abi::get_header_snapshot(Map::RequestHeaders);
        if let Err(e) = &headers {
            abi::log(LogLevel::Error, &format!("wis: could not read the request headers: {e}"));
        }
        let header = |name: &str| headers.as_ref().ok().and_then(|h| h.get(name));
        // A client must never choose its pod: strip the destination before anything else (and when
        // the headers could not be read, strip it blindly).
        let destination = &vm.config().headers.destination;
        if headers.as_ref().map_or(true, |h| h.contains(destination))
            && let Err(e) = abi::remove_header(Map::RequestHeaders, destination)
        {
            abi::log(LogLevel::Error, &format!("wis: could not strip a client-supplied destination: {e}"));
        }
        let path = header(":path").unwrap_or_default();
        self.api = ApiKind::from_path(&path, vm.config());
        if self.api.is_none() {
            vm.stats(|s| s.fixed.passthrough.inc());
            return Action::Continue;
        }
        let session = vm.director.issues_session_tokens();
        let names = &vm.config().headers;
        self.headers = RequestHeaders {
            subset: header(&names.subset),
            objective: header(&names.objective),
            session_token: if session { header(&names.session) } else { None },
        };
        if end_of_stream {
            self.reply(vm, &LocalReply::missing_body());
        }
        Action::Pause
    }

    fn on_body(&mut self, vm: &mut Vm, body_size: usize, end_of_stream: bool) -> Action {
        let Some(api) = self.api else { return Action::Continue };
        if self.replied {
            return Action::Pause;
        }
        let limit = vm.config().limits.max_body_bytes;
        if body_size > limit {
            self.reply(vm, &LocalReply::body_too_large(limit));
            return Action::Pause;
        }
        if !end_of_stream {
            // Envoy keeps buffering; the whole body arrives in the end-of-stream call.
            return Action::Pause;
        }
        let body = match abi::get_buffer(Buffer::RequestBody, 0, body_size) {
            Ok(body) => body.unwrap_or_default(),
            Err(e) => return self.fail_open(vm, &format!("request body unreadable ({e})")),
        };
        match vm.config().mode {
            Mode::ServiceExtensions => self.route_stateless(vm, api, &body),
            Mode::Envoy => self.schedule(vm, api, &body),
        }
    }

    /// Service Extensions mode: no pool view, no shared state. Hand the load balancer what it
    /// can use: the model for HTTPRoute matching and a prefix-affinity key for consistent hashing.
    fn route_stateless(&mut self, vm: &mut Vm, api: ApiKind, body: &[u8]) -> Action {
        let route = match vm.director.route_stateless(api, body, &self.headers) {
            Ok(route) => route,
            Err(reply) => {
                self.reply(vm, &reply);
                return Action::Pause;
            }
        };
        let names = &vm.config().headers;
        let model = abi::set_header(Map::RequestHeaders, &names.model, &route.model_header);
        let key = abi::set_header(Map::RequestHeaders, &names.affinity_key, &route.affinity_key);
        if let Err(e) = model.and(key) {
            abi::log(LogLevel::Error, &format!("wis: could not set the routing headers: {e}"));
        }
        Action::Continue
    }

    fn schedule(&mut self, vm: &mut Vm, api: ApiKind, body: &[u8]) -> Action {
        vm.sync_log();
        let started = abi::now_nanos().unwrap_or(0);
        vm.refresh_before_first_snapshot(started / 1_000_000);
        let seed = started ^ u64::from(self.context_id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let ctx = SchedulingContext {
            now_ms: started / 1_000_000,
            pool: &vm.pool,
            memory: &vm.memory,
            random_seed: seed,
            detail: vm.director.wants_detail(),
        };
        let routed = match vm.director.route(api, body, &self.headers, &ctx) {
            Ok(routed) => routed,
            Err(reply) => {
                self.reply(vm, &reply);
                return Action::Pause;
            }
        };
        if let Err(e) = abi::set_header(Map::RequestHeaders, &vm.config().headers.destination, &routed.destination) {
            return self.fail_open(vm, &format!("could not set the destination header ({e})"));
        }
        if let Some(debug) = &routed.debug {
            let _ = abi::set_header(Map::RequestHeaders, &vm.config().headers.debug, debug);
        }
        vm.record_now(routed.flight.routed_event());
        let elapsed_us = abi::now_nanos().unwrap_or(started).saturating_sub(started) / 1_000;
        vm.stats(|s| count_decision(s, &routed, elapsed_us));
        let Routed { flight, debug, .. } = routed;
        self.routed = Some(InFlight { flight, debug, tail: ResponseTail::default() });
        Action::Continue
    }

    fn on_response_headers(&mut self, vm: &mut Vm) {
        let Some(routed) = &mut self.routed else { return };
        // The time only when something here needs it (a load report, a session token).
        let now = || abi::now_ms().unwrap_or(0);
        // The endpoint that actually answered; a retry past a dead primary names a fallback.
        if let Some(served) = abi::get_property(&["upstream", "address"]).ok().flatten()
            && let Some(moved) = routed.flight.served_by(&String::from_utf8_lossy(&served), &vm.pool)
        {
            vm.stats(|s| s.fixed.served_elsewhere.inc());
            vm.defer(vec![moved]);
        }
        if let Ok(Some(report)) = abi::get_header(Map::ResponseHeaders, ORCA_HEADER) {
            let load = feedback::parse_orca(&report);
            if !load.is_empty() {
                vm.pool.apply_orca(routed.flight.endpoint(), &load, now());
            }
        }
        if vm.director.issues_session_tokens()
            && let Some(token) = vm.director.session_token(routed.flight.endpoint(), now())
        {
            let _ = abi::set_header(Map::ResponseHeaders, &vm.config().headers.session, &token);
            vm.stats(|s| s.fixed.session_issued.inc());
        }
        if let Some(debug) = &routed.debug {
            let _ = abi::set_header(Map::ResponseHeaders, &vm.config().headers.debug, debug);
        }
    }

    fn on_response_body(&mut self, vm: &mut Vm, body_size: usize, end_of_stream: bool) {
        let Some(routed) = &mut self.routed else { return };
        if !routed.flight.expects_usage() {
            // A stream without include_usage never carries it: nothing to read.
            return;
        }
        let keep = body_size.min(feedback::RESPONSE_TAIL_BYTES);
        if keep > 0
            && let Ok(Some(chunk)) = abi::get_buffer(Buffer::ResponseBody, body_size - keep, keep)
        {
            routed.tail.push(&chunk);
        }
        if !end_of_stream {
            return;
        }
        let Some(usage) = feedback::scan_usage(routed.tail.as_bytes()) else {
            vm.stats(|s| s.fixed.prefix_no_feedback.inc());
            return;
        };
        let outcome = routed.flight.on_usage(usage, &vm.memory);
        vm.stats(|s| {
            let f = &mut s.fixed;
            if !outcome.had_cached_tokens {
                // The pod runs without --enable-prompt-tokens-details: the index runs open loop.
                f.prefix_no_feedback.inc();
                return;
            }
            f.prefix_feedback.inc();
            f.prefix_predicted_blocks.add(u64::from(outcome.predicted_blocks));
            f.prefix_observed_blocks.add(u64::from(outcome.observed_blocks));
            f.prefix_prompt_blocks.add(u64::from(outcome.prompt_blocks));
            if outcome.predicted_blocks > 0 {
                if outcome.observed_blocks > 0 { f.prediction_confirmed.inc() } else { f.prediction_wrong.inc() }
            }
        });
    }

    /// Releases the in-flight count, once, whether the stream ended normally or was reset.
    fn release(&mut self, vm: &mut Vm) {
        if let Some(routed) = &mut self.routed {
            let events = routed.flight.finish();
            if !events.is_empty() {
                vm.defer(events);
            }
        }
    }

    /// Runs `f` with this VM's state, or returns `default` when the plugin is unconfigured or the
    /// state is already borrowed (never panics on a re-entrant callback).
    fn with_vm<T>(&mut self, default: T, f: impl FnOnce(&mut Self, &mut Vm) -> T) -> T {
        let Some(vm) = self.vm.clone() else { return default };
        let Ok(mut vm) = vm.try_borrow_mut() else { return default };
        f(self, &mut vm)
    }
}

fn count_decision(s: &mut super::stats::Stats, routed: &Routed, elapsed_us: u64) {
    let d = &routed.decision;
    let f = &mut s.fixed;
    f.decisions.inc();
    f.scheduling_us.record(elapsed_us);
    if d.fell_back_to_all {
        f.fell_back_to_all.inc();
    }
    if d.no_healthy_endpoint {
        f.no_healthy_endpoint.inc();
    }
    if !d.primary_metrics_known {
        f.unknown_metrics_decisions.inc();
    }
    if d.placed_by_key {
        f.placed_by_key.inc();
    }
    match routed.session {
        SessionOutcome::None => {}
        SessionOutcome::Accepted => f.session_accepted.inc(),
        SessionOutcome::Invalid => f.session_invalid.inc(),
        SessionOutcome::Expired => f.session_expired.inc(),
        SessionOutcome::EndpointGone => f.session_endpoint_gone.inc(),
    }
    s.endpoint_decision(routed.flight.endpoint());
}

impl Context for Filter {
    fn on_done(&mut self) -> bool {
        self.with_vm((), |filter, vm| filter.release(vm));
        true
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.with_vm(Action::Continue, |filter, vm| filter.on_headers(vm, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with_vm(Action::Continue, |filter, vm| filter.on_body(vm, body_size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.with_vm((), |filter, vm| filter.on_response_headers(vm));
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with_vm((), |filter, vm| filter.on_response_body(vm, body_size, end_of_stream));
        Action::Continue
    }

    fn on_log(&mut self) {
        self.with_vm((), |filter, vm| filter.release(vm));
    }
}
