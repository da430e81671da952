//! The picker over real gRPC, driven like Envoy drives it: a tonic client opens one ext_proc
//! stream per request and sends request headers → body → response headers → body, reading the
//! answers in between (no Envoy here; `envoy/tests/test_epp.py` runs the real one).

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Reply;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest, ProcessingResponse, ProtocolConfiguration,
    body_mutation,
};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;
use wasm_inference_scheduler::pool::PoolSnapshot;
use wis_epp::core::{self, CoreHandle, unix_ms};
use wis_epp::stats::Stats;

const A: &str = "10.0.0.1:8000";
const B: &str = "10.0.0.2:8000";
const C: &str = "10.0.0.3:8000";
const DESTINATION: &str = "x-gateway-destination-endpoint";

struct Picked {
    client: ExternalProcessorClient<Channel>,
    core: CoreHandle,
    stats: Arc<Stats>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn picker(config: &str) -> Picked {
    let stats = Arc::new(Stats::default());
    let config = core::read_config(config.as_bytes(), &[A.into(), B.into(), C.into()]).unwrap();
    let core = CoreHandle::spawn(config, stats.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = wis_epp::serve::ext_proc_service(core.clone(), stats.clone());
    let server = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
    });
    let client = ExternalProcessorClient::connect(format!("http://{addr}")).await.unwrap();
    Picked { client, core, stats, server }
}

/// One ext_proc stream: what the proxy sends and what it reads back.
struct Stream {
    outbound: mpsc::Sender<ProcessingRequest>,
    inbound: Streaming<ProcessingResponse>,
}

impl Stream {
    async fn open(picked: &mut Picked) -> Self {
        let (outbound, rx) = mpsc::channel(16);
        let inbound = picked.client.process(ReceiverStream::new(rx)).await.unwrap().into_inner();
        Self { outbound, inbound }
    }

    async fn send(&self, message: ProcessingRequest) {
        self.outbound.send(message).await.unwrap();
    }

    async fn next(&mut self) -> ProcessingResponse {
        tokio::time::timeout(Duration::from_secs(5), self.inbound.message())
            .await
            .expect("the picker answers")
            .expect("a healthy stream")
            .expect("an answer, not the end of the stream")
    }
}

fn headers(path: &str, extra: &[(&str, &str)], end_of_stream: bool) -> HttpHeaders {
    let mut list = vec![(":method", "POST"), (":path", path), ("content-type", "application/json")];
    list.extend_from_slice(extra);
    let headers = list
        .iter()
        .map(|(k, v)| HeaderValue { key: k.to_string(), value: String::new(), raw_value: v.as_bytes().to_vec() })
        .collect();
    HttpHeaders { headers: Some(HeaderMap { headers }), end_of_stream, ..Default::default() }
}

fn first(headers: HttpHeaders, mode: BodySendMode, metadata: Option<Metadata>) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Request::RequestHeaders(headers)),
        protocol_config: Some(ProtocolConfiguration {
            request_body_mode: mode as i32,
            response_body_mode: mode as i32,
            ..Default::default()
        }),
        metadata_context: metadata,
        ..Default::default()
    }
}

fn message(request: Request) -> ProcessingRequest {
    ProcessingRequest { request: Some(request), ..Default::default() }
}

fn body(bytes: &[u8], end_of_stream: bool) -> ProcessingRequest {
    message(Request::RequestBody(HttpBody { body: bytes.to_vec(), end_of_stream, ..Default::default() }))
}

fn response_body(bytes: &[u8], end_of_stream: bool) -> ProcessingRequest {
    message(Request::ResponseBody(HttpBody { body: bytes.to_vec(), end_of_stream, ..Default::default() }))
}

fn response_headers(served: Option<&str>) -> ProcessingRequest {
    let mut out = message(Request::ResponseHeaders(headers("/", &[(":status", "200")], false)));
    if let Some(served) = served {
        let fields =
            HashMap::from([("upstream.address".to_string(), Value { kind: Some(Kind::StringValue(served.into())) })]);
        out.attributes = HashMap::from([("envoy.filters.http.ext_proc".to_string(), Struct { fields })]);
    }
    out
}

