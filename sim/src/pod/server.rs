//! The HTTP side of a pod: accepting connections, routing, the admin endpoint and the fault gate.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::faults::{self, CloseConnection, FaultMode, Verdict};
use super::stream;
use super::{MAX_BODY_BYTES, POD_HEADER, Pod};
use crate::api::{self, Api, ApiError};

pub(super) type RespBody = BoxBody<Bytes, std::io::Error>;

pub(super) async fn accept_loop(pod: Arc<Pod>, listener: TcpListener) {
    let mut fault = pod.fault.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = fault.wait_for(|m| *m == FaultMode::Exit) => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let pod = pod.clone();
        tokio::spawn(async move {
            let mut fault = pod.fault.subscribe();
            let svc_pod = pod.clone();
            let service = hyper::service::service_fn(move |req| handle(svc_pod.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = fault.wait_for(|m| *m == FaultMode::Exit) => {}
            }
        });
    }
}

pub(super) fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<RespBody> {
    let body = Full::new(body.into()).map_err(|never: Infallible| match never {}).boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

pub(super) fn error_response(e: &ApiError) -> Response<RespBody> {
    full(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST), "application/json", e.body())
}

async fn handle(pod: Arc<Pod>, req: Request<Incoming>) -> Result<Response<RespBody>, CloseConnection> {
    let path = req.uri().path().to_string();
    let mut resp = if path.starts_with("/admin/") {
        admin(&pod, req).await
    } else {
        match faults::verdict(&pod, &path).await {
            Verdict::Serve => route(&pod, req, &path).await,
            Verdict::Answer(resp) => resp,
            Verdict::Close => return Err(CloseConnection),
        }
    };
    if let Ok(v) = pod.address.to_string().parse() {
        resp.headers_mut().insert(POD_HEADER, v);
    }
    Ok(resp)
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(ApiError::bad_request(format!("could not read the body (limit {MAX_BODY_BYTES} bytes): {e}"))),
    }
}

async fn admin(pod: &Arc<Pod>, req: Request<Incoming>) -> Response<RespBody> {
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/admin/fault") => {
            full(StatusCode::OK, "application/json", json!({"mode": pod.fault().as_str()}).to_string())
        }
        (Method::POST, "/admin/fault") => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            let mode = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("mode").and_then(Value::as_str).map(str::to_string))
                .ok_or_else(|| format!("expected a JSON body {{\"mode\": \"{}\"}}", FaultMode::names()))
                .and_then(|m| FaultMode::parse(&m));
            match mode {
                Ok(m) => {
                    pod.set_fault(m);
                    full(StatusCode::OK, "application/json", json!({"mode": m.as_str()}).to_string())
                }
                Err(msg) => error_response(&ApiError::bad_request(msg)),
            }
        }
        _ => error_response(&ApiError::not_found("unknown admin endpoint; expected GET or POST /admin/fault")),
    }
}

async fn route(pod: &Arc<Pod>, req: Request<Incoming>, path: &str) -> Response<RespBody> {
    match (req.method().clone(), path) {
        (Method::GET, "/health") => full(StatusCode::OK, "application/json", Bytes::new()),
        (Method::GET, "/metrics") => {
            full(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", pod.metrics_text())
        }
        (Method::GET, "/v1/models") => full(StatusCode::OK, "application/json", pod.models_json().to_string()),
        (Method::POST, "/v1/completions") => inference(pod, req, Api::Completions).await,
        (Method::POST, "/v1/chat/completions") => inference(pod, req, Api::Chat).await,
        (_, "/v1/completions" | "/v1/chat/completions" | "/health" | "/metrics" | "/v1/models") => full(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            json!({"detail": "Method Not Allowed"}).to_string(),
        ),
        _ => full(StatusCode::NOT_FOUND, "application/json", json!({"detail": "Not Found"}).to_string()),
    }
}

async fn inference(pod: &Arc<Pod>, req: Request<Incoming>, api: Api) -> Response<RespBody> {
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let parsed = match api::parse_request(api, &body) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let (ereq, reply) = match pod.admit(&parsed) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    stream::answer(pod, &parsed, ereq, reply, api).await
}
