//! One scrape of one endpoint: `GET /metrics` over a kept-alive HTTP/1.1 connection, with a
//! deadline and a size cap, parsed with the pool's vocabulary.
//!
//! **Origin form.** The request target is the path alone, with the pod named in `Host`
//! (`GET /metrics HTTP/1.1`, `Host: 10.0.0.7:8000`): RFC 9112 §3.2.1 says a client sends the
//! origin form to an origin server; the absolute form (`GET http://10.0.0.7:8000/metrics`) is for
//! proxies. hyper's connection-level client writes whatever URI it is given, and servers that
//! route on the raw target answer the absolute form with 404 (uvicorn with its `h11` parser,
//! Python's `http.server`, many small exporters).
//!
//! **Failures are values** ([`ScrapeError`]), each with the reason label of the scraper's failure
//! counter. An answer other than 200 carries its status and a short excerpt of its body, so the
//! log and the snapshot say what the server said.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

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
    /// An answer other than 200, with the start of its body.
    Status {
        status: u16,
        excerpt: String,
    },
    /// An answer that is not Prometheus text (an HTML error page, JSON), with the start of its body.
    NotText {
        what: String,
        excerpt: String,
    },
    TooLarge {
        limit: usize,
    },
    Body(String),
    NoSamples {
        malformed: usize,
        first: Option<String>,
    },
    Extract(ExtractError),
}

impl ScrapeError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Connect(_) => "connect",
            Self::Status { .. } => "http_status",
            Self::NotText { .. } => "not_text",
            Self::TooLarge { .. } => "too_large",
            Self::Body(_) => "body",
            Self::NoSamples { .. } => "parse",
            Self::Extract(ExtractError::Missing { .. }) => "missing_metric",
            Self::Extract(ExtractError::BadValue { .. }) => "bad_value",
        }
    }

    /// The pod could not be reached (as opposed to its metrics being unreadable): only these
    /// failures, on consecutive scrapes, take an endpoint out of the pool.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Connect(_))
    }

    /// All reasons, so the failure counter exports every series from the start.
    pub const REASONS: [&'static str; 9] =
        ["timeout", "connect", "http_status", "not_text", "too_large", "body", "parse", "missing_metric", "bad_value"];
}

impl fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(d) => write!(f, "no complete answer within {} ms", d.as_millis()),
            Self::Connect(e) => write!(f, "connection failed: {e}"),
            Self::Status { status, excerpt } => {
                write!(f, "answered HTTP {status}, expected 200: ")?;
                write_excerpt(f, excerpt)
            }
            Self::NotText { what, excerpt } => {
                write!(f, "answered {what}, expected Prometheus text (text/plain): ")?;
                write_excerpt(f, excerpt)
            }
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

fn write_excerpt(f: &mut fmt::Formatter<'_>, excerpt: &str) -> fmt::Result {
    if excerpt.is_empty() { f.write_str("(empty body)") } else { write!(f, "{excerpt:?}") }
}

impl std::error::Error for ScrapeError {}

/// Connecting to a pod on the pod network takes well under this; a longer wait means it is gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// hyper's per-connection read buffer may grow to ~400 KB by default; with one idle connection
/// per endpoint that would dominate the scraper's memory. Bodies stream through in pieces anyway.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// First allocation for a body without Content-Length (a vLLM exposition is ~50-200 KB).
const INITIAL_BODY_BYTES: usize = 64 * 1024;

/// How much of an error answer's body goes into the failure message: enough for a framework's
/// `{"detail":"Not Found"}` or an error page's title, small enough for one log line.
pub const ERROR_EXCERPT_BYTES: usize = 200;

/// An error answer's body is read (and dropped) up to this size, so that a pod answering 404 at
/// every scrape keeps its connection instead of costing a reconnect 20 times a second; a longer
/// error body closes the connection.
const ERROR_DRAIN_BYTES: usize = 16 * 1024;

