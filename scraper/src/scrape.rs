//! One scrape of one endpoint: `GET http://ip:port/metrics` with a deadline and a size cap,
//! parsed with the pool's vocabulary.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::expo;
use crate::vocab::{ExtractError, Reading, Vocabulary};

/// How scrapes are made.
#[derive(Debug, Clone)]
pub struct ScrapeSettings {
    pub path: String,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

/// Why a scrape failed; `reason()` is the label on the scraper's own failure counter.
#[derive(Debug, Clone, PartialEq)]
pub enum ScrapeError {
    Timeout(Duration),
    Connect(String),
    Status(u16),
    NotText(String),
    TooLarge { limit: usize },
    Body(String),
    NoSamples { malformed: usize, first: Option<String> },
    Extract(ExtractError),
}

impl ScrapeError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Connect(_) => "connect",
            Self::Status(_) => "http_status",
            Self::NotText(_) => "not_text",
            Self::TooLarge { .. } => "too_large",
            Self::Body(_) => "body",
            Self::NoSamples { .. } => "parse",
            Self::Extract(ExtractError::Missing { .. }) => "missing_metric",
            Self::Extract(ExtractError::BadValue { .. }) => "bad_value",
        }
    }

    /// All reasons, so the failure counter exports every series from the start.
    pub const REASONS: [&'static str; 9] =
        ["timeout", "connect", "http_status", "not_text", "too_large", "body", "parse", "missing_metric", "bad_value"];
}

impl fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(d) => write!(f, "no complete answer within {} ms", d.as_millis()),
            Self::Connect(e) => write!(f, "request failed: {e}"),
            Self::Status(s) => write!(f, "answered HTTP {s}, expected 200"),
            Self::NotText(ct) => write!(f, "answered content-type {ct:?}, expected Prometheus text (text/plain)"),
            Self::TooLarge { limit } => write!(f, "response is larger than the {limit}-byte limit"),
            Self::Body(e) => write!(f, "reading the response failed: {e}"),
            Self::NoSamples { malformed, first } => write!(
                f,
                "no readable sample of the vocabulary ({malformed} malformed lines{})",
                first.as_deref().map(|l| format!(", first: {l:?}")).unwrap_or_default()
            ),
            Self::Extract(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ScrapeError {}

/// Connecting to a pod on the pod network takes well under this; a longer wait means it is gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// hyper's per-connection read buffer may grow to ~400 KB by default; with one idle connection
/// per endpoint that would dominate the scraper's memory. Bodies stream through in pieces anyway.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// First allocation for a body without Content-Length (a vLLM exposition is ~50-200 KB).
const INITIAL_BODY_BYTES: usize = 64 * 1024;

/// One kept-alive HTTP/1 connection to one endpoint, owned by that endpoint's scrape task: at
/// 20 scrapes a second per pod, reconnecting (or a shared pool's bookkeeping) would cost more
/// than the scrape. Any error drops the connection; the next scrape reconnects.
pub struct Connection {
    addr: SocketAddr,
    host: String,
    uri: hyper::Uri,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Connection {
    pub fn new(addr: SocketAddr, settings: &ScrapeSettings) -> Result<Self, ScrapeError> {
        let uri = format!("http://{addr}{}", settings.path)
            .parse()
            .map_err(|e| ScrapeError::Connect(format!("bad scrape URL for {addr}: {e}")))?;
        Ok(Self { addr, host: addr.to_string(), uri, sender: None })
    }

    /// Fetches `/metrics` (bounded by the timeout and the size cap).
    /// The body is not kept between scrapes: idle buffers for 1,000 endpoints would be most of
    /// the scraper's memory, and one allocation per scrape costs nothing measurable.
    pub async fn fetch(&mut self, settings: &ScrapeSettings) -> Result<Vec<u8>, ScrapeError> {
        let result = match tokio::time::timeout(settings.timeout, self.fetch_inner(settings)).await {
            Ok(result) => result,
            Err(_) => Err(ScrapeError::Timeout(settings.timeout)),
        };
        match result {
            Ok(body) => Ok(body),
            Err(e) => {
                // A half-read answer leaves the connection unusable; start clean next time.
                self.sender = None;
                Err(e)
            }
        }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Empty<Bytes>>, ScrapeError> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(self.addr))
                .await
                .map_err(|_| {
                    ScrapeError::Connect(format!("connect timed out after {} ms", CONNECT_TIMEOUT.as_millis()))
                })?
                .map_err(|e| ScrapeError::Connect(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::Builder::new()
                .max_buf_size(READ_BUFFER_BYTES)
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ScrapeError::Connect(error_chain(&e)))?;
            // Drives the connection; ends when the sender is dropped or the peer closes.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().ok_or_else(|| ScrapeError::Connect("no connection".into()))?;
        sender.ready().await.map_err(|e| ScrapeError::Connect(error_chain(&e)))?;
        Ok(sender)
    }

    async fn fetch_inner(&mut self, settings: &ScrapeSettings) -> Result<Vec<u8>, ScrapeError> {
        let request = hyper::Request::get(self.uri.clone())
            .header(HOST, self.host.as_str())
            // The classic text format: prometheus_client answers OpenMetrics to an OpenMetrics Accept.
            .header(ACCEPT, "text/plain;version=0.0.4;q=1,*/*;q=0.1")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ScrapeError::Connect(e.to_string()))?;
        let response =
            self.sender().await?.send_request(request).await.map_err(|e| ScrapeError::Connect(error_chain(&e)))?;
        let status = response.status();
        if status != hyper::StatusCode::OK {
            return Err(ScrapeError::Status(status.as_u16()));
        }
        if let Some(ct) = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            let lower = ct.to_ascii_lowercase();
            if lower.contains("html") || lower.contains("json") {
                return Err(ScrapeError::NotText(ct.to_string()));
            }
        }
        let declared = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > settings.max_response_bytes) {
            return Err(ScrapeError::TooLarge { limit: settings.max_response_bytes });
        }
        let mut buf = Vec::with_capacity(declared.unwrap_or(INITIAL_BODY_BYTES).min(settings.max_response_bytes));
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ScrapeError::Body(error_chain(&e)))?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > settings.max_response_bytes {
                    return Err(ScrapeError::TooLarge { limit: settings.max_response_bytes });
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(buf)
    }
}

/// Reads a fetched body as the vocabulary.
pub fn read_bytes(body: &[u8], vocab: &Vocabulary) -> Result<Reading, ScrapeError> {
    let text = std::str::from_utf8(body).map_err(|e| ScrapeError::Body(format!("not UTF-8 text: {e}")))?;
    read(text, vocab)
}

/// Reads a fetched exposition as the vocabulary.
pub fn read(text: &str, vocab: &Vocabulary) -> Result<Reading, ScrapeError> {
    if text.trim_start().starts_with('<') {
        return Err(ScrapeError::NotText("an HTML/XML document".into()));
    }
    let expo = expo::parse(text, |name| vocab.wants(name));
    if expo.samples.is_empty() && expo.malformed_lines > 0 {
        return Err(ScrapeError::NoSamples { malformed: expo.malformed_lines, first: expo.first_malformed });
    }
    vocab.extract(&expo).map_err(ScrapeError::Extract)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
