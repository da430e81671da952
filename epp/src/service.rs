//! The Endpoint Picker Protocol over Envoy's external processing (`ext_proc`) stream.
//!
//! One gRPC stream is one HTTP request. GAIE's EPP runs with `request_body_mode` and
//! `response_body_mode` `FULL_DUPLEX_STREAMED`: the proxy streams headers and body without waiting,
//! the picker holds its answer to the request headers until the body is complete, then answers the
//! headers (the destination header mutation, `clear_route_cache`, and the same destination as
//! dynamic metadata `envoy.lb` / `x-gateway-destination-endpoint`) and sends the body back in
//! chunks of at most [`BODY_CHUNK_BYTES`]. Response headers and body chunks are answered as they
//! come, the body echoed back unchanged. `BUFFERED` request bodies (the whole body in one message
//! after the headers were answered) are understood too: the decision then rides on the body
//! response. Which mode the proxy uses comes from `protocol_config` in the stream's first message;
//! without it, `FULL_DUPLEX_STREAMED` as GAIE assumes.
//!
//! The subset hint is read from the request's filter metadata `envoy.lb.subset_hint` (key
//! `x-gateway-destination-endpoint-subset`, a list of `ip:port` or a comma-separated string). The
//! endpoint that served comes from metadata `envoy.lb` / `x-gateway-destination-endpoint-served`
//! (GKE) or from the `upstream.address` attribute (plain Envoy's `response_attributes`).
//! Bad input and refusals are immediate responses in the OpenAI error shape: 400, 404, 413, 429, 503.
//!
//! [`Exchange`] is the state of one stream, a plain state machine (message in, messages out) so
//! tests drive it without gRPC; [`Picker`] is the tonic service around it.

use crate::core::{self, CoreHandle, RequestStart, Routed};
use crate::stats::Stats;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Reply;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpHeaders, ImmediateResponse,
    ProcessingRequest, ProcessingResponse, StreamedBodyResponse, TrailersResponse, body_mutation,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};
use wasm_inference_scheduler::error::LocalReply;

/// Metadata namespace of the destination (request) and of the served endpoint (response).
pub const LB_NAMESPACE: &str = "envoy.lb";
pub const DESTINATION_KEY: &str = "x-gateway-destination-endpoint";
pub const SERVED_KEY: &str = "x-gateway-destination-endpoint-served";
/// Metadata namespace and key of the subset hint.
pub const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";
pub const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";
/// Envoy's attribute naming the upstream host that served (`response_attributes`).
pub const UPSTREAM_ADDRESS_ATTRIBUTE: &str = "upstream.address";
/// ORCA's load report header.
const ORCA_HEADER: &str = "endpoint-load-metrics";
/// Largest body chunk sent back in FULL_DUPLEX_STREAMED mode: GAIE's 62,000 bytes, under the
/// 64 KiB per-chunk limit some proxies enforce.
pub const BODY_CHUNK_BYTES: usize = 62_000;
/// `HeaderValueOption.append_action` OVERWRITE_IF_EXISTS_OR_ADD.
const OVERWRITE_IF_EXISTS_OR_ADD: i32 = 2;

#[derive(Debug)]
enum Phase {
    /// Waiting for the request headers.
    Start,
    /// Not an inference path: everything passes, the proxy's fallback policy picks.
    Passthrough,
    /// An inference request whose body is being collected.
    Collecting { start: RequestStart, body: Vec<u8> },
    /// Decided (routed or not); the response side follows.
    Decided,
    /// An immediate response was sent; the stream is over.
    Finished,
}

/// One ext_proc stream: one HTTP request through the proxy.
pub struct Exchange {
    core: CoreHandle,
    stats: Arc<Stats>,
    request_mode: BodySendMode,
    response_mode: BodySendMode,
    phase: Phase,
    subset: Option<String>,
    routed: Option<Routed>,
}

impl Exchange {
    pub fn new(core: CoreHandle, stats: Arc<Stats>) -> Self {
        stats.stream();
        Self {
            core,
            stats,
            request_mode: BodySendMode::FullDuplexStreamed,
            response_mode: BodySendMode::FullDuplexStreamed,
            phase: Phase::Start,
            subset: None,
            routed: None,
        }
    }