/// One kept-alive HTTP/1 connection to one endpoint, owned by that endpoint's scrape task: at
/// 20 scrapes a second per pod, reconnecting (or a shared pool's bookkeeping) would cost more
/// than the scrape. Any error that leaves the connection in doubt drops it; the next scrape
/// reconnects.
pub struct Connection {
    addr: SocketAddr,
    /// `ip:port` (IPv6 in brackets), the `Host` header of every request.
    host: HeaderValue,
    /// The request target in origin form: path and query, no scheme or authority.
    target: hyper::Uri,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Connection {
    pub fn new(addr: SocketAddr, settings: &ScrapeSettings) -> Result<Self, ScrapeError> {
        let bad = |why: String| ScrapeError::Connect(format!("bad scrape path {:?} for {addr}: {why}", settings.path));
        let target: hyper::Uri = settings.path.parse().map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))?;
        if target.scheme().is_some() || target.authority().is_some() || !settings.path.starts_with('/') {
            return Err(bad("expected a path such as /metrics".into()));
        }
        let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| bad(e.to_string()))?;
        Ok(Self { addr, host, target, sender: None })
    }

    /// Fetches `/metrics` (bounded by the timeout and the size cap).
    /// The body is not kept between scrapes: idle buffers for 1,000 endpoints would be most of
    /// the scraper's memory, and one allocation per scrape costs nothing measurable.
    pub async fn fetch(&mut self, settings: &ScrapeSettings) -> Result<Vec<u8>, ScrapeError> {
        let result = match tokio::time::timeout(settings.timeout, self.fetch_inner(settings)).await {
            Ok(result) => result,
            Err(_) => Err(ScrapeError::Timeout(settings.timeout)),
        };
        // A half-read answer leaves the connection unusable; start clean next time. An error
        // status whose body was read to its end keeps it (fetch_inner drops it otherwise).
        if let Err(e) = &result
            && !matches!(e, ScrapeError::Status { .. })
        {
            self.sender = None;
        }
        result
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

    /// Sends one GET and waits for the answer's head.
    async fn send(&mut self) -> Result<hyper::Response<Incoming>, ScrapeError> {
        let mut request = hyper::Request::new(Empty::<Bytes>::new());
        *request.uri_mut() = self.target.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        // The classic text format: prometheus_client answers OpenMetrics to an OpenMetrics Accept.
        headers.insert(ACCEPT, HeaderValue::from_static("text/plain;version=0.0.4;q=1,*/*;q=0.1"));
        self.sender().await?.send_request(request).await.map_err(|e| {
            if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
                // The pod answered, but not in HTTP/1 (a gRPC or TLS port): reachable, unreadable.
                ScrapeError::Body(format!("not an HTTP/1.1 answer: {}", error_chain(&e)))
            } else {
                ScrapeError::Connect(error_chain(&e))
            }
        })
    }

    async fn fetch_inner(&mut self, settings: &ScrapeSettings) -> Result<Vec<u8>, ScrapeError> {
        let reused = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        let response = match self.send().await {
            Ok(response) => response,
            // A kept-alive connection the server closed while we were not looking (servers close
            // idle ones: uvicorn after 5 s) fails before any answer: try once on a fresh one
            // before it counts as a failed scrape. GET is idempotent.
            Err(ScrapeError::Connect(_)) if reused => {
                self.sender = None;
                self.send().await?
            }
            Err(e) => return Err(e),
        };
        let status = response.status();
        if status != hyper::StatusCode::OK {
            let (excerpt, drained) = read_excerpt(response.into_body()).await;
            if !drained {
                self.sender = None;
            }
            return Err(ScrapeError::Status { status: status.as_u16(), excerpt });
        }
        if let Some(ct) = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            let lower = ct.to_ascii_lowercase();
            if lower.contains("html") || lower.contains("json") {
                let what = format!("content-type {ct:?}");
                let (excerpt, _) = read_excerpt(response.into_body()).await;
                return Err(ScrapeError::NotText { what, excerpt });
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

/// Reads an error answer's body up to [`ERROR_DRAIN_BYTES`]: returns its first
/// [`ERROR_EXCERPT_BYTES`] as one line of text, and whether the body ended (so the connection
/// can carry the next request).
async fn read_excerpt(mut body: Incoming) -> (String, bool) {
    let mut head: Vec<u8> = Vec::new();
    let mut read = 0usize;
    let drained = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = ERROR_EXCERPT_BYTES.saturating_sub(head.len());
                    head.extend_from_slice(&data[..data.len().min(room)]);
                    read += data.len();
                    if read > ERROR_DRAIN_BYTES {
                        break false;
                    }
                }
            }
        }
    };
    (one_line(&head), drained)
}

