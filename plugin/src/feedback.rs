//! What a model server tells us back on the response, read without buffering the response.
//!
//! - `usage.prompt_tokens_details.cached_tokens`: how many prompt tokens the pod served from its
//!   prefix cache. vLLM sends it only when started with `--enable-prompt-tokens-details`, in the
//!   JSON body of a non-streaming response or in the last SSE chunk before `data: [DONE]` when the
//!   request asked for `stream_options.include_usage`. Both sit at the very end of the body, so the
//!   filter keeps only a bounded tail of the response ([`ResponseTail`]) and scans it at the end.
//! - ORCA `endpoint-load-metrics` response header (the format Envoy and GAIE's model-server
//!   protocol use): `TEXT cpu_utilization=0.3, named_metrics.kv_cache_usage_perc=0.4, ...` or the
//!   JSON form `JSON {"named_metrics": {...}}`. It is fresher than any scrape.

/// Bytes of the response body kept for the usage scan. The usage object is a few hundred bytes and
/// `data: [DONE]` follows it, so 8 KiB leaves ample margin without holding the response.
pub const RESPONSE_TAIL_BYTES: usize = 8 * 1024;

/// The last [`RESPONSE_TAIL_BYTES`] of a response body, fed chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct ResponseTail {
    bytes: Vec<u8>,
}

impl ResponseTail {
    pub fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= RESPONSE_TAIL_BYTES {
            self.bytes.clear();
            self.bytes.extend_from_slice(&chunk[chunk.len() - RESPONSE_TAIL_BYTES..]);
            return;
        }
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(RESPONSE_TAIL_BYTES);
        if overflow > 0 {
            self.bytes.drain(..overflow);
        }
        self.bytes.extend_from_slice(chunk);
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Token usage as reported in the response's last `usage` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedUsage {
    pub prompt_tokens: Option<u32>,
    /// `None` when the server did not report `prompt_tokens_details` (vLLM's default).
    pub cached_tokens: Option<u32>,
}

/// Finds the last `usage` object's prompt and cached token counts in a body tail. A targeted scan
/// rather than a JSON parse: the tail starts mid-document and may hold several SSE events.
pub fn scan_usage(tail: &[u8]) -> Option<ReportedUsage> {
    let usage_at = rfind(tail, b"\"usage\"")?;
    let usage = &tail[usage_at..];
    let prompt_tokens = number_after(usage, b"\"prompt_tokens\"");
    let cached_tokens = number_after(usage, b"\"cached_tokens\"");
    if prompt_tokens.is_none() && cached_tokens.is_none() {
        return None;
    }
    Some(ReportedUsage { prompt_tokens, cached_tokens })
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    (0..=haystack.len() - needle.len()).rev().find(|&i| &haystack[i..i + needle.len()] == needle)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    (0..=haystack.len() - needle.len()).find(|&i| &haystack[i..i + needle.len()] == needle)
}

