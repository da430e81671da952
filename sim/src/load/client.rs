//! The HTTP client side: origin-form HTTP/1.1 requests, SSE reading, Prometheus sums.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::args::LoadArgs;
use super::report::RequestRecord;
use super::workload::Conversation;

/// A parsed `http://host:port/path` base URL.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// `host:port`, sent as the `Host` header.
    pub authority: String,
    /// The URL's path without a trailing slash (`""` for the root).
    pub base_path: String,
    /// The URL as given.
    pub label: String,
}

impl Target {
    /// The absolute URL of `path` under this target (for messages and other `http_get_text` calls).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority, self.base_path)
    }
}

pub(super) fn parse_target(url: &str) -> Result<Target, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("bad URL {url:?}: only http:// is supported"));
    }
    let authority = uri.authority().ok_or_else(|| format!("bad URL {url:?}: no host:port"))?.to_string();
    let authority = if authority.contains(':') { authority } else { format!("{authority}:80") };
    Ok(Target { authority, base_path: uri.path().trim_end_matches('/').to_string(), label: url.to_string() })
}

/// A plain HTTP/1.1 exchange on a fresh connection. Returns the status, headers and body stream.
async fn http_request(
    authority: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let stream = TcpStream::connect(authority).await.map_err(|e| format!("connect {authority}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut b = Request::builder().method(method).uri(path).header("host", authority);
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let req = b.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| format!("request: {e}"))?;
    sender.send_request(req).await.map_err(|e| format!("send: {e}"))
}

/// GET a URL's body as text (for /metrics and /v1/models).
pub async fn http_get_text(url: &str, timeout: Duration) -> Result<String, String> {
    let t = parse_target(url)?;
    let path = if t.base_path.is_empty() { "/".to_string() } else { t.base_path.clone() };
    let fut = async {
        let resp = http_request(&t.authority, "GET", &path, None).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| format!("GET {url}: timed out"))?
}

/// Sum of every sample of `name` in an exposition.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(name)
            && (rest.starts_with('{') || rest.starts_with(' '))
            && let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// Fleet-wide (hits, queries) of the prefix cache, or None when a pod did not answer.
pub(super) async fn prefix_counters(urls: &[String]) -> Option<(f64, f64)> {
    if urls.is_empty() {
        return None;
    }
    let (mut hits, mut queries) = (0.0, 0.0);
    for u in urls {
        let text = http_get_text(u, Duration::from_secs(5)).await.ok()?;
        hits += metric_sum(&text, "vllm:prefix_cache_hits_total")?;
        queries += metric_sum(&text, "vllm:prefix_cache_queries_total")?;
    }
    Some((hits, queries))
}

pub(super) fn body_for(api: &str, conv: &Conversation, model: &str, max_tokens: u32, stream: bool) -> String {
    let mut b = if api == "chat" {
        let messages: Vec<Value> = conv.messages.iter().map(|(r, c)| json!({"role": r, "content": c})).collect();
        json!({"model": model, "messages": messages, "max_tokens": max_tokens})
    } else {
        let prompt: String = conv.messages.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>().join("\n");
        json!({"model": model, "prompt": prompt, "max_tokens": max_tokens})
    };
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b.to_string()
}

pub(super) async fn exchange(
    authority: &str,
    path: &str,
    body: String,
    stream: bool,
    args: &LoadArgs,
    start: Instant,
    rec: &mut RequestRecord,
) -> Result<(), String> {
    let resp = http_request(authority, "POST", path, Some(body)).await?;
    rec.status = resp.status().as_u16();
    rec.served_by =
        resp.headers().get(args.served_by_header.as_str()).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = resp.into_body();
    if rec.status != 200 {
        let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.chars().take(200).collect());
        return Err(format!("HTTP {}: {msg}", rec.status));
    }
    if stream { read_stream(body, start, rec).await } else { read_full(body, start, rec).await }
}

/// A non-streaming answer: one JSON body.
async fn read_full(body: hyper::body::Incoming, start: Instant, rec: &mut RequestRecord) -> Result<(), String> {
    let bytes = body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("response is not JSON: {e}"))?;
    rec.ttft_s = Some(start.elapsed().as_secs_f64());
    read_usage(&v["usage"], rec);
    let choice = &v["choices"][0];
    rec.reply = choice["message"]["content"].as_str().or(choice["text"].as_str()).unwrap_or_default().to_string();
    Ok(())
}

/// A streamed answer: SSE events until `[DONE]`; each non-empty content chunk is one token's arrival.
async fn read_stream(mut body: hyper::body::Incoming, start: Instant, rec: &mut RequestRecord) -> Result<(), String> {
    // Bytes, not text: a frame may end inside a multi-byte character (Chinese replies).
    let mut buf: Vec<u8> = Vec::new();
    let mut last_token: Option<Instant> = None;
    let mut done = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("stream broke after {} tokens: {e}", rec.output_tokens))?;
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        let now = Instant::now();
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let raw: Vec<u8> = buf.drain(..end + 2).collect();
            let event = String::from_utf8_lossy(&raw);
            for line in event.lines() {
                let Some(payload) = line.strip_prefix("data: ") else { continue };
                if payload.trim() == "[DONE]" {
                    done = true;
                    continue;
                }
                let v: Value = serde_json::from_str(payload).map_err(|e| format!("bad SSE event {payload:?}: {e}"))?;
                if !v["usage"].is_null() {
                    read_usage(&v["usage"], rec);
                }
                let Some(choice) = v["choices"].get(0) else { continue };
                let text = choice["delta"]["content"].as_str().or(choice["text"].as_str()).unwrap_or_default();
                if text.is_empty() {
                    continue;
                }
                rec.reply.push_str(text);
                rec.output_tokens += 1;
                match last_token {
                    None => rec.ttft_s = Some(now.duration_since(start).as_secs_f64()),
                    Some(prev) => rec.itl_s.push(now.duration_since(prev).as_secs_f64()),
                }
                last_token = Some(now);
            }
        }
    }
    if !done {
        return Err(format!("stream ended without [DONE] after {} tokens", rec.output_tokens));
    }
    Ok(())
}

fn read_usage(u: &Value, rec: &mut RequestRecord) {
    if let Some(p) = u["prompt_tokens"].as_u64() {
        rec.prompt_tokens = Some(p);
    }
    if let Some(c) = u["completion_tokens"].as_u64() {
        rec.output_tokens = c as usize;
    }
    if let Some(c) = u["prompt_tokens_details"]["cached_tokens"].as_u64() {
        rec.cached_tokens = Some(c);
    }
}

pub(super) async fn discover_loras(target: &Target) -> Result<Vec<String>, String> {
    let url = target.url("/v1/models");
    let text = http_get_text(&url, Duration::from_secs(5)).await?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))?;
    let names: Vec<String> = v["data"]
        .as_array()
        .map(|d| {
            d.iter().filter(|m| !m["parent"].is_null()).filter_map(|m| m["id"].as_str().map(str::to_string)).collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(format!(
            "lora-mix: {url} lists no LoRA adapters; start the fleet with --lora-modules or pass --loras"
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_cover_every_label_set() {
        let text = "# HELP a x\na_total{x=\"1\"} 2.0\na_total{x=\"2\"} 3.0\na_total_created{x=\"1\"} 1.7e+09\n";
        assert_eq!(metric_sum(text, "a_total"), Some(5.0));
        assert_eq!(metric_sum(text, "b_total"), None);
    }
}
