//! Proxy-wasm ABI 0.2.1 numbers and the map encoding, as the spec defines them.

/// `proxy_status_t`.
pub mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const INVALID_MEMORY_ACCESS: i32 = 6;
    pub const EMPTY: i32 = 7;
    pub const CAS_MISMATCH: i32 = 8;
    pub const INTERNAL_FAILURE: i32 = 10;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// `wasi_errno_t` values the preview1 functions return.
pub mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const NOTSUP: i32 = 58;
}

/// `proxy_action_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

impl Action {
    /// Envoy treats anything but 0 as a stop (Pause maps to StopIteration / StopIterationAndBuffer).
    pub fn from_word(word: i32) -> Self {
        if word == 0 { Action::Continue } else { Action::Pause }
    }
}

/// `proxy_buffer_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcCallMessage,
    VmConfiguration,
    PluginConfiguration,
    ForeignFunctionArguments,
}

impl BufferType {
    pub fn from_word(word: i32) -> Option<Self> {
        use BufferType::*;
        Some(match word {
            0 => HttpRequestBody,
            1 => HttpResponseBody,
            2 => DownstreamData,
            3 => UpstreamData,
            4 => HttpCallResponseBody,
            5 => GrpcCallMessage,
            6 => VmConfiguration,
            7 => PluginConfiguration,
            8 => ForeignFunctionArguments,
            _ => return None,
        })
    }
}

/// `proxy_map_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    HttpRequestHeaders,
    HttpRequestTrailers,
    HttpResponseHeaders,
    HttpResponseTrailers,
    GrpcInitialMetadata,
    GrpcTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    pub fn from_word(word: i32) -> Option<Self> {
        use MapType::*;
        Some(match word {
            0 => HttpRequestHeaders,
            1 => HttpRequestTrailers,
            2 => HttpResponseHeaders,
            3 => HttpResponseTrailers,
            4 => GrpcInitialMetadata,
            5 => GrpcTrailingMetadata,
            6 => HttpCallResponseHeaders,
            7 => HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// `proxy_metric_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn from_word(word: i32) -> Option<Self> {
        match word {
            0 => Some(MetricKind::Counter),
            1 => Some(MetricKind::Gauge),
            2 => Some(MetricKind::Histogram),
            _ => None,
        }
    }
}

/// `proxy_log_level_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    pub fn from_word(word: i32) -> Option<Self> {
        use LogLevel::*;
        Some(match word {
            0 => Trace,
            1 => Debug,
            2 => Info,
            3 => Warn,
            4 => Error,
            5 => Critical,
            _ => return None,
        })
    }
}

/// A header map: ordered, keys may repeat (Envoy's `HeaderMap`).
pub type Headers = Vec<(String, String)>;

/// Serializes a map: pair count, each key and value length (u32 LE), then each key and value
/// followed by a NUL byte.
pub fn serialize_map(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Parses a serialized map. An empty input (or a single 0 byte) is the empty map, as the spec
/// allows; anything malformed is an error naming what was wrong.
pub fn deserialize_map(bytes: &[u8]) -> Result<Headers, String> {
    if bytes.is_empty() || bytes == [0] {
        return Ok(Vec::new());
    }
    let word = |at: usize| -> Result<usize, String> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("map truncated at byte {at} of {}", bytes.len()))
    };
    let count = word(0)?;
    let mut at = 4usize.checked_add(count.checked_mul(8).ok_or("map count overflows")?).ok_or("map count overflows")?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let (klen, vlen) = (word(4 + i * 8)?, word(8 + i * 8)?);
        let key = bytes.get(at..at + klen).ok_or("map key runs past the end")?;
        if bytes.get(at + klen) != Some(&0) {
            return Err(format!("map key {i} is not NUL-terminated"));
        }
        at += klen + 1;
        let value = bytes.get(at..at + vlen).ok_or("map value runs past the end")?;
        if bytes.get(at + vlen) != Some(&0) {
            return Err(format!("map value {i} is not NUL-terminated"));
        }
        at += vlen + 1;
        pairs.push((String::from_utf8_lossy(key).into_owned(), String::from_utf8_lossy(value).into_owned()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_encoding_matches_the_spec_example() {
        let map = vec![("a".to_string(), "1".to_string()), ("b".to_string(), "22".to_string())];
        let bytes = serialize_map(&map);
        let mut expected = Vec::new();
        for w in [2u32, 1, 1, 1, 2] {
            expected.extend_from_slice(&w.to_le_bytes());
        }
        expected.extend_from_slice(b"a\x001\x00b\x0022\x00");
        assert_eq!(bytes, expected);
        assert_eq!(deserialize_map(&bytes), Ok(map));
        assert_eq!(deserialize_map(&[]), Ok(vec![]));
        assert!(deserialize_map(&bytes[..bytes.len() - 1]).is_err());
    }
}
