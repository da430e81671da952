//! Fault injection: the modes a pod can be told to show, and what each does to a request.
//! `/admin/*` never sees a fault (the server routes it before asking for a verdict).

use hyper::{Response, StatusCode};
use serde_json::json;

use super::Pod;
use super::server::{RespBody, error_response, full};
use crate::api::ApiError;

/// A fault a pod can be told to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    None,
    Stall,
    Error500,
    Close,
    Exit,
    /// `/metrics` answers 404; everything else is served normally.
    Metrics404,
    /// `/metrics` answers 200 with text that is not a Prometheus exposition; serving goes on.
    MetricsGarbage,
}

/// Every mode's name, for `--fault`, `POST /admin/fault` and error messages.
const NAMES: [(FaultMode, &str); 7] = [
    (FaultMode::None, "none"),
    (FaultMode::Stall, "stall"),
    (FaultMode::Error500, "error500"),
    (FaultMode::Close, "close"),
    (FaultMode::Exit, "exit"),
    (FaultMode::Metrics404, "metrics404"),
    (FaultMode::MetricsGarbage, "metrics-garbage"),
];

/// What `metrics-garbage` serves: a web server's default page and a JSON health answer, as a
/// misrouted `/metrics` might return; no line of it is a valid sample.
pub const GARBAGE_METRICS: &str = "<!DOCTYPE html>\n<html><head><title>Welcome</title></head>\n<body><h1>It works!</h1></body></html>\n{\"status\": \"ok\", \"requests_running\": \"some\"}\nvllm:num_requests_waiting = many\n";

impl FaultMode {
    pub fn parse(s: &str) -> Result<FaultMode, String> {
        NAMES.iter().find(|(_, n)| *n == s).map(|(m, _)| *m).ok_or_else(|| {
            let all: Vec<&str> = NAMES.iter().map(|(_, n)| *n).collect();
            format!("unknown fault mode {s:?}; expected one of: {}", all.join(", "))
        })
    }

    pub fn as_str(self) -> &'static str {
        NAMES.iter().find(|(m, _)| *m == self).map_or("none", |(_, n)| n)
    }

    /// Every mode's name, comma-separated (for messages).
    pub fn names() -> String {
        NAMES.iter().map(|(_, n)| *n).collect::<Vec<_>>().join("|")
    }
}

/// Error returned to hyper to close a connection without answering (fault `close`).
#[derive(Debug)]
pub(super) struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault injection: closing the connection")
    }
}

impl std::error::Error for CloseConnection {}

/// What a fault does to one request.
pub(super) enum Verdict {
    /// Serve it normally.
    Serve,
    /// Answer this instead.
    Answer(Response<RespBody>),
    /// Close the connection without an answer.
    Close,
}

/// The verdict for a request for `path` arriving now; under `stall` it waits until the mode changes.
pub(super) async fn verdict(pod: &Pod, path: &str) -> Verdict {
    let mut fault = pod.fault.subscribe();
    let _ = fault.wait_for(|m| *m != FaultMode::Stall).await;
    let metrics = path == "/metrics";
    match pod.fault() {
        FaultMode::Close | FaultMode::Exit => Verdict::Close,
        FaultMode::Error500 => Verdict::Answer(error_response(&ApiError::internal("fault injection: error500"))),
        FaultMode::Metrics404 if metrics => {
            Verdict::Answer(full(StatusCode::NOT_FOUND, "application/json", json!({"detail": "Not Found"}).to_string()))
        }
        FaultMode::MetricsGarbage if metrics => {
            Verdict::Answer(full(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", GARBAGE_METRICS))
        }
        FaultMode::None | FaultMode::Stall | FaultMode::Metrics404 | FaultMode::MetricsGarbage => Verdict::Serve,
    }
}
