//! One request's lifecycle.
//!
//! request headers → strip any client-supplied destination, note the path; an inference path
//!   pauses for the body (Envoy must run with `allow_on_headers_stop_iteration: true`).
//! request body → buffered by Envoy up to the limit; parsed, scheduled, destination header set.
//! response headers → which endpoint really served (a retry may have moved it), ORCA load report,
//!   session token for affinity.
//! response body → a bounded tail for the pod's `cached_tokens` report at the end of the stream.
//! log (end of stream, also after a reset) → the in-flight count is released, exactly once.
//!
//! Failure policy: bad input gets a local reply in the OpenAI error shape; a failing host call on
//! the data path fails open (the request continues without a decision and Envoy's fallback policy
//! picks a pool member), counted in `wis.fail_open`. Nothing here panics.

use super::abi::{self, Buffer, LogLevel, Map};
use super::vm::{Vm, VmRef};
use crate::config::{DebugHeader, Mode};
use crate::error::LocalReply;
use crate::feedback::{self, ResponseTail};
use crate::memory::RoutingEvent;
use crate::request::{self, ApiKind, RequestHeaders, SchedulingRequest};
use crate::scheduler::{self, SchedulingContext};
use crate::service_extensions;
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
    routed: Option<Routed>,
}

/// What this request was routed with, kept for the response side.
struct Routed {
    /// The endpoint charged with the in-flight count: the primary until a retry moves it.
    charged: String,
    block_hashes: Vec<u64>,
    prompt_tokens: u32,
    predicted_blocks: u32,
    debug: Option<String>,
    tail: ResponseTail,
    /// What the pod reported cached, recorded together with the release (one log append).
    observed: Option<RoutingEvent>,
    released: bool,
}

impl Filter {
    pub fn new(context_id: u32, vm: Option<VmRef>) -> Self {
        Self { context_id, vm, api: None, headers: RequestHeaders::default(), replied: false, routed: None }
    }

    fn reply(&mut self, vm: &Vm, reply: &LocalReply) {
        self.replied = true;
        if let Some(stats) = &vm.stats {
            stats.local_reply(reply.status);
        }
        if let Err(e) = abi::send_local_response(reply.status, &[("content-type", "application/json")], &reply.body) {
            abi::log(LogLevel::Error, &format!("wis: could not send the {} reply: {e}", reply.status));
        }
    }

    fn fail_open(&self, vm: &mut Vm, what: &str) -> Action {
        vm.stat("wis.fail_open");
        let now = abi::now_ms().unwrap_or(0);
        vm.warn("fail-open", now, &format!("wis: {what}; request continues on Envoy's fallback policy"));
        Action::Continue
    }