/// Bytes as one line of text for a log message: invalid UTF-8 replaced (a cut at the end
/// dropped), control characters and runs of whitespace turned into one space.
pub fn one_line(bytes: &[u8]) -> String {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        // The excerpt may end in the middle of a character: drop that tail, keep the rest.
        Err(e) if e.error_len().is_none() => {
            std::borrow::Cow::Borrowed(std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default())
        }
        Err(_) => String::from_utf8_lossy(bytes),
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out.trim().to_string()
}

/// Reads a fetched body as the vocabulary.
pub fn read_bytes(body: &[u8], vocab: &Vocabulary) -> Result<Reading, ScrapeError> {
    let text = std::str::from_utf8(body).map_err(|e| ScrapeError::Body(format!("not UTF-8 text: {e}")))?;
    read(text, vocab)
}

/// Reads a fetched exposition as the vocabulary.
pub fn read(text: &str, vocab: &Vocabulary) -> Result<Reading, ScrapeError> {
    if text.trim_start().starts_with('<') {
        return Err(ScrapeError::NotText {
            what: "an HTML/XML document".into(),
            excerpt: one_line(&text.as_bytes()[..text.len().min(ERROR_EXCERPT_BYTES)]),
        });
    }
    let expo = vocab.parse(text);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn settings(path: &str) -> ScrapeSettings {
        ScrapeSettings { path: path.into(), timeout: Duration::from_secs(5), max_response_bytes: 1 << 20 }
    }

    /// Reads one request head (up to the blank line) as text; None when the peer closed first.
    async fn read_head(s: &mut TcpStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        Some(String::from_utf8(head).expect("an ASCII request head"))
    }

    async fn answer(s: &mut TcpStream, status: &str, content_type: &str, body: &str) {
        let head =
            format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n", body.len());
        s.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
    }

    const EXPOSITION: &str = "vllm:num_requests_waiting 1\n";

    #[tokio::test]
    async fn the_request_line_is_origin_form_and_host_names_the_pod() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut heads = Vec::new();
            for _ in 0..2 {
                heads.push(read_head(&mut s).await.expect("a request"));
                answer(&mut s, "200 OK", "text/plain; version=0.0.4", EXPOSITION).await;
            }
            heads
        });
        let settings = settings("/metrics?format=text");
        let mut c = Connection::new(addr, &settings).unwrap();
        for _ in 0..2 {
            assert_eq!(c.fetch(&settings).await.unwrap(), EXPOSITION.as_bytes());
        }
        for head in server.await.unwrap() {
            let mut lines = head.split("\r\n");
            assert_eq!(lines.next(), Some("GET /metrics?format=text HTTP/1.1"), "{head}");
            let host: Vec<&str> = lines.filter(|l| l.to_ascii_lowercase().starts_with("host:")).collect();
            assert_eq!(host, vec![format!("host: {addr}").as_str()], "exactly one Host header: {head}");
        }
    }

    #[test]
    fn only_a_path_is_accepted_as_the_target() {
        let addr: SocketAddr = "[::1]:9000".parse().unwrap();
        assert!(Connection::new(addr, &settings("http://10.0.0.1:8000/metrics")).is_err());
        assert!(Connection::new(addr, &settings("metrics")).is_err());
        let c = Connection::new(addr, &settings("/metrics")).unwrap();
        assert_eq!((c.target.to_string().as_str(), c.host.to_str().unwrap()), ("/metrics", "[::1]:9000"));
    }

    #[tokio::test]
    async fn an_error_status_carries_a_bounded_excerpt_and_keeps_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let long_page =
            format!("<html><head><title>404 Not Found</title></head>\n<body>{}</body></html>", "x".repeat(500));
        let page = long_page.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_head(&mut s).await.unwrap();
            answer(&mut s, "404 Not Found", "application/json", r#"{"detail":"Not Found"}"#).await;
            read_head(&mut s).await.unwrap();
            answer(&mut s, "503 Service Unavailable", "text/html", &page).await;
            read_head(&mut s).await.unwrap();
            answer(&mut s, "200 OK", "text/plain", EXPOSITION).await;
        });
        let settings = settings("/metrics");
        let mut c = Connection::new(addr, &settings).unwrap();
        let e = c.fetch(&settings).await.unwrap_err();
        assert_eq!(e, ScrapeError::Status { status: 404, excerpt: r#"{"detail":"Not Found"}"#.into() });
        assert_eq!(e.to_string(), r#"answered HTTP 404, expected 200: "{\"detail\":\"Not Found\"}""#);
        assert!(!e.is_unreachable(), "an answer says the pod is reachable");
        let ScrapeError::Status { status: 503, excerpt } = c.fetch(&settings).await.unwrap_err() else {
            panic!("expected a 503")
        };
        assert_eq!(excerpt.len(), ERROR_EXCERPT_BYTES);
        assert!(excerpt.starts_with("<html><head><title>404 Not Found</title></head> <body>xxx"), "{excerpt}");
        assert_eq!(c.fetch(&settings).await.unwrap(), EXPOSITION.as_bytes());
        // The server read all three requests from its one accepted connection.
        server.await.expect("one connection carried every request");
    }

    #[tokio::test]
    async fn a_kept_alive_connection_the_server_closed_is_replaced_without_a_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_head(&mut s).await.unwrap();
            answer(&mut s, "200 OK", "text/plain", EXPOSITION).await;
            // The next request on this connection is read and the connection closed unanswered,
            // as a server does that times out a kept-alive connection just as the request comes.
            read_head(&mut s).await.unwrap();
            drop(s);
            let (mut s, _) = listener.accept().await.unwrap();
            read_head(&mut s).await.unwrap();
            answer(&mut s, "200 OK", "text/plain", EXPOSITION).await;
        });
        let settings = settings("/metrics");
        let mut c = Connection::new(addr, &settings).unwrap();
        assert!(c.fetch(&settings).await.is_ok());
        assert_eq!(c.fetch(&settings).await, Ok(EXPOSITION.as_bytes().to_vec()), "retried on a fresh connection");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable_and_json_is_not_text() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let settings = settings("/metrics");
        let e = Connection::new(dead, &settings).unwrap().fetch(&settings).await.unwrap_err();
        assert!(e.is_unreachable() && e.reason() == "connect", "{e}");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_head(&mut s).await.unwrap();
            answer(&mut s, "200 OK", "application/json", r#"[{"gpuMemUsage":56401920000,"iter":1}]"#).await;
        });
        let e = Connection::new(addr, &settings).unwrap().fetch(&settings).await.unwrap_err();
        assert_eq!(e.reason(), "not_text");
        assert!(e.to_string().contains(r#"\"gpuMemUsage\""#), "{e}");
    }

    #[test]
    fn excerpts_are_one_line_and_cut_on_a_character_boundary() {
        assert_eq!(one_line(b"  Not\r\n\tFound \x07 "), "Not Found");
        let cut = "ab\u{e9}".as_bytes();
        assert_eq!(one_line(&cut[..3]), "ab", "a half character at the end is dropped");
        assert_eq!(one_line(b"a\xffb"), "a\u{fffd}b");
    }
}
