//! The localhost HTTP server: `GET /snapshot`, `/healthz`, `/metrics`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;

use crate::{Shared, lock};

/// `/healthz` fails when no snapshot was published for this many intervals (a stuck publisher).
const HEALTHY_PUBLISH_INTERVALS: u32 = 20;

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /snapshot, /healthz, /metrics");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&req, &shared)) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn route<B>(req: &Request<B>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n".into());
    }
    match req.uri().path() {
        "/snapshot" => {
            if !shared.ready.load(std::sync::atomic::Ordering::Relaxed) {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no snapshot yet: waiting for discovery and the first scrapes\n".into(),
                );
            }
            let body = shared.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone();
            respond(StatusCode::OK, "application/json", body)
        }
        "/healthz" => {
            let age = lock(&shared.last_publish).elapsed();
            if age <= shared.interval * HEALTHY_PUBLISH_INTERVALS {
                text(StatusCode::OK, "ok\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("no snapshot published for {} ms\n", age.as_millis()))
            }
        }
        "/metrics" => {
            respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", Bytes::from(shared.metrics.render()))
        }
        _ => text(StatusCode::NOT_FOUND, "not found; try /snapshot, /healthz or /metrics\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", Bytes::from(body))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}