    fn on_headers(&mut self, vm: &mut Vm, end_of_stream: bool) -> Action {
        let names = &vm.config.headers;
        // A client must never choose its pod: strip the destination before anything else.
        if let Err(e) = abi::remove_header(Map::RequestHeaders, &names.destination) {
            abi::log(LogLevel::Error, &format!("wis: could not strip a client-supplied destination: {e}"));
        }
        let path = abi::get_header(Map::RequestHeaders, ":path").ok().flatten().unwrap_or_default();
        self.api = ApiKind::from_path(&path, &vm.config);
        if self.api.is_none() {
            vm.stat("wis.passthrough");
            return Action::Continue;
        }
        let header = |name: &str| abi::get_header(Map::RequestHeaders, name).ok().flatten();
        self.headers = RequestHeaders {
            subset: header(&names.subset),
            objective: header(&names.objective),
            session_token: header(&names.session),
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
        let limit = vm.config.limits.max_body_bytes;
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
        let request = match request::parse_request(api, &body, &self.headers, &vm.config) {
            Ok(request) => request,
            Err(e) => {
                self.reply(vm, &LocalReply::from(&e));
                return Action::Pause;
            }
        };
        match vm.config.mode {
            Mode::ServiceExtensions => self.route_stateless(vm, &request),
            Mode::Envoy => self.schedule(vm, request),
        }
    }

    /// Service Extensions mode: no pool view, no shared state. Hand the load balancer what it
    /// can use: the model for HTTPRoute matching and a prefix-affinity key for consistent hashing.
    fn route_stateless(&mut self, vm: &mut Vm, request: &SchedulingRequest) -> Action {
        let route = service_extensions::route(request, &vm.config);
        let names = &vm.config.headers;
        let model = abi::set_header(Map::RequestHeaders, &names.model, &route.model_header);
        let key = abi::set_header(Map::RequestHeaders, &names.affinity_key, &route.affinity_key);
        if let Err(e) = model.and(key) {
            abi::log(LogLevel::Error, &format!("wis: could not set the routing headers: {e}"));
        }
        Action::Continue
    }

    fn schedule(&mut self, vm: &mut Vm, request: SchedulingRequest) -> Action {
        vm.sync_log();
        let started = abi::now_nanos().unwrap_or(0);
        let now_ms = started / 1_000_000;
        let seed = started ^ u64::from(self.context_id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let context = SchedulingContext { now_ms, snapshot: vm.pool(), memory: &vm.memory, random_seed: seed };
        let decision = match vm.scheduler.schedule(&request, &context) {
            Ok(decision) => decision,
            Err(e) => {
                self.reply(vm, &LocalReply::from(&e));
                return Action::Pause;
            }
        };
        let destination = decision.header_value();
        if let Err(e) = abi::set_header(Map::RequestHeaders, &vm.config.headers.destination, &destination) {
            return self.fail_open(vm, &format!("could not set the destination header ({e})"));
        }
        let debug = match vm.config.debug_header {
            DebugHeader::Off => None,
            DebugHeader::Summary => Some(decision.debug_summary()),
            DebugHeader::Json => Some(decision.debug_json()),
        };
        if let Some(summary) = &debug {
            let _ = abi::set_header(Map::RequestHeaders, &vm.config.headers.debug, summary);
        }
        vm.record(RoutingEvent::Routed {
            endpoint: decision.primary.clone(),
            hashes: request.block_hashes.clone(),
            prompt_tokens: request.estimated_prompt_tokens,
        });
        if let Some(stats) = &mut vm.stats {
            stats.inc("wis.decisions");
            stats.endpoint_decision(&decision.primary);
            if decision.fell_back_to_all {
                stats.inc("wis.decisions.fell_back_to_all");
            }
            let elapsed_us = abi::now_nanos().unwrap_or(started).saturating_sub(started) / 1_000;
            stats.record("wis.scheduling_us", elapsed_us);
        }
        self.routed = Some(Routed {
            charged: decision.primary,
            block_hashes: request.block_hashes,
            prompt_tokens: request.estimated_prompt_tokens,
            predicted_blocks: decision.predicted_cached_blocks,
            debug,
            tail: ResponseTail::default(),
            observed: None,
            released: false,
        });
        Action::Continue
    }

    fn on_response_headers(&mut self, vm: &mut Vm) {
        let Some(routed) = &mut self.routed else { return };
        let now = abi::now_ms().unwrap_or(0);
        // The endpoint that actually answered; a retry past a dead primary names a fallback.
        let served = abi::get_property(&["upstream", "address"])
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .filter(|address| vm.pool().endpoint(address).is_some());
        if let Some(served) = served
            && served != routed.charged
        {
            vm.stat("wis.served_elsewhere");
            vm.record(RoutingEvent::Moved {
                from: routed.charged.clone(),
                to: served.clone(),
                hashes: routed.block_hashes.clone(),
                prompt_tokens: routed.prompt_tokens,
            });
            routed.charged = served;
        }
        if let Ok(Some(report)) = abi::get_header(Map::ResponseHeaders, ORCA_HEADER) {
            let load = feedback::parse_orca(&report);
            if !load.is_empty() {
                vm.apply_orca(&routed.charged, &load, now);
            }
        }
        let names = &vm.config.headers;
        let token = scheduler::encode_session_token(&routed.charged);
        let _ = abi::set_header(Map::ResponseHeaders, &names.session, &token);
        if let Some(summary) = &routed.debug {
            let _ = abi::set_header(Map::ResponseHeaders, &names.debug, summary);
        }
    }

    fn on_response_body(&mut self, vm: &mut Vm, body_size: usize, end_of_stream: bool) {
        let Some(routed) = &mut self.routed else { return };
        let keep = body_size.min(feedback::RESPONSE_TAIL_BYTES);
        if keep > 0
            && let Ok(Some(chunk)) = abi::get_buffer(Buffer::ResponseBody, body_size - keep, keep)
        {
            routed.tail.push(&chunk);
        }
        if !end_of_stream {
            return;
        }
        let cached = feedback::scan_usage(routed.tail.as_bytes()).and_then(|usage| usage.cached_tokens);
        let Some(cached_tokens) = cached else {
            // The pod runs without --enable-prompt-tokens-details: the index runs open loop.
            vm.stat("wis.prefix.no_feedback");
            return;
        };
        let block_tokens = vm.config.prefix.block_size_tokens.max(1);
        let observed = cached_tokens / block_tokens;
        let predicted = routed.predicted_blocks;
        vm.stat("wis.prefix.feedback");
        vm.stat_add("wis.prefix.predicted_blocks", u64::from(predicted));
        vm.stat_add("wis.prefix.observed_blocks", u64::from(observed));
        vm.stat_add("wis.prefix.prompt_blocks", routed.block_hashes.len() as u64);
        if predicted == 0 {
            // Nothing was predicted for this prompt, so there is nothing to confirm or correct.
            return;
        }
        vm.stat(if observed > 0 { "wis.prefix.prediction_confirmed" } else { "wis.prefix.prediction_wrong" });
        routed.observed = Some(RoutingEvent::CacheObserved {
            endpoint: routed.charged.clone(),
            hashes: routed.block_hashes.clone(),
            predicted_blocks: predicted,
            observed_blocks: observed,
        });
    }

    /// Releases the in-flight count, once, whether the stream ended normally or was reset.
    fn release(&mut self, vm: &mut Vm) {
        let Some(routed) = &mut self.routed else { return };
        if routed.released {
            return;
        }
        routed.released = true;
        let released = RoutingEvent::Released { endpoint: routed.charged.clone(), prompt_tokens: routed.prompt_tokens };
        match routed.observed.take() {
            Some(observed) => vm.record_all(&[observed, released]),
            None => vm.record(released),
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
