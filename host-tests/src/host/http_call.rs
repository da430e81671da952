//! `proxy_http_call` and the scripted clusters that answer it on the test clock: a scripted
//! response after its latency, Envoy's 504 past the call's timeout, no headers at all on a reset.

use super::guest::{Ctx, read, read_string, refuse_on_service_extensions, write_u32, written};
use super::state::{Event, Shared};
use crate::abi::{self, Headers, status};
use std::collections::VecDeque;
use wasmtime::{Error, Result};

/// What a scripted upstream cluster answers to one `proxy_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamReply {
    /// A response `latency_ms` after the call (delivered as a timeout if that is past the call's timeout).
    Respond { status: u16, headers: Headers, body: Vec<u8>, latency_ms: u64 },
    /// Never answers: the call's timeout fires, and Envoy's async client answers 504.
    Hang,
    /// The stream is reset `after_ms` after the call: the callback sees no headers at all.
    Reset { after_ms: u64 },
}

impl UpstreamReply {
    /// A 200 with a JSON body, 1 ms after the call.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        UpstreamReply::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            latency_ms: 1,
        }
    }

    pub fn status(status: u16) -> Self {
        UpstreamReply::Respond { status, headers: Vec::new(), body: Vec::new(), latency_ms: 1 }
    }

    pub fn latency_ms(self, ms: u64) -> Self {
        match self {
            UpstreamReply::Respond { status, headers, body, .. } => {
                UpstreamReply::Respond { status, headers, body, latency_ms: ms }
            }
            other => other,
        }
    }
}

/// The script of one cluster: one-shot replies first, then the standing reply.
#[derive(Debug, Clone, Default)]
pub struct UpstreamScript {
    pub once: VecDeque<UpstreamReply>,
    pub always: Option<UpstreamReply>,
}

impl UpstreamScript {
    fn next_reply(&mut self) -> UpstreamReply {
        // A known cluster with nothing scripted behaves like an Envoy cluster with no healthy host.
        self.once.pop_front().or_else(|| self.always.clone()).unwrap_or(UpstreamReply::Respond {
            status: 503,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"no healthy upstream".to_vec(),
            latency_ms: 1,
        })
    }
}

/// A call's answer as its callback sees it: headers and body, or `None` (reset: no headers).
pub(crate) type CallResponse = Option<(Headers, Vec<u8>)>;

/// One `proxy_http_call` the plugin made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub vm: usize,
    pub context_id: u32,
    pub token: u32,
    pub cluster: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
    pub at_ms: u64,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Envoy: an unknown cluster, or a request without `:method`, `:path` or `:authority`, is a bad
/// argument. Trailers are read (a bad pointer is still an invalid access) and dropped.
#[allow(clippy::too_many_arguments)] // the ABI's signature
pub(super) fn proxy_http_call(
    mut c: Ctx<'_>,
    up_ptr: i32,
    up_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    body_ptr: i32,
    body_len: i32,
    trailers_ptr: i32,
    trailers_len: i32,
    timeout_ms: i32,
    token_ptr: i32,
) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_http_call")?;
    let (Some(cluster), Some(headers), Some(body), Some(_trailers)) = (
        read_string(&mut c, up_ptr, up_len)?,
        read(&mut c, headers_ptr, headers_len)?,
        read(&mut c, body_ptr, body_len)?,
        read(&mut c, trailers_ptr, trailers_len)?,
    ) else {
        return Ok(status::INVALID_MEMORY_ACCESS);
    };
    let headers: Headers = abi::deserialize_map(&headers)
        .map_err(|e| Error::msg(format!("proxy_http_call: headers: {e}")))?
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let has = |name: &str| headers.iter().any(|(k, _)| k == name);
    if !has(":method") || !has(":path") || !has(":authority") {
        return Ok(status::BAD_ARGUMENT);
    }
    let (vm, context_id, token) = (c.data().vm, c.data().effective, c.data().next_token);
    let call = HttpCall { vm, context_id, token, cluster, headers, body, timeout_ms: timeout_ms as u32, at_ms: 0 };
    if !dispatch(&mut c.data().shared.borrow_mut(), call) {
        return Ok(status::BAD_ARGUMENT);
    }
    c.data_mut().next_token = token.wrapping_add(1).max(1);
    Ok(written(write_u32(&mut c, token_ptr, token)?))
}

/// Takes the cluster's next reply, records the call and schedules its answer on the clock; false
/// for a cluster the test never declared.
fn dispatch(shared: &mut Shared, mut call: HttpCall) -> bool {
    let now = shared.now_ns;
    let Some(script) = shared.clusters.get_mut(&call.cluster) else { return false };
    let answer = answer(script.next_reply(), call.timeout_ms);
    call.at_ms = shared.now_ms();
    let (vm, context_id, token) = (call.vm, call.context_id, call.token);
    shared.http_calls.push(call);
    if let Some((after_ns, response)) = answer {
        shared.schedule(now + after_ns, Event::HttpCallDone { vm, context_id, token, response });
    }
    true
}

/// The answer a call gets: nanoseconds after the call, and the response (`None`: reset, no
/// headers). `None` overall: it never comes (a hanging upstream and no timeout).
fn answer(reply: UpstreamReply, timeout_ms: u32) -> Option<(u64, CallResponse)> {
    let timeout_ns = (timeout_ms != 0).then(|| u64::from(timeout_ms) * 1_000_000);
    match reply {
        UpstreamReply::Respond { status, mut headers, body, latency_ms } => {
            let latency = latency_ms * 1_000_000;
            match timeout_ns {
                Some(t) if latency >= t => Some((t, Some(timed_out()))),
                _ => {
                    headers.insert(0, (":status".to_string(), status.to_string()));
                    if !body.is_empty() {
                        headers.push(("content-length".to_string(), body.len().to_string()));
                    }
                    Some((latency, Some((headers, body))))
                }
            }
        }
        UpstreamReply::Hang => timeout_ns.map(|t| (t, Some(timed_out()))),
        UpstreamReply::Reset { after_ms } => Some((after_ms * 1_000_000, None)),
    }
}

/// Envoy's async client's answer past the call's timeout.
fn timed_out() -> (Headers, Vec<u8>) {
    let body = b"upstream request timeout".to_vec();
    let headers = vec![
        (":status".to_string(), "504".to_string()),
        ("content-type".to_string(), "text/plain".to_string()),
        ("content-length".to_string(), body.len().to_string()),
    ];
    (headers, body)
}
