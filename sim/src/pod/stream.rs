//! A request's answer as the engine produces it: one JSON body, or SSE frames as tokens arrive.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use http_body_util::combinators::BoxBody;

use super::server::{RespBody, error_response, full};
use super::{Pod, unix_now};
use crate::api::{self, Api, ApiError, ParsedRequest};
use crate::engine::{EngineRequest, FinishReason, Output};
use crate::reply::Reply;

/// Aborts the engine request when the client goes away before it finished.
struct Inflight {
    pod: Arc<Pod>,
    id: u64,
    done: bool,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        if !self.done {
            self.pod.abort(self.id);
        }
    }
}

/// Submits an admitted request and answers it: an SSE stream, or one JSON body when it finished.
pub(super) async fn answer(
    pod: &Arc<Pod>,
    parsed: &ParsedRequest,
    ereq: EngineRequest,
    reply: Reply,
    api: Api,
) -> Response<RespBody> {
    let id_num = ereq.id;
    let prefix = if api == Api::Chat { "chatcmpl" } else { "cmpl" };
    let id = format!("{prefix}-{:016x}{:016x}", pod.created_unix.to_bits(), id_num);
    let rx = pod.submit(ereq);
    let guard = Inflight { pod: pod.clone(), id: id_num, done: false };
    let created = unix_now() as u64;
    let details = pod.config.enable_prompt_tokens_details;
    if parsed.stream {
        let body = SseBody {
            rx,
            reply,
            api,
            id,
            created,
            model: parsed.model.clone(),
            include_usage: parsed.include_usage,
            details,
            sent_role: api != Api::Chat,
            finished: false,
            guard,
        };
        let mut r = Response::new(BoxBody::new(body));
        if let Ok(v) = "text/event-stream; charset=utf-8".parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        return r;
    }
    collect_full(rx, guard, &reply, api, &id, created, &parsed.model, details).await
}

#[allow(clippy::too_many_arguments)] // the pieces of one response, each used once
async fn collect_full(
    mut rx: mpsc::UnboundedReceiver<Output>,
    mut guard: Inflight,
    reply: &Reply,
    api: Api,
    id: &str,
    created: u64,
    model: &str,
    details: bool,
) -> Response<RespBody> {
    let mut text = String::new();
    while let Some(out) = rx.recv().await {
        match out {
            Output::Token { index, .. } => text.push_str(reply.piece(index as usize)),
            Output::Finished { reason, prompt_tokens, completion_tokens, cached_tokens, .. } => {
                guard.done = true;
                let u = api::usage(prompt_tokens, completion_tokens, cached_tokens, details, false);
                let v = api::full_response(api, id, created, model, &text, reason.as_str(), u);
                return full(StatusCode::OK, "application/json", v.to_string());
            }
        }
    }
    guard.done = true; // the engine is gone (pod exit); nothing left to abort
    error_response(&ApiError::internal("the engine stopped before the request finished"))
}

/// A streaming response: engine outputs turned into SSE frames as they arrive.
struct SseBody {
    rx: mpsc::UnboundedReceiver<Output>,
    reply: Reply,
    api: Api,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    details: bool,
    sent_role: bool,
    finished: bool,
    guard: Inflight,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if !this.sent_role {
            this.sent_role = true;
            let chunk = api::chat_role_chunk(&this.id, this.created, &this.model);
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(api::sse(&chunk))))));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        // Drain everything ready into one frame: fewer writes when a step emits several outputs.
        let mut buf = String::new();
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Output::Token { index, finish, .. })) => {
                    let text = this.reply.piece(index as usize);
                    if text.is_empty() && finish.is_none() {
                        continue; // a held-back partial character: vLLM sends no empty delta
                    }
                    let finish = finish.map(FinishReason::as_str);
                    let chunk = api::stream_chunk(this.api, &this.id, this.created, &this.model, text, finish);
                    buf.push_str(&api::sse(&chunk));
                }
                Poll::Ready(Some(Output::Finished { prompt_tokens, completion_tokens, cached_tokens, .. })) => {
                    this.guard.done = true;
                    this.finished = true;
                    if this.include_usage {
                        let u = api::usage(prompt_tokens, completion_tokens, cached_tokens, this.details, true);
                        buf.push_str(&api::sse(&api::usage_chunk(this.api, &this.id, this.created, &this.model, u)));
                    }
                    buf.push_str(api::SSE_DONE);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))));
                }
                Poll::Ready(None) => {
                    this.guard.done = true;
                    this.finished = true;
                    if buf.is_empty() {
                        return Poll::Ready(Some(Err(std::io::Error::other("the engine stopped mid-stream"))));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))));
                }
                Poll::Pending => {
                    if buf.is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))));
                }
            }
        }
    }
}
