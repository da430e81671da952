//! One stream driven the way Envoy's HTTP filter chain drives a wasm filter: request headers and
//! body chunks (buffered while the filter pauses), the upstream's response, local replies sent
//! through the response callbacks, resets, and log → done → delete at the end.

use super::dispatcher::Inner;
use super::{HostError, HostResult};
use crate::abi::{Action, Headers};
use crate::host::{LocalReply, Phase, Stream};

impl Inner {
    pub(crate) fn new_stream(&mut self, vm: usize) -> HostResult<u32> {
        let v = &mut self.vms[vm];
        let id = v.next_context;
        v.next_context += 1;
        v.store.data_mut().streams.insert(id, Stream::default());
        let root = v.store.data().root_id;
        v.call::<(i32, i32), ()>("proxy_on_context_create", Phase::Stream, id, (id as i32, root as i32))?;
        Ok(id)
    }

    fn stream_call(&mut self, vm: usize, id: u32, name: &str, params: (i32, i32, i32)) -> HostResult<Action> {
        self.vms[vm].stream(id)?.callbacks.push(name.to_string());
        let result = self.vms[vm].call::<(i32, i32, i32), i32>(name, Phase::Stream, id, params)?;
        Ok(result.map_or(Action::Continue, Action::from_word))
    }

    /// Request headers arrive from the client.
    pub(crate) fn request_headers(
        &mut self,
        vm: usize,
        id: u32,
        headers: Headers,
        end_of_stream: bool,
    ) -> HostResult<()> {
        let n = headers.len();
        {
            let stream = self.vms[vm].stream(id)?;
            stream.request_headers = headers;
            stream.request_eos = end_of_stream;
        }
        let action =
            self.stream_call(vm, id, "proxy_on_request_headers", (id as i32, n as i32, end_of_stream as i32))?;
        let stream = self.vms[vm].stream(id)?;
        if action == Action::Continue && stream.local_reply.is_none() && !stream.close_requested {
            release_request_headers(stream);
        }
        self.after_stream_callback(vm, id)
    }

    /// One request body chunk arrives. Envoy semantics: while the filter paused on the previous
    /// chunk (StopIterationAndBuffer) the chunks accumulate and the filter sees the whole buffer;
    /// once it continued, the buffer went upstream and the next call sees only the new chunk.
    pub(crate) fn request_body(&mut self, vm: usize, id: u32, chunk: &[u8], end_of_stream: bool) -> HostResult<()> {
        let limit = self.request_buffer_limit;
        let size = {
            let stream = self.vms[vm].stream(id)?;
            if stream.ended || stream.local_reply.is_some() || stream.reset {
                // Envoy no longer runs the filter on a stream it answered or reset.
                return Ok(());
            }
            stream.request_eos = end_of_stream;
            let buffer = stream.request_body.get_or_insert_with(Vec::new);
            if !stream.request_body_held {
                buffer.clear();
            }
            buffer.extend_from_slice(chunk);
            buffer.len()
        };
        let action =
            self.stream_call(vm, id, "proxy_on_request_body", (id as i32, size as i32, end_of_stream as i32))?;
        let stream = self.vms[vm].stream(id)?;
        if stream.local_reply.is_none() && !stream.close_requested {
            if action == Action::Continue {
                forward_request_body(stream);
            } else {
                hold_request_body(stream, limit);
            }
        }
        self.after_stream_callback(vm, id)
    }

