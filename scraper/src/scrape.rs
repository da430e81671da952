//! One scrape of one endpoint: `GET http://ip:port/metrics` with a deadline and a size cap,
//! parsed with the pool's vocabulary.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
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

/// An HTTP/1 client with keep-alive: at 20 scrapes a second per pod, reconnecting would cost
/// more than the scrape.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(2)
        .build(connector)
}

/// Fetches `/metrics` of `addr` (bounded by the timeout and the size cap).
pub async fn fetch(client: &HttpClient, addr: SocketAddr, settings: &ScrapeSettings) -> Result<String, ScrapeError> {
    match tokio::time::timeout(settings.timeout, fetch_inner(client, addr, settings)).await {
        Ok(result) => result,
        Err(_) => Err(ScrapeError::Timeout(settings.timeout)),
    }
}

async fn fetch_inner(client: &HttpClient, addr: SocketAddr, settings: &ScrapeSettings) -> Result<String, ScrapeError> {
    let uri = format!("http://{addr}{}", settings.path);
    let request = hyper::Request::get(uri)
        .header(HOST, addr.to_string())
        // The classic text format: prometheus_client would answer OpenMetrics to an OpenMetrics Accept.
        .header(ACCEPT, "text/plain;version=0.0.4;q=1,*/*;q=0.1")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ScrapeError::Connect(e.to_string()))?;
    let response = client.request(request).await.map_err(|e| ScrapeError::Connect(error_chain(&e)))?;
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
    let body = Limited::new(response.into_body(), settings.max_response_bytes);
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ScrapeError::TooLarge { limit: settings.max_response_bytes });
        }
        Err(e) => return Err(ScrapeError::Body(e.to_string())),
    };
    String::from_utf8(bytes.to_vec()).map_err(|e| ScrapeError::Body(format!("not UTF-8 text: {e}")))
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
