//! A minimal Envoy external-processing (`ext_proc`) endpoint picker, wired the way the Gateway
//! API Inference Extension's Endpoint Picker is: Envoy streams the request headers and the buffered
//! body over gRPC, and the picker answers the body message with a header mutation setting
//! `x-gateway-destination-endpoint`. It picks round-robin and does nothing else, so the overhead
//! benchmark measures the out-of-process hop itself, not a scheduling algorithm.
//!
//! Usage: `ext-proc-picker --listen 127.0.0.1:9002 --pool 127.0.0.1:8001,127.0.0.1:8002`

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Reply;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ProcessingRequest, ProcessingResponse,
    TrailersResponse,
};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

/// The Endpoint Picker Protocol's destination header, as the plugin names it (one definition).
fn destination_header() -> String {
    wasm_inference_scheduler::config::HeaderNames::default().destination
}
/// `HeaderValueOption.append_action` OVERWRITE_IF_EXISTS_OR_ADD.
const OVERWRITE_IF_EXISTS_OR_ADD: i32 = 2;

/// Round-robin over a fixed pool.
#[derive(Debug, Clone)]
pub struct RoundRobinPicker {
    pool: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
}

impl RoundRobinPicker {
    pub fn new(pool: Vec<String>) -> Self {
        Self { pool: Arc::new(pool), next: Arc::new(AtomicUsize::new(0)) }
    }

    fn pick(&self) -> Option<String> {
        if self.pool.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        Some(self.pool[i].clone())
    }

    /// The answer to one message of the stream: continue, and on the body, the chosen endpoint.
    pub fn respond(&self, request: &ProcessingRequest) -> ProcessingResponse {
        let reply = match &request.request {
            Some(Request::RequestHeaders(_)) => Reply::RequestHeaders(HeadersResponse::default()),
            Some(Request::RequestBody(_)) => {
                let header_mutation = self.pick().map(|endpoint| HeaderMutation {
                    set_headers: vec![HeaderValueOption {
                        header: Some(HeaderValue {
                            key: destination_header(),
                            value: String::new(),
                            raw_value: endpoint.into_bytes(),
                        }),
                        append_action: OVERWRITE_IF_EXISTS_OR_ADD,
                        ..Default::default()
                    }],
                    remove_headers: Vec::new(),
                });
                Reply::RequestBody(BodyResponse {
                    response: Some(CommonResponse { header_mutation, ..Default::default() }),
                })
            }
            Some(Request::ResponseHeaders(_)) => Reply::ResponseHeaders(HeadersResponse::default()),
            Some(Request::ResponseBody(_)) => Reply::ResponseBody(BodyResponse::default()),
            Some(Request::RequestTrailers(_)) => Reply::RequestTrailers(TrailersResponse::default()),
            Some(Request::ResponseTrailers(_)) | None => Reply::ResponseTrailers(TrailersResponse::default()),
        };
        ProcessingResponse { response: Some(reply), ..Default::default() }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for RoundRobinPicker {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: GrpcRequest<Streaming<ProcessingRequest>>,
    ) -> Result<GrpcResponse<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let picker = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if tx.send(Ok(picker.respond(&message))).await.is_err() {
                    break;
                }
            }
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn usage() -> ! {
    eprintln!("usage: ext-proc-picker --listen IP:PORT --pool IP:PORT[,IP:PORT...]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut listen: Option<SocketAddr> = None;
    let mut pool: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().and_then(|a| a.parse().ok()),
            "--pool" => pool = args.next().map(|p| p.split(',').map(str::to_string).collect()).unwrap_or_default(),
            _ => usage(),
        }
    }
    let (Some(listen), false) = (listen, pool.is_empty()) else { usage() };
    eprintln!("ext-proc-picker listening on {listen}, pool of {}", pool.len());
    let server = tonic::transport::Server::builder()
        .add_service(ExternalProcessorServer::new(RoundRobinPicker::new(pool)))
        .serve_with_shutdown(listen, async {
            let _ = tokio::signal::ctrl_c().await;
        });
    if let Err(e) = server.await {
        eprintln!("ext-proc-picker: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::ext_proc::v3::{HttpBody, HttpHeaders};

    fn destination(response: &ProcessingResponse) -> Option<String> {
        let Some(Reply::RequestBody(body)) = &response.response else { return None };
        let header = body.response.as_ref()?.header_mutation.as_ref()?.set_headers.first()?.header.as_ref()?;
        assert_eq!(header.key, "x-gateway-destination-endpoint");
        String::from_utf8(header.raw_value.clone()).ok()
    }

    fn message(request: Request) -> ProcessingRequest {
        ProcessingRequest { request: Some(request), ..Default::default() }
    }

    #[test]
    fn headers_continue_and_the_body_gets_the_next_pool_member() {
        let picker = RoundRobinPicker::new(vec!["10.0.0.1:8000".into(), "10.0.0.2:8000".into()]);
        let headers = picker.respond(&message(Request::RequestHeaders(HttpHeaders::default())));
        assert!(matches!(headers.response, Some(Reply::RequestHeaders(_))));
        let body = || {
            message(Request::RequestBody(HttpBody { body: b"{}".to_vec(), end_of_stream: true, ..Default::default() }))
        };
        let picks: Vec<_> = (0..4).map(|_| destination(&picker.respond(&body()))).collect();
        assert_eq!(
            picks,
            vec![
                Some("10.0.0.1:8000".to_string()),
                Some("10.0.0.2:8000".to_string()),
                Some("10.0.0.1:8000".to_string()),
                Some("10.0.0.2:8000".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn answers_over_grpc_like_envoy_asks() {
        use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ExternalProcessorServer::new(RoundRobinPicker::new(vec!["10.0.0.9:8000".into()])))
                .serve_with_incoming(incoming),
        );
        let mut client = ExternalProcessorClient::connect(format!("http://{addr}")).await.unwrap();
        let outbound = tokio_stream::iter(vec![
            message(Request::RequestHeaders(HttpHeaders::default())),
            message(Request::RequestBody(HttpBody { body: b"{}".to_vec(), end_of_stream: true, ..Default::default() })),
        ]);
        let mut replies = client.process(outbound).await.unwrap().into_inner();
        let first = replies.message().await.unwrap().unwrap();
        assert!(matches!(first.response, Some(Reply::RequestHeaders(_))));
        let second = replies.message().await.unwrap().unwrap();
        assert_eq!(destination(&second).as_deref(), Some("10.0.0.9:8000"));
        server.abort();
    }
}