/// The unsigned integer after `"key"` and a colon, e.g. `"cached_tokens": 128` → 128.
fn number_after(haystack: &[u8], key: &[u8]) -> Option<u32> {
    let at = find(haystack, key)? + key.len();
    let rest = &haystack[at..];
    let colon = rest.iter().position(|&b| !b.is_ascii_whitespace())?;
    if rest[colon] != b':' {
        return None;
    }
    let digits: Vec<u8> = rest[colon + 1..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Load a pod reported about itself in an ORCA `endpoint-load-metrics` header.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OrcaLoad {
    pub kv_cache_usage: Option<f64>,
    pub waiting_requests: Option<u32>,
    pub running_requests: Option<u32>,
}

impl OrcaLoad {
    pub fn is_empty(&self) -> bool {
        self.kv_cache_usage.is_none() && self.waiting_requests.is_none() && self.running_requests.is_none()
    }
}

/// Parses the TEXT and JSON forms of `endpoint-load-metrics`. Recognised keys (with or without the
/// `named_metrics.` prefix): `kv_cache_usage_perc` / `kv_cache_utilization`, `num_requests_waiting`,
/// `num_requests_running`. Unknown keys are ignored; malformed values are skipped.
pub fn parse_orca(header: &str) -> OrcaLoad {
    let header = header.trim();
    let mut load = OrcaLoad::default();
    let mut assign = |key: &str, value: f64| {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        match key.trim().trim_start_matches("named_metrics.") {
            "kv_cache_usage_perc" | "kv_cache_utilization" => load.kv_cache_usage = Some(value.min(1.0)),
            "num_requests_waiting" => load.waiting_requests = Some(value.min(f64::from(u32::MAX)) as u32),
            "num_requests_running" => load.running_requests = Some(value.min(f64::from(u32::MAX)) as u32),
            _ => {}
        }
    };
    if let Some(text) = header.strip_prefix("TEXT") {
        for pair in text.split(',') {
            if let Some((k, v)) = pair.split_once('=')
                && let Ok(v) = v.trim().parse::<f64>()
            {
                assign(k, v);
            }
        }
    } else if let Some(json) = header.strip_prefix("JSON")
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(json.trim())
    {
        for (k, v) in &map {
            match v {
                serde_json::Value::Number(n) => assign(k, n.as_f64().unwrap_or(f64::NAN)),
                serde_json::Value::Object(named) if k == "named_metrics" => {
                    for (k, v) in named {
                        assign(k, v.as_f64().unwrap_or(f64::NAN));
                    }
                }
                _ => {}
            }
        }
    }
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cached_tokens_from_a_non_streaming_body() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":512,"completion_tokens":8,"total_tokens":520,"prompt_tokens_details":{"cached_tokens":496}}}"#;
        assert_eq!(scan_usage(body), Some(ReportedUsage { prompt_tokens: Some(512), cached_tokens: Some(496) }));
    }

    #[test]
    fn reads_the_final_usage_chunk_of_a_stream_split_across_chunks() {
        let mut tail = ResponseTail::default();
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\": 64, \"prompt_tokens_details\": {\"cached_tokens\": 48}}}\n\n\
                      data: [DONE]\n\n";
        for chunk in stream.as_bytes().chunks(7) {
            tail.push(chunk);
        }
        assert_eq!(
            scan_usage(tail.as_bytes()),
            Some(ReportedUsage { prompt_tokens: Some(64), cached_tokens: Some(48) })
        );
    }

    #[test]
    fn without_prompt_tokens_details_cached_tokens_is_unknown() {
        let body = br#"{"usage":{"prompt_tokens":10,"completion_tokens":2}}"#;
        assert_eq!(scan_usage(body), Some(ReportedUsage { prompt_tokens: Some(10), cached_tokens: None }));
        assert_eq!(scan_usage(b"data: [DONE]"), None);
    }

    #[test]
    fn tail_keeps_only_the_last_bytes() {
        let mut tail = ResponseTail::default();
        tail.push(&vec![b'a'; RESPONSE_TAIL_BYTES * 3]);
        tail.push(b"end");
        assert_eq!(tail.as_bytes().len(), RESPONSE_TAIL_BYTES);
        assert!(tail.as_bytes().ends_with(b"aend"));
    }

    #[test]
    fn parses_orca_text_and_json() {
        let text = parse_orca(
            "TEXT cpu_utilization=0.5, named_metrics.kv_cache_usage_perc=0.25, named_metrics.num_requests_waiting=3",
        );
        assert_eq!(text, OrcaLoad { kv_cache_usage: Some(0.25), waiting_requests: Some(3), running_requests: None });
        let json = parse_orca(
            r#"JSON {"cpu_utilization":0.1,"named_metrics":{"num_requests_running":7,"kv_cache_usage_perc":2.0}}"#,
        );
        assert_eq!(json, OrcaLoad { kv_cache_usage: Some(1.0), waiting_requests: None, running_requests: Some(7) });
        assert!(parse_orca("BIN garbage").is_empty());
        assert!(parse_orca("TEXT named_metrics.num_requests_waiting=-1, x").is_empty());
    }
}