    /// The upstream answers: headers, then body chunks; then the stream ends. `upstream_address`
    /// is the `upstream.address` property (default: what the override-host header named).
    pub(crate) fn respond(
        &mut self,
        vm: usize,
        id: u32,
        upstream_address: Option<String>,
        headers: Headers,
        chunks: Vec<Vec<u8>>,
    ) -> HostResult<()> {
        self.response_headers(vm, id, upstream_address, headers, chunks.is_empty())?;
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            if !self.response_body(vm, id, &chunk, i + 1 == count)? {
                break;
            }
        }
        let ended = self.vms[vm].stream(id).map(|s| s.ended).unwrap_or(true);
        if !ended {
            self.end_stream(vm, id)?;
        }
        Ok(())
    }

    fn response_headers(
        &mut self,
        vm: usize,
        id: u32,
        upstream_address: Option<String>,
        headers: Headers,
        end_of_stream: bool,
    ) -> HostResult<()> {
        let override_host_header = self.override_host_header.clone();
        let n = headers.len();
        {
            let stream = self.vms[vm].stream(id)?;
            let Some(upstream_headers) = &stream.upstream_headers else {
                return Err(HostError(format!(
                    "vm{vm} stream {id}: cannot respond: the request never went upstream ({})",
                    describe_request_state(stream)
                )));
            };
            let chosen = override_host_header.and_then(|name| first_address(upstream_headers, &name));
            if let Some(address) = upstream_address.or(chosen) {
                stream.properties.insert("upstream.address".into(), address.into_bytes());
            }
            stream.response_headers = Some(headers);
            stream.response_eos = end_of_stream;
        }
        let action =
            self.stream_call(vm, id, "proxy_on_response_headers", (id as i32, n as i32, end_of_stream as i32))?;
        let stream = self.vms[vm].stream(id)?;
        if action == Action::Continue && stream.local_reply.is_none() {
            release_response_headers(stream);
        }
        self.after_stream_callback(vm, id)
    }

    /// One response body chunk, with the request body's buffering rules. False once the stream
    /// is over (ended, reset or answered locally): Envoy runs the filter no more.
    fn response_body(&mut self, vm: usize, id: u32, chunk: &[u8], end_of_stream: bool) -> HostResult<bool> {
        let size = {
            let stream = self.vms[vm].stream(id)?;
            if stream.ended || stream.reset || stream.local_reply.is_some() {
                return Ok(false);
            }
            stream.response_eos = end_of_stream;
            let buffer = stream.response_body.get_or_insert_with(Vec::new);
            if !stream.response_body_held {
                buffer.clear();
            }
            buffer.extend_from_slice(chunk);
            buffer.len()
        };
        let action =
            self.stream_call(vm, id, "proxy_on_response_body", (id as i32, size as i32, end_of_stream as i32))?;
        let stream = self.vms[vm].stream(id)?;
        if stream.local_reply.is_none() {
            if action == Action::Continue {
                forward_response_body(stream);
            } else {
                stream.response_body_held = true;
            }
        }
        self.after_stream_callback(vm, id)?;
        Ok(true)
    }

    /// The client or the upstream reset the stream: no more request or response callbacks; Envoy
    /// still writes its access log (`proxy_on_log`) and destroys the context.
    pub(crate) fn reset(&mut self, vm: usize, id: u32) -> HostResult<()> {
        let stream = self.vms[vm].stream(id)?;
        if stream.ended {
            return Ok(());
        }
        stream.reset = true;
        self.end_stream(vm, id)
    }

    /// Acts on what the plugin asked during a callback on stream `id`: a local reply, a resumed
    /// request or response, a closed stream, a finished `proxy_done`.
    pub(super) fn after_stream_callback(&mut self, vm: usize, id: u32) -> HostResult<()> {
        let Ok(stream) = self.vms[vm].stream(id) else { return Ok(()) };
        if stream.ended {
            return Ok(());
        }
        if stream.close_requested && !stream.reset {
            stream.reset = true;
            return self.end_stream(vm, id);
        }
        if stream.local_reply.is_some() && !stream.local_reply_delivered {
            return self.deliver_local_reply(vm, id);
        }
        if stream.continue_request {
            stream.continue_request = false;
            forward_request_body(stream);
        }
        if stream.continue_response {
            stream.continue_response = false;
            forward_response_body(stream);
        }
        if stream.done_called {
            return self.delete_stream(vm, id);
        }
        Ok(())
    }

    /// Envoy sends a local reply through the encoder filters, this one included, then ends the stream.
    fn deliver_local_reply(&mut self, vm: usize, id: u32) -> HostResult<()> {
        let (n, body) = {
            let stream = self.vms[vm].stream(id)?;
            stream.local_reply_delivered = true;
            let reply = stream.local_reply.clone().unwrap_or_else(unreachable_reply);
            let headers = local_reply_headers(&reply);
            let n = headers.len();
            stream.response_headers = Some(headers);
            stream.response_body = None;
            stream.response_body_held = false;
            stream.request_body = None;
            (n, reply.body)
        };
        let has_body = !body.is_empty();
        self.stream_call(vm, id, "proxy_on_response_headers", (id as i32, n as i32, (!has_body) as i32))?;
        {
            let stream = self.vms[vm].stream(id)?;
            stream.client_headers = stream.response_headers.clone();
            stream.response_started = true;
        }
        if has_body {
            let size = body.len();
            self.vms[vm].stream(id)?.response_body = Some(body);
            self.stream_call(vm, id, "proxy_on_response_body", (id as i32, size as i32, 1))?;
            let stream = self.vms[vm].stream(id)?;
            stream.client_body = stream.response_body.take().unwrap_or_default();
        }
        self.vms[vm].stream(id)?.response_complete = true;
        self.end_stream(vm, id)
    }

    /// End of the stream: access log, done, delete (Envoy's order).
    fn end_stream(&mut self, vm: usize, id: u32) -> HostResult<()> {
        {
            let stream = self.vms[vm].stream(id)?;
            if stream.ended || stream.logged {
                return Ok(());
            }
            stream.logged = true;
        }
        self.vms[vm].stream(id)?.callbacks.push("proxy_on_log".into());
        self.vms[vm].call::<i32, ()>("proxy_on_log", Phase::Stream, id, id as i32)?;
        self.vms[vm].stream(id)?.callbacks.push("proxy_on_done".into());
        let done = self.vms[vm].call::<i32, i32>("proxy_on_done", Phase::Stream, id, id as i32)?;
        if done == Some(0) {
            // The plugin keeps the context until it calls proxy_done.
            self.vms[vm].stream(id)?.done_pending = true;
            return Ok(());
        }
        self.delete_stream(vm, id)
    }

    fn delete_stream(&mut self, vm: usize, id: u32) -> HostResult<()> {
        {
            let stream = self.vms[vm].stream(id)?;
            stream.ended = true;
            stream.done_called = false;
            stream.callbacks.push("proxy_on_delete".into());
        }
        self.vms[vm].call::<i32, ()>("proxy_on_delete", Phase::Stream, id, id as i32)?;
        Ok(())
    }

    /// Forgets an ended stream (the exchange took what it needed).
    pub(crate) fn forget(&mut self, vm: usize, id: u32) {
        let streams = &mut self.vms[vm].store.data_mut().streams;
        if streams.get(&id).is_some_and(|s| s.ended) {
            streams.remove(&id);
        }
    }
}

