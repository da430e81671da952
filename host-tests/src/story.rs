//! Requests as stories: build one, send it through a worker, look at what went upstream or what
//! the client got, answer it from the upstream.

use crate::abi::Headers;
use crate::envoy::{Envoy, HostResult, Worker, describe_request_state};
use crate::host::{LocalReply, Stream};

/// A request about to arrive on a worker.
pub struct RequestBuilder {
    worker: Worker,
    headers: Headers,
    body: Option<Vec<u8>>,
    chunk_size: Option<usize>,
    chunks: Option<Vec<Vec<u8>>>,
}

impl Worker {
    /// A POST to `path` with `:authority: gateway` and `content-type: application/json`.
    pub fn request(&self, path: &str) -> RequestBuilder {
        RequestBuilder {
            worker: self.clone(),
            headers: vec![
                (":method".into(), "POST".into()),
                (":scheme".into(), "http".into()),
                (":path".into(), path.into()),
                (":authority".into(), "gateway".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: None,
            chunk_size: None,
            chunks: None,
        }
    }

    pub fn index(&self) -> usize {
        self.vm
    }
}

impl RequestBuilder {
    pub fn method(mut self, method: &str) -> Self {
        crate::host::replace_header(&mut self.headers, ":method", method);
        self
    }

    /// Adds a header (keys are lower-cased, as Envoy stores them).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    /// The body, sent as one chunk unless [`Self::chunked`] splits it.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn json(self, value: &serde_json::Value) -> Self {
        self.body(value.to_string())
    }

    /// Splits the body into chunks of `size` bytes, each delivered as Envoy delivers a DATA frame.
    pub fn chunked(mut self, size: usize) -> Self {
        self.chunk_size = Some(size.max(1));
        self
    }

    /// Explicit body chunks (the last one ends the stream).
    pub fn body_chunks<I: IntoIterator<Item = B>, B: Into<Vec<u8>>>(mut self, chunks: I) -> Self {
        self.chunks = Some(chunks.into_iter().map(Into::into).collect());
        self
    }

    /// Drives the request through the filter: context creation, headers, every body chunk. Panics
    /// (failing the test) if the plugin traps or calls something the host refuses.
    pub fn send(self) -> Exchange {
        self.try_send().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_send(self) -> HostResult<Exchange> {
        let chunks: Vec<Vec<u8>> = match (self.chunks, self.body) {
            (Some(chunks), _) => chunks,
            (None, Some(body)) if body.is_empty() => vec![body],
            (None, Some(body)) => match self.chunk_size {
                Some(size) => body.chunks(size).map(<[u8]>::to_vec).collect(),
                None => vec![body],
            },
            (None, None) => Vec::new(),
        };
        let envoy = self.worker.envoy.clone();
        let vm = self.worker.vm;
        let mut inner = envoy.inner.borrow_mut();
        let id = inner.new_stream(vm)?;
        inner.request_headers(vm, id, self.headers, chunks.is_empty())?;
        let count = chunks.len();
        for (i, chunk) in chunks.iter().enumerate() {
            inner.request_body(vm, id, chunk, i + 1 == count)?;
        }
        inner.settle()?;
        drop(inner);
        let mut exchange = Exchange { envoy: envoy.clone(), vm, id, view: StreamView::default() };
        exchange.refresh();
        Ok(exchange)
    }
}

/// What the client got back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// The whole response reached the client (the filter did not hold its end).
    pub complete: bool,
}

impl ClientResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A copy of the stream's host-side state, taken after each step.
#[derive(Debug, Clone, Default)]
struct StreamView {
    upstream_headers: Option<Headers>,
    upstream_body: Vec<u8>,
    request_complete: bool,
    local_reply: Option<LocalReply>,
    client: Option<ClientResponse>,
    ended: bool,
    reset: bool,
    callbacks: Vec<String>,
    state: String,
}

impl StreamView {
    fn of(stream: &Stream) -> Self {
        let client = stream.client_headers.as_ref().map(|headers| ClientResponse {
            status: headers.iter().find(|(k, _)| k == ":status").and_then(|(_, v)| v.parse().ok()).unwrap_or(0),
            headers: headers.clone(),
            body: stream.client_body.clone(),
            complete: stream.response_complete,
        });
        Self {
            upstream_headers: stream.upstream_headers.clone(),
            upstream_body: stream.upstream_body.clone(),
            request_complete: stream.request_complete,
            local_reply: stream.local_reply.clone(),
            client,
            ended: stream.ended,
            reset: stream.reset,
            callbacks: stream.callbacks.clone(),
            state: describe_request_state(stream),
        }
    }
}

/// One request/response exchange on one worker.
pub struct Exchange {
    envoy: Envoy,
    vm: usize,
    id: u32,
    view: StreamView,
}

impl Exchange {
    fn refresh(&mut self) {
        let mut inner = self.envoy.inner.borrow_mut();
        if let Some(stream) = inner.vms[self.vm].store.data().streams.get(&self.id) {
            self.view = StreamView::of(stream);
        }
        if self.view.ended {
            inner.forget(self.vm, self.id);
        }
    }

