//! Fault injection: the modes a pod can be told to show, and what each does to a request.
//! `/admin/*` never sees a fault (the server routes it before asking for a verdict).

use hyper::Response;

use super::Pod;
use super::server::{RespBody, error_response};
use crate::api::ApiError;

/// A fault a pod can be told to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    None,
    Stall,
    Error500,
    Close,
    Exit,
}

impl FaultMode {
    pub fn parse(s: &str) -> Result<FaultMode, String> {
        match s {
            "none" => Ok(FaultMode::None),
            "stall" => Ok(FaultMode::Stall),
            "error500" => Ok(FaultMode::Error500),
            "close" => Ok(FaultMode::Close),
            "exit" => Ok(FaultMode::Exit),
            other => Err(format!("unknown fault mode {other:?}; expected none, stall, error500, close or exit")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultMode::None => "none",
            FaultMode::Stall => "stall",
            FaultMode::Error500 => "error500",
            FaultMode::Close => "close",
            FaultMode::Exit => "exit",
        }
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

/// The verdict for a request arriving now; under `stall` it waits until the mode changes.
pub(super) async fn verdict(pod: &Pod) -> Verdict {
    let mut fault = pod.fault.subscribe();
    let _ = fault.wait_for(|m| *m != FaultMode::Stall).await;
    match pod.fault() {
        FaultMode::Close | FaultMode::Exit => Verdict::Close,
        FaultMode::Error500 => Verdict::Answer(error_response(&ApiError::internal("fault injection: error500"))),
        FaultMode::None | FaultMode::Stall => Verdict::Serve,
    }
}