/// The first address of a comma-separated override-host header (`ip:port[,ip:port...]`).
fn first_address(headers: &Headers, name: &str) -> Option<String> {
    let value = headers.iter().find(|(k, _)| k == name).map(|(_, v)| v)?;
    value.split(',').next().map(|s| s.trim().to_string())
}

/// What a local reply's response headers are: its status and headers, a content type and length
/// when it has a body.
fn local_reply_headers(reply: &LocalReply) -> Headers {
    let mut headers = vec![(":status".to_string(), reply.status.to_string())];
    headers.extend(reply.headers.iter().cloned());
    if !reply.body.is_empty() {
        if !headers.iter().any(|(k, _)| k == "content-type") {
            headers.push(("content-type".into(), "text/plain".into()));
        }
        headers.push(("content-length".into(), reply.body.len().to_string()));
    }
    headers
}

fn unreachable_reply() -> LocalReply {
    LocalReply {
        status: 500,
        details: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
        grpc_status: -1,
        from_host: true,
    }
}

/// The filter paused on this chunk: it stays buffered; past the buffer limit (if any) Envoy
/// answers 413 itself.
fn hold_request_body(stream: &mut Stream, limit: Option<usize>) {
    stream.request_body_held = true;
    let held = stream.request_body.as_ref().map_or(0, Vec::len);
    if let Some(limit) = limit
        && held > limit
    {
        stream.local_reply = Some(LocalReply {
            status: 413,
            details: "request_payload_too_large".into(),
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"Payload Too Large".to_vec(),
            grpc_status: -1,
            from_host: true,
        });
    }
}

fn release_request_headers(stream: &mut Stream) {
    if stream.upstream_headers.is_none() {
        stream.upstream_headers = Some(stream.request_headers.clone());
        // Headers-only request: it is complete once the headers go.
        if stream.request_eos && stream.request_body.is_none() {
            stream.request_complete = true;
        }
    }
}

/// Continue on the request: headers (if still held) and the buffered body go upstream.
fn forward_request_body(stream: &mut Stream) {
    release_request_headers(stream);
    if let Some(body) = stream.request_body.take() {
        stream.upstream_body.extend_from_slice(&body);
    }
    stream.request_body_held = false;
    if stream.request_eos {
        stream.request_complete = true;
    }
}

fn release_response_headers(stream: &mut Stream) {
    if stream.client_headers.is_none() {
        stream.client_headers = stream.response_headers.clone();
        stream.response_started = true;
        if stream.response_eos && stream.response_body.is_none() {
            stream.response_complete = true;
        }
    }
}

fn forward_response_body(stream: &mut Stream) {
    release_response_headers(stream);
    if let Some(body) = stream.response_body.take() {
        stream.client_body.extend_from_slice(&body);
    }
    stream.response_body_held = false;
    if stream.response_eos {
        stream.response_complete = true;
    }
}

pub(crate) fn describe_request_state(stream: &Stream) -> String {
    if let Some(reply) = &stream.local_reply {
        return format!("the filter replied locally with {} {}", reply.status, String::from_utf8_lossy(&reply.body));
    }
    if stream.reset {
        return "the stream was reset".into();
    }
    match (&stream.upstream_headers, stream.request_eos) {
        (None, true) => "the filter paused the request at end of stream and never resumed it".into(),
        (None, false) => "the filter holds the request headers and the client has not finished sending".into(),
        (Some(_), _) if !stream.request_complete && stream.request_eos => {
            "the headers went upstream but the filter holds the end of the body".into()
        }
        _ => "forwarded".into(),
    }
}