    /// Whether the stream is over (an immediate response was sent).
    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Finished)
    }

    /// The answers to one message from the proxy, in order.
    pub async fn handle(&mut self, message: ProcessingRequest) -> Vec<ProcessingResponse> {
        if let Some(protocol) = &message.protocol_config {
            self.request_mode = BodySendMode::try_from(protocol.request_body_mode).unwrap_or(BodySendMode::None);
            self.response_mode = BodySendMode::try_from(protocol.response_body_mode).unwrap_or(BodySendMode::None);
        }
        if let Some(subset) = subset_hint(message.metadata_context.as_ref()) {
            self.subset = Some(subset);
        }
        if message.observability_mode {
            // The proxy ignores answers in observability mode; a picker has nothing to observe.
            return Vec::new();
        }
        match message.request {
            Some(Request::RequestHeaders(headers)) => self.on_request_headers(&headers),
            Some(Request::RequestBody(body)) => self.on_request_body(body.body, body.end_of_stream).await,
            Some(Request::RequestTrailers(_)) => self.on_request_trailers().await,
            Some(Request::ResponseHeaders(ref headers)) => {
                let served = served_endpoint(&message);
                self.on_response_headers(headers, served).await
            }
            Some(Request::ResponseBody(body)) => self.on_response_body(body.body, body.end_of_stream),
            Some(Request::ResponseTrailers(_)) => {
                self.end_response();
                vec![reply(Reply::ResponseTrailers(TrailersResponse::default()))]
            }
            None => Vec::new(),
        }
    }

    fn on_request_headers(&mut self, headers: &HttpHeaders) -> Vec<ProcessingResponse> {
        let config = self.core.config();
        let path = header(headers, ":path").unwrap_or_default();
        let start = core::classify(config, &path, |name| header(headers, name), self.subset.clone());
        let destination = core::header_names(config).destination.clone();
        // A client must never choose its pod: the destination header goes before anything else.
        let strip = HeaderMutation { remove_headers: vec![destination], ..Default::default() };
        let Some(start) = start else {
            tracing::debug!(%path, "not an inference path; passing through");
            self.stats.passthrough();
            self.phase = Phase::Passthrough;
            return vec![headers_reply(Some(strip), false, None)];
        };
        if headers.end_of_stream {
            return self.immediate(&LocalReply::missing_body());
        }
        self.phase = Phase::Collecting { start, body: Vec::new() };
        if self.request_mode == BodySendMode::FullDuplexStreamed {
            // The answer to the headers waits for the decision.
            Vec::new()
        } else {
            vec![headers_reply(Some(strip), false, None)]
        }
    }

    async fn on_request_body(&mut self, chunk: Vec<u8>, end_of_stream: bool) -> Vec<ProcessingResponse> {
        let limit = core::max_body_bytes(self.core.config());
        match &mut self.phase {
            Phase::Collecting { body, .. } => {
                if body.len() + chunk.len() > limit {
                    return self.immediate(&LocalReply::body_too_large(limit));
                }
                body.extend_from_slice(&chunk);
                if end_of_stream {
                    return self.decide(true).await;
                }
                match self.request_mode {
                    BodySendMode::FullDuplexStreamed => Vec::new(),
                    _ => vec![reply(Reply::RequestBody(BodyResponse::default()))],
                }
            }
            Phase::Finished => Vec::new(),
            _ => {
                if matches!(self.phase, Phase::Start | Phase::Decided) {
                    // A body before its headers or after the decision: not the protocol; let it pass.
                    self.stats.fail_open();
                }
                self.pass_body(chunk, end_of_stream, true)
            }
        }
    }

    async fn on_request_trailers(&mut self) -> Vec<ProcessingResponse> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::Collecting { .. }) {
            // The body ended with trailers instead of an end-of-stream chunk.
            out = self.decide(false).await;
            if self.finished() {
                return out;
            }
        }
        out.push(reply(Reply::RequestTrailers(TrailersResponse::default())));
        out
    }

    /// Schedules the collected body and answers with the decision (or the local reply).
    async fn decide(&mut self, end_of_stream: bool) -> Vec<ProcessingResponse> {
        let Phase::Collecting { mut start, body } = std::mem::replace(&mut self.phase, Phase::Decided) else {
            return Vec::new();
        };
        if self.subset.is_some() {
            start.headers.subset = self.subset.clone();
        }
        let names = core::header_names(self.core.config()).clone();
        let answer = self.core.call(move |core| (core.on_request_body(&start, &body), body)).await;
        let (routed, body) = match answer {
            Some((Ok(routed), body)) => (routed, body),
            Some((Err(local), _)) => return self.immediate(&local),
            None => {
                // The core is gone (its thread died): let the proxy's fallback policy pick.
                tracing::error!("the scheduling core is not answering; failing open");
                self.stats.fail_open();
                return Vec::new();
            }
        };
        let mut set = vec![set_header(&names.destination, &routed.destination)];
        if let Some(debug) = &routed.debug {
            set.push(set_header(&names.debug, debug));
        }
        let metadata = destination_metadata(&routed.destination);
        self.routed = Some(routed);
        if self.request_mode == BodySendMode::FullDuplexStreamed {
            // The body goes back unchanged, so its length does too; the proxy dropped the header
            // when it started streaming the body, so say it again.
            set.push(set_header("content-length", &body.len().to_string()));
            let mutation = HeaderMutation { set_headers: set, remove_headers: Vec::new() };
            let mut out = vec![headers_reply(Some(mutation), true, Some(metadata))];
            out.extend(streamed_body(&body, end_of_stream, true));
            out
        } else {
            let mutation = HeaderMutation { set_headers: set, remove_headers: Vec::new() };
            let common =
                CommonResponse { header_mutation: Some(mutation), clear_route_cache: true, ..Default::default() };
            let mut out = reply(Reply::RequestBody(BodyResponse { response: Some(common) }));
            out.dynamic_metadata = Some(metadata);
            vec![out]
        }
    }

    async fn on_response_headers(&mut self, headers: &HttpHeaders, served: Option<String>) -> Vec<ProcessingResponse> {
        let mut mutation = None;
        if let Some(mut routed) = self.routed.take() {
            let orca = header(headers, ORCA_HEADER);
            let answer = self
                .core
                .call(move |core| {
                    let added = core.on_response_headers(&mut routed, served.as_deref(), orca.as_deref());
                    (routed, added)
                })
                .await;
            let Some((routed, added)) = answer else {
                return vec![reply(Reply::ResponseHeaders(HeadersResponse::default()))];
            };
            self.routed = Some(routed);
            if !added.set.is_empty() {
                let set_headers = added.set.iter().map(|(k, v)| set_header(k, v)).collect();
                mutation = Some(HeaderMutation { set_headers, remove_headers: Vec::new() });
            }
        }
        if headers.end_of_stream {
            self.end_response();
        }
        let response = CommonResponse { header_mutation: mutation, ..Default::default() };
        vec![reply(Reply::ResponseHeaders(HeadersResponse { response: Some(response) }))]
    }

    fn on_response_body(&mut self, chunk: Vec<u8>, end_of_stream: bool) -> Vec<ProcessingResponse> {
        if let Some(routed) = &mut self.routed {
            routed.observe_body(&chunk);
        }
        if end_of_stream {
            self.end_response();
        }
        self.pass_body(chunk, end_of_stream, false)
    }

    /// The response is complete: feedback from the pod's usage report, then the release.
    fn end_response(&mut self) {
        if let Some(mut routed) = self.routed.take() {
            self.core.tell(move |core| {
                core.on_response_end(&mut routed);
                core.release(&mut routed);
            });
        }
    }

    /// Answers a body chunk that is not held: echoed in FULL_DUPLEX_STREAMED, acknowledged otherwise.
    fn pass_body(&self, chunk: Vec<u8>, end_of_stream: bool, request: bool) -> Vec<ProcessingResponse> {
        let mode = if request { self.request_mode } else { self.response_mode };
        if mode == BodySendMode::FullDuplexStreamed {
            return streamed_body(&chunk, end_of_stream, request);
        }
        let body = BodyResponse::default();
        vec![reply(if request { Reply::RequestBody(body) } else { Reply::ResponseBody(body) })]
    }

    fn immediate(&mut self, local: &LocalReply) -> Vec<ProcessingResponse> {
        self.phase = Phase::Finished;
        self.stats.local_reply(local.status);
        let content_type = set_header("content-type", "application/json");
        let response = ImmediateResponse {
            status: Some(HttpStatus { code: i32::from(local.status) }),
            headers: Some(HeaderMutation { set_headers: vec![content_type], remove_headers: Vec::new() }),
            body: local.body.clone(),
            details: format!("wis_epp_{}", local.code),
            ..Default::default()
        };
        vec![reply(Reply::ImmediateResponse(response))]
    }
}