    pub fn context_id(&self) -> u32 {
        self.id
    }

    pub fn worker(&self) -> usize {
        self.vm
    }

    /// The request headers as they went upstream, if they did.
    pub fn upstream_headers(&self) -> Option<&Headers> {
        self.view.upstream_headers.as_ref()
    }

    /// Every value of a header on the upstream request.
    pub fn upstream_header_values(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.view.upstream_headers.iter().flatten().filter(|(k, _)| *k == name).map(|(_, v)| v.clone()).collect()
    }

    /// A header of the upstream request (first value); panics if the request did not go upstream.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        if self.view.upstream_headers.is_none() {
            panic!("the request did not go upstream: {}", self.view.state);
        }
        self.upstream_header_values(name).into_iter().next()
    }

    pub fn upstream_body(&self) -> &[u8] {
        &self.view.upstream_body
    }

    /// The whole request (headers and body through end of stream) went upstream.
    pub fn forwarded(&self) -> bool {
        self.view.request_complete
    }

    /// Panics unless the whole request went upstream.
    pub fn assert_forwarded(&self) -> &Self {
        assert!(self.view.request_complete, "the request was not forwarded upstream: {}", self.view.state);
        self
    }

    pub fn local_reply(&self) -> Option<&LocalReply> {
        self.view.local_reply.as_ref()
    }

    /// Panics unless the filter answered locally with `status`; returns the reply body as JSON.
    pub fn assert_local_reply(&self, status: u16) -> serde_json::Value {
        let Some(reply) = &self.view.local_reply else {
            panic!(
                "expected a local reply {status}, but there was none; the request state: {}; upstream headers: {:?}",
                self.view.state, self.view.upstream_headers
            );
        };
        assert_eq!(reply.status, status, "local reply status; body: {}", String::from_utf8_lossy(&reply.body));
        serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("local reply body is not JSON ({e}): {}", String::from_utf8_lossy(&reply.body)))
    }

    /// What the client got (a local reply or the upstream's answer), once response headers went out.
    pub fn client_response(&self) -> Option<&ClientResponse> {
        self.view.client.as_ref()
    }

    /// The stream finished (log, done, delete ran).
    pub fn ended(&self) -> bool {
        self.view.ended
    }

    pub fn was_reset(&self) -> bool {
        self.view.reset
    }

    /// Every callback the host made on this stream, in order.
    pub fn callbacks(&self) -> &[String] {
        &self.view.callbacks
    }

    /// Starts the upstream's answer.
    pub fn respond(&mut self, status: u16) -> ResponseBuilder<'_> {
        ResponseBuilder {
            exchange: self,
            headers: vec![(":status".into(), status.to_string())],
            chunks: Vec::new(),
            upstream_address: None,
        }
    }

    /// The stream is reset before any response: no response callbacks; log, done and delete run.
    pub fn reset(&mut self) {
        self.try_reset().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn try_reset(&mut self) -> HostResult<()> {
        {
            let mut inner = self.envoy.inner.borrow_mut();
            inner.reset(self.vm, self.id)?;
            inner.settle()?;
        }
        self.refresh();
        Ok(())
    }
}

/// The upstream's answer to an exchange.
pub struct ResponseBuilder<'a> {
    exchange: &'a mut Exchange,
    headers: Headers,
    chunks: Vec<Vec<u8>>,
    upstream_address: Option<String>,
}

impl ResponseBuilder<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.chunks = vec![body.into()];
        self
    }

    pub fn body_chunks<I: IntoIterator<Item = B>, B: Into<Vec<u8>>>(mut self, chunks: I) -> Self {
        self.chunks = chunks.into_iter().map(Into::into).collect();
        self
    }

    /// The `upstream.address` property: the host that answered. Default: the first address of
    /// the Envoy's override-host header ([`crate::EnvoyBuilder::override_host_header`]), else none.
    pub fn from_upstream(mut self, address: &str) -> Self {
        self.upstream_address = Some(address.to_string());
        self
    }

    /// Runs the response through the filter and ends the stream. Returns what the client got.
    pub fn finish(self) -> ClientResponse {
        self.try_finish().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_finish(self) -> HostResult<ClientResponse> {
        let exchange = self.exchange;
        {
            let mut inner = exchange.envoy.inner.borrow_mut();
            inner.respond(exchange.vm, exchange.id, self.upstream_address, self.headers, self.chunks)?;
            inner.settle()?;
        }
        exchange.refresh();
        Ok(exchange.view.client.clone().unwrap_or_default())
    }
}