fn chat(text: &str) -> Vec<u8> {
    serde_json::json!({"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": text}]})
        .to_string()
        .into_bytes()
}

fn subset_metadata(value: Kind) -> Metadata {
    let hint = Struct { fields: HashMap::from([(SUBSET_KEY.to_string(), Value { kind: Some(value) })]) };
    Metadata { filter_metadata: HashMap::from([("envoy.lb.subset_hint".to_string(), hint)]), ..Default::default() }
}
const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";

fn common(response: &ProcessingResponse) -> &CommonResponse {
    match &response.response {
        Some(Reply::RequestHeaders(h)) | Some(Reply::ResponseHeaders(h)) => {
            h.response.as_ref().expect("a common response")
        }
        Some(Reply::RequestBody(b)) | Some(Reply::ResponseBody(b)) => b.response.as_ref().expect("a common response"),
        other => panic!("expected a headers or body response, got {other:?}"),
    }
}

fn set_header(common: &CommonResponse, name: &str) -> Option<String> {
    let mutation = common.header_mutation.as_ref()?;
    let header = mutation.set_headers.iter().find_map(|h| h.header.as_ref().filter(|h| h.key == name))?;
    Some(String::from_utf8_lossy(&header.raw_value).into_owned())
}

fn metadata_destination(response: &ProcessingResponse) -> Option<String> {
    let lb = response.dynamic_metadata.as_ref()?.fields.get("envoy.lb")?;
    let Some(Kind::StructValue(lb)) = &lb.kind else { return None };
    match &lb.fields.get(DESTINATION)?.kind {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn streamed(response: &ProcessingResponse) -> (Vec<u8>, bool) {
    match &common(response).body_mutation.as_ref().and_then(|m| m.mutation.as_ref()) {
        Some(body_mutation::Mutation::StreamedResponse(s)) => (s.body.clone(), s.end_of_stream),
        other => panic!("expected a streamed body, got {other:?}"),
    }
}

fn immediate(response: &ProcessingResponse) -> (i32, serde_json::Value) {
    match &response.response {
        Some(Reply::ImmediateResponse(r)) => {
            (r.status.as_ref().map(|s| s.code).unwrap_or(0), serde_json::from_slice(&r.body).expect("a JSON body"))
        }
        other => panic!("expected an immediate response, got {other:?}"),
    }
}

async fn in_flight(core: &CoreHandle) -> u32 {
    core.call(|c| [A, B, C].iter().map(|e| c.in_flight(e)).sum()).await.unwrap()
}

#[tokio::test]
async fn full_duplex_request_gets_the_destination_in_header_and_metadata_then_its_body_back() {
    let mut picked = picker("{}").await;
    let mut stream = Stream::open(&mut picked).await;
    let forged = [(DESTINATION, "10.9.9.9:1")];
    stream.send(first(headers("/v1/chat/completions", &forged, false), BodySendMode::FullDuplexStreamed, None)).await;
    let payload = chat("hello there");
    let (head, tail) = payload.split_at(10);
    stream.send(body(head, false)).await;
    stream.send(body(tail, true)).await;

    let decision = stream.next().await;
    assert!(matches!(decision.response, Some(Reply::RequestHeaders(_))), "the headers are answered first");
    let header = set_header(common(&decision), DESTINATION).expect("the destination header");
    let primary = header.split(',').next().unwrap().to_string();
    assert!([A, B, C].contains(&primary.as_str()), "a pool member, never the forged one: {header}");
    assert_eq!(metadata_destination(&decision).as_deref(), Some(header.as_str()), "the same value in envoy.lb");
    assert!(common(&decision).clear_route_cache);
    assert_eq!(set_header(common(&decision), "content-length"), Some(payload.len().to_string()));
    let (echoed, end) = streamed(&stream.next().await);
    assert_eq!((echoed, end), (payload.clone(), true), "the body goes back whole");
    assert_eq!(in_flight(&picked.core).await, 1);

    stream.send(response_headers(Some(&primary))).await;
    assert!(matches!(stream.next().await.response, Some(Reply::ResponseHeaders(_))));
    let usage = br#"{"choices":[],"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":0}}}"#;
    stream.send(response_body(usage, true)).await;
    assert_eq!(streamed(&stream.next().await), (usage.to_vec(), true), "the response goes back unchanged");
    assert_eq!(in_flight(&picked.core).await, 0, "released at the end of the response");
}

#[tokio::test]
async fn buffered_request_gets_the_decision_on_the_body_response() {
    let mut picked = picker("{}").await;
    let mut stream = Stream::open(&mut picked).await;
    stream.send(first(headers("/v1/completions", &[], false), BodySendMode::Buffered, None)).await;
    let answered = stream.next().await;
    let removed = &common(&answered).header_mutation.as_ref().expect("a mutation").remove_headers;
    assert_eq!(removed, &vec![DESTINATION.to_string()], "a client-supplied destination is stripped");
    stream.send(body(br#"{"model":"Qwen/Qwen3-0.6B","prompt":"one two three"}"#, true)).await;
    let decision = stream.next().await;
    assert!(matches!(decision.response, Some(Reply::RequestBody(_))));
    let header = set_header(common(&decision), DESTINATION).expect("the destination header");
    assert_eq!(metadata_destination(&decision), Some(header));
}

#[tokio::test]
async fn a_retry_on_another_member_moves_the_charge_and_a_reset_releases_it() {
    let mut picked = picker("{}").await;
    let mut stream = Stream::open(&mut picked).await;
    stream.send(first(headers("/v1/chat/completions", &[], false), BodySendMode::FullDuplexStreamed, None)).await;
    stream.send(body(&chat("x"), true)).await;
    let header = set_header(common(&stream.next().await), DESTINATION).unwrap();
    stream.next().await;
    let primary = header.split(',').next().unwrap().to_string();
    let other = [A, B, C].into_iter().find(|e| *e != primary).unwrap();
    stream.send(response_headers(Some(other))).await;
    stream.next().await;
    let charged = picked.core.call(move |c| c.in_flight(other)).await.unwrap();
    assert_eq!(charged, 1, "the endpoint that served carries the request");
    drop(stream);
    for _ in 0..100 {
        if in_flight(&picked.core).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("a reset stream must release its in-flight count");
}

#[tokio::test]
async fn the_subset_hint_restricts_the_choice_and_an_empty_one_is_503() {
    let mut picked = picker("{}").await;
    for hint in [
        Kind::ListValue(ListValue { values: vec![Value { kind: Some(Kind::StringValue(B.into())) }] }),
        Kind::StringValue(format!("{B}, 10.9.9.9:1")),
    ] {
        let mut stream = Stream::open(&mut picked).await;
        let meta = Some(subset_metadata(hint));
        stream.send(first(headers("/v1/chat/completions", &[], false), BodySendMode::FullDuplexStreamed, meta)).await;
        stream.send(body(&chat("x"), true)).await;
        let header = set_header(common(&stream.next().await), DESTINATION).unwrap();
        assert_eq!(header, B, "only the hinted member");
    }
    let mut stream = Stream::open(&mut picked).await;
    let meta = Some(subset_metadata(Kind::ListValue(ListValue { values: vec![] })));
    stream.send(first(headers("/v1/chat/completions", &[], false), BodySendMode::FullDuplexStreamed, meta)).await;
    stream.send(body(&chat("x"), true)).await;
    let (status, error) = immediate(&stream.next().await);
    assert_eq!(status, 503);
    assert_eq!(error["error"]["code"], "no_ready_endpoint");
}

#[tokio::test]
async fn bad_bodies_unknown_models_and_missing_bodies_get_openai_errors() {
    let mut picked = picker(r#"{"models":{"served":["Qwen/Qwen3-0.6B"]}}"#).await;
    let cases: [(&[u8], i32, &str); 2] = [
        (b"{\"model\": ", 400, "invalid_json"),
        (br#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#, 404, "model_not_found"),
    ];
    for (payload, status, code) in cases {
        let mut stream = Stream::open(&mut picked).await;
        stream.send(first(headers("/v1/chat/completions", &[], false), BodySendMode::FullDuplexStreamed, None)).await;
        stream.send(body(payload, true)).await;
        let (got, error) = immediate(&stream.next().await);
        assert_eq!((got, error["error"]["code"].as_str()), (status, Some(code)));
    }
    let mut stream = Stream::open(&mut picked).await;
    stream.send(first(headers("/v1/chat/completions", &[], true), BodySendMode::FullDuplexStreamed, None)).await;
    assert_eq!(immediate(&stream.next().await).0, 400, "an inference request needs a body");
    assert_eq!(in_flight(&picked.core).await, 0);
    let page = picked.stats.render(&Default::default(), &[], true);
    for line in ["wis_epp_local_replies_total{status=\"400\"} 2", "wis_epp_local_replies_total{status=\"404\"} 1"] {
        assert!(page.lines().any(|l| l == line), "missing {line:?} in\n{page}");
    }
}

#[tokio::test]
async fn a_sheddable_request_on_a_saturated_pool_gets_429_and_others_are_routed() {
    let mut picked = picker(r#"{"objectives":{"batch":-1}}"#).await;
    let mut snapshot = PoolSnapshot::from_static(&[A.to_string(), B.to_string()]);
    snapshot.sequence = 1;
    snapshot.generated_at_ms = unix_ms();
    for endpoint in &mut snapshot.endpoints {
        endpoint.stale = false;
        endpoint.last_scrape_ms = unix_ms() + 60_000;
        endpoint.metrics.waiting_requests = 50;
        endpoint.metrics.kv_cache_usage = 0.99;
    }
    picked.core.tell(move |c| c.adopt_pool(&snapshot));
    let objective = [("x-gateway-inference-objective", "batch")];
    let mut stream = Stream::open(&mut picked).await;
    stream
        .send(first(headers("/v1/chat/completions", &objective, false), BodySendMode::FullDuplexStreamed, None))
        .await;
    stream.send(body(&chat("x"), true)).await;
    let (status, error) = immediate(&stream.next().await);
    assert_eq!((status, error["error"]["code"].as_str()), (429, Some("pool_saturated")));
    let mut stream = Stream::open(&mut picked).await;
    stream.send(first(headers("/v1/chat/completions", &[], false), BodySendMode::FullDuplexStreamed, None)).await;
    stream.send(body(&chat("x"), true)).await;
    assert!(set_header(common(&stream.next().await), DESTINATION).is_some(), "a normal request is still routed");
}

#[tokio::test]
async fn other_paths_pass_through_with_the_destination_stripped_and_their_body_echoed() {
    let mut picked = picker("{}").await;
    let mut stream = Stream::open(&mut picked).await;
    stream.send(first(headers("/v1/models", &[(DESTINATION, A)], false), BodySendMode::FullDuplexStreamed, None)).await;
    let answered = stream.next().await;
    assert!(set_header(common(&answered), DESTINATION).is_none(), "no decision");
    assert_eq!(common(&answered).header_mutation.as_ref().unwrap().remove_headers, vec![DESTINATION.to_string()]);
    assert!(answered.dynamic_metadata.is_none());
    stream.send(body(b"abc", false)).await;
    assert_eq!(streamed(&stream.next().await), (b"abc".to_vec(), false));
    stream.send(message(Request::RequestTrailers(HttpTrailers::default()))).await;
    assert!(matches!(stream.next().await.response, Some(Reply::RequestTrailers(_))));
    assert_eq!(in_flight(&picked.core).await, 0);
}

#[tokio::test]
async fn a_buffered_body_over_grpcs_default_message_size_is_routed_and_one_over_the_limit_is_413() {
    let mut picked = picker(r#"{"limits":{"maxBodyBytes":8388608}}"#).await;
    // ~5.7 MB: over tonic's 4 MiB default; ~8.5 MB: over the 8 MiB limit, within the message size.
    let (long, over) = ("a very long prompt ".repeat(300_000), "a very long prompt ".repeat(445_000));
    for (text, routed) in [(&long, true), (&over, false)] {
        let mut stream = Stream::open(&mut picked).await;
        stream.send(first(headers("/v1/chat/completions", &[], false), BodySendMode::Buffered, None)).await;
        stream.next().await;
        stream.send(body(&chat(text), true)).await;
        let answer = stream.next().await;
        if routed {
            assert!(set_header(common(&answer), DESTINATION).is_some(), "a body within the limit is scheduled");
        } else {
            assert_eq!(immediate(&answer).0, 413);
        }
    }
}