impl Drop for Exchange {
    /// A stream that ends before its response did (reset, client gone, proxy restart) still
    /// releases its in-flight count.
    fn drop(&mut self) {
        if let Some(mut routed) = self.routed.take() {
            self.core.tell(move |core| core.release(&mut routed));
        }
    }
}

/// The tonic service: one [`Exchange`] per stream, driven by a task.
#[derive(Clone)]
pub struct Picker {
    core: CoreHandle,
    stats: Arc<Stats>,
}

impl Picker {
    pub fn new(core: CoreHandle, stats: Arc<Stats>) -> Self {
        Self { core, stats }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for Picker {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: GrpcRequest<Streaming<ProcessingRequest>>,
    ) -> Result<GrpcResponse<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let mut exchange = Exchange::new(self.core.clone(), self.stats.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                for response in exchange.handle(message).await {
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
                if exchange.finished() {
                    return;
                }
            }
            // The exchange drops here: an unfinished request is released.
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn reply(response: Reply) -> ProcessingResponse {
    ProcessingResponse { response: Some(response), ..Default::default() }
}

fn headers_reply(
    mutation: Option<HeaderMutation>,
    clear_route_cache: bool,
    metadata: Option<Struct>,
) -> ProcessingResponse {
    let common = CommonResponse { header_mutation: mutation, clear_route_cache, ..Default::default() };
    let mut out = reply(Reply::RequestHeaders(HeadersResponse { response: Some(common) }));
    out.dynamic_metadata = metadata;
    out
}

/// The body as `streamed_response` chunks of at most [`BODY_CHUNK_BYTES`] (one empty chunk for an
/// empty body), the last one carrying `end_of_stream`.
fn streamed_body(body: &[u8], end_of_stream: bool, request: bool) -> Vec<ProcessingResponse> {
    let chunks: Vec<&[u8]> = if body.is_empty() { vec![body] } else { body.chunks(BODY_CHUNK_BYTES).collect() };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let streamed = StreamedBodyResponse {
                body: chunk.to_vec(),
                end_of_stream: end_of_stream && i == last,
                ..Default::default()
            };
            let mutation = BodyMutation { mutation: Some(body_mutation::Mutation::StreamedResponse(streamed)) };
            let common = CommonResponse { body_mutation: Some(mutation), ..Default::default() };
            let body = BodyResponse { response: Some(common) };
            reply(if request { Reply::RequestBody(body) } else { Reply::ResponseBody(body) })
        })
        .collect()
}

fn set_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.to_string(), value: String::new(), raw_value: value.as_bytes().to_vec() }),
        append_action: OVERWRITE_IF_EXISTS_OR_ADD,
        ..Default::default()
    }
}

