//! A tiny stand-in model server that answers every request with a fixed exposition: the
//! benchmark's 256 "pods" (`wis-scraper fixture-server`) and the tests' pods (which change the
//! answer while it runs: HTML, slow, huge, gone).

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The built-in expositions, written from the engines' documented names (see tests/fixtures/).
pub const VLLM_SINGLE: &str = include_str!("../tests/fixtures/vllm_single.prom");
pub const SGLANG: &str = include_str!("../tests/fixtures/sglang.prom");
pub const TRTLLM: &str = include_str!("../tests/fixtures/trtllm.prom");

/// What the fixture answers.
#[derive(Debug, Clone)]
pub struct FixtureResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    /// Wait this long before answering (a slow pod).
    pub delay: Duration,
}

impl FixtureResponse {
    pub fn prometheus(body: impl Into<Bytes>) -> Self {
        Self {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8".into(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
}

pub type FixtureHandle = Arc<RwLock<FixtureResponse>>;

/// Serves `response` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, response: FixtureHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let response = response.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let r = response.read().unwrap_or_else(|p| p.into_inner()).clone();
                async move {
                    if !r.delay.is_zero() {
                        tokio::time::sleep(r.delay).await;
                    }
                    let mut resp = Response::new(Full::new(r.body));
                    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    if let Ok(ct) = hyper::header::HeaderValue::from_str(&r.content_type) {
                        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
