//! The host calls this filter makes, each returning a `Result`.
//!
//! The proxy-wasm SDK's context-trait helpers `unwrap()` the host's answer, and even its
//! `hostcalls` module `panic!`s on statuses it does not expect (for example when
//! `proxy_send_local_response` fails). A panic kills the VM for every request on that worker, so
//! the calls on our data path are declared here against the raw ABI (0.2.1) and every status is
//! mapped to a value. The SDK still provides the dispatcher (context creation, callbacks) and the
//! allocator the host uses to hand us buffers (`proxy_on_memory_allocate`).

use std::fmt;
use std::ptr::{null, null_mut};

/// A non-OK status from the host, with the call that returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    pub call: &'static str,
    pub status: u32,
}

impl HostError {
    pub fn is_cas_mismatch(&self) -> bool {
        self.status == STATUS_CAS_MISMATCH
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.status {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            12 => "Unimplemented",
            _ => "Unknown",
        };
        write!(f, "{} returned {} ({})", self.call, name, self.status)
    }
}

pub type HostResult<T> = Result<T, HostError>;

const STATUS_OK: u32 = 0;
const STATUS_NOT_FOUND: u32 = 1;
const STATUS_EMPTY: u32 = 7;
const STATUS_CAS_MISMATCH: u32 = 8;

/// Header maps, as the ABI numbers them.
#[derive(Debug, Clone, Copy)]
#[allow(clippy::enum_variant_names)] // the ABI's own names
pub enum Map {
    RequestHeaders = 0,
    ResponseHeaders = 2,
    HttpCallResponseHeaders = 6,
}

/// Buffers, as the ABI numbers them.
#[derive(Debug, Clone, Copy)]
pub enum Buffer {
    RequestBody = 0,
    ResponseBody = 1,
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

#[derive(Debug, Clone, Copy)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Info = 2,
    Warn = 3,
    Error = 4,
}

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

fn check(call: &'static str, status: u32) -> HostResult<()> {
    if status == STATUS_OK { Ok(()) } else { Err(HostError { call, status }) }
}

/// Takes ownership of a buffer the host allocated in our memory through `proxy_on_memory_allocate`.
///
/// # Safety
/// `data` must be null or a pointer the host obtained from the SDK's allocator for exactly `size`
/// bytes, handed to us once.
unsafe fn take_buffer(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the SDK's allocator creates `Vec::<u8>::with_capacity(size)` and forgets it.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length of a live &str.
    // A failed log call has nowhere better to be reported; ignoring it is the only option.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// Wall-clock time in Unix milliseconds (the host's clock; frozen during a call on some hosts).
pub fn now_ms() -> HostResult<u64> {
    let mut nanos = 0u64;
    // SAFETY: valid out pointer.
    check("proxy_get_current_time_nanoseconds", unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos / 1_000_000)
}

pub fn now_nanos() -> HostResult<u64> {
    let mut nanos = 0u64;
    // SAFETY: valid out pointer.
    check("proxy_get_current_time_nanoseconds", unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos)
}

pub fn set_tick_period_ms(period: u32) -> HostResult<()> {
    // SAFETY: plain integer argument.
    check("proxy_set_tick_period_milliseconds", unsafe { proxy_set_tick_period_milliseconds(period) })
}

/// Up to `max` bytes of a buffer from `start`; `None` when the host has no such buffer.
pub fn get_buffer(buffer: Buffer, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: valid out pointers; the host fills them with an allocation from our allocator.
    let status = unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, &mut data, &mut size) };
    match status {
        STATUS_OK => Ok(unsafe { take_buffer(data, size) }),
        STATUS_NOT_FOUND | STATUS_EMPTY => Ok(None),
        status => Err(HostError { call: "proxy_get_buffer_bytes", status }),
    }
}

pub fn get_header(map: Map, name: &str) -> HostResult<Option<String>> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: pointer/length of a live &str and valid out pointers.
    let status = unsafe { proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size) };
    match status {
        STATUS_OK => Ok(unsafe { take_buffer(data, size) }.map(|v| String::from_utf8_lossy(&v).into_owned())),
        STATUS_NOT_FOUND => Ok(None),
        status => Err(HostError { call: "proxy_get_header_map_value", status }),
    }
}