/// A request or response header's value (names compared case-insensitively).
fn header(headers: &HttpHeaders, name: &str) -> Option<String> {
    let map = headers.headers.as_ref()?;
    let found = map.headers.iter().find(|h| h.key.eq_ignore_ascii_case(name))?;
    if found.raw_value.is_empty() {
        Some(found.value.clone())
    } else {
        Some(String::from_utf8_lossy(&found.raw_value).into_owned())
    }
}

/// `{"envoy.lb": {"x-gateway-destination-endpoint": "<destination>"}}`.
pub fn destination_metadata(destination: &str) -> Struct {
    let inner = Struct {
        fields: HashMap::from([(
            DESTINATION_KEY.to_string(),
            Value { kind: Some(Kind::StringValue(destination.into())) },
        )]),
    };
    Struct { fields: HashMap::from([(LB_NAMESPACE.to_string(), Value { kind: Some(Kind::StructValue(inner)) })]) }
}

/// The subset hint as a comma-separated list, from a list of strings or a string (both occur:
/// control planes write lists, header-to-metadata rules write strings). `Some("")` when the hint is
/// there but empty, which the protocol answers with 503.
fn subset_hint(metadata: Option<&Metadata>) -> Option<String> {
    let value = metadata?.filter_metadata.get(SUBSET_NAMESPACE)?.fields.get(SUBSET_KEY)?;
    let mut endpoints: Vec<String> = Vec::new();
    let mut push = |s: &str| endpoints.extend(s.split(',').map(str::trim).filter(|e| !e.is_empty()).map(String::from));
    match &value.kind {
        Some(Kind::StringValue(s)) => push(s),
        Some(Kind::ListValue(list)) => {
            for item in &list.values {
                if let Some(Kind::StringValue(s)) = &item.kind {
                    push(s);
                }
            }
        }
        _ => {}
    }
    Some(endpoints.join(","))
}

/// The endpoint that served: GKE's `envoy.lb` / `x-gateway-destination-endpoint-served` metadata,
/// else the `upstream.address` attribute plain Envoy sends when asked (`response_attributes`).
fn served_endpoint(message: &ProcessingRequest) -> Option<String> {
    let string = |value: &Value| match &value.kind {
        Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let from_metadata = message
        .metadata_context
        .as_ref()
        .and_then(|m| m.filter_metadata.get(LB_NAMESPACE))
        .and_then(|lb| lb.fields.get(SERVED_KEY))
        .and_then(string);
    from_metadata.or_else(|| {
        message
            .attributes
            .values()
            .find_map(|attributes| attributes.fields.get(UPSTREAM_ADDRESS_ATTRIBUTE).and_then(string))
    })
}