pub fn set_header(map: Map, name: &str, value: &str) -> HostResult<()> {
    // SAFETY: pointers/lengths of live &strs.
    check("proxy_replace_header_map_value", unsafe {
        proxy_replace_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

pub fn remove_header(map: Map, name: &str) -> HostResult<()> {
    // SAFETY: pointer/length of a live &str.
    let status = unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) };
    if status == STATUS_NOT_FOUND { Ok(()) } else { check("proxy_remove_header_map_value", status) }
}

pub fn get_property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    let encoded = serialize_path(path);
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: pointer/length of a live Vec and valid out pointers.
    let status = unsafe { proxy_get_property(encoded.as_ptr(), encoded.len(), &mut data, &mut size) };
    match status {
        STATUS_OK => Ok(unsafe { take_buffer(data, size) }),
        STATUS_NOT_FOUND | STATUS_EMPTY => Ok(None),
        status => Err(HostError { call: "proxy_get_property", status }),
    }
}

pub fn send_local_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
    let encoded = serialize_map(headers);
    // SAFETY: pointers/lengths of live buffers; details empty; -1 = not a gRPC reply.
    check("proxy_send_local_response", unsafe {
        proxy_send_local_response(
            u32::from(status),
            null(),
            0,
            body.as_ptr(),
            body.len(),
            encoded.as_ptr(),
            encoded.len(),
            -1,
        )
    })
}

/// A shared-data value and its version, or `None` if the key was never written.
pub fn get_shared_data(key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
    let mut data = null_mut();
    let mut size = 0usize;
    let mut cas = 0u32;
    // SAFETY: pointer/length of a live &str and valid out pointers.
    let status = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        STATUS_OK => Ok(Some((unsafe { take_buffer(data, size) }.unwrap_or_default(), cas))),
        STATUS_NOT_FOUND => Ok(None),
        status => Err(HostError { call: "proxy_get_shared_data", status }),
    }
}

/// Writes a shared-data value; `cas: Some(v)` fails with CasMismatch unless the version is still `v`.
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
    // SAFETY: pointers/lengths of live buffers. cas 0 means "no check" in the ABI.
    check("proxy_set_shared_data", unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas.unwrap_or(0))
    })
}

pub fn define_metric(kind: MetricKind, name: &str) -> HostResult<u32> {
    let mut id = 0u32;
    // SAFETY: pointer/length of a live &str and a valid out pointer.
    check("proxy_define_metric", unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, by: i64) -> HostResult<()> {
    // SAFETY: plain integer arguments.
    check("proxy_increment_metric", unsafe { proxy_increment_metric(id, by) })
}

pub fn record_metric(id: u32, value: u64) -> HostResult<()> {
    // SAFETY: plain integer arguments.
    check("proxy_record_metric", unsafe { proxy_record_metric(id, value) })
}

/// The ABI's map encoding: pair count, then each key and value length (u32 LE), then each key and
/// value followed by a NUL byte.
fn serialize_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut size = 4;
    for (k, v) in pairs {
        size += 8 + k.len() + v.len() + 2;
    }
    let mut out = Vec::with_capacity(size);
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

/// Inverse of [`serialize_map`], borrowed: `[count u32][(key len u32, value len u32)...]` then each
/// key and value NUL-terminated. Malformed input yields the pairs read so far, never a panic.
fn serialized_pairs(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let read_u32 = move |at: usize| -> Option<usize> {
        bytes
            .get(at..at.checked_add(4)?)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 4]| u32::from_le_bytes(b) as usize)
    };
    let count = read_u32(0).unwrap_or(0);
    let mut data_at = count.saturating_mul(8).saturating_add(4);
    (0..count).map_while(move |i| {
        let (klen, vlen) = (read_u32(4 + i * 8)?, read_u32(8 + i * 8)?);
        let key = bytes.get(data_at..data_at.checked_add(klen)?)?;
        let value_at = data_at + klen + 1;
        let value = bytes.get(value_at..value_at.checked_add(vlen)?)?;
        data_at = value_at + vlen + 1;
        Some((key, value))
    })
}

/// A whole header map, read in one host call.
pub struct HeaderSnapshot(Vec<u8>);

impl HeaderSnapshot {
    /// The first value of `name` (compared ignoring ASCII case, as Envoy's lookups do).
    pub fn get(&self, name: &str) -> Option<String> {
        serialized_pairs(&self.0)
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn contains(&self, name: &str) -> bool {
        serialized_pairs(&self.0).any(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Every header of `map`, in one call (instead of one `get_header` per name).
pub fn get_header_snapshot(map: Map) -> HostResult<HeaderSnapshot> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: valid out pointers.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    match status {
        STATUS_OK => Ok(HeaderSnapshot(unsafe { take_buffer(data, size) }.unwrap_or_default())),
        STATUS_NOT_FOUND => Ok(HeaderSnapshot(Vec::new())),
        status => Err(HostError { call: "proxy_get_header_map_pairs", status }),
    }
}

/// Property paths are their segments joined by NUL.
fn serialize_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(segment.as_bytes());
    }
    out
}
