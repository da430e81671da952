//! Properties: what the test set (plugin-wide, per stream, on the root context), and the request
//! properties Envoy derives from the headers.

use super::guest::{Ctx, copy_out, read};
use super::state::{HostState, Stream};
use crate::abi::status;
use wasmtime::Result;

/// Property paths are segments separated by NUL; we key them joined with '.'.
fn property_key(bytes: &[u8]) -> String {
    bytes.split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect::<Vec<_>>().join(".")
}

/// A property as the effective context sees it: the stream's own, then the request's, then the
/// root context's (only there), then the plugin's.
fn property(state: &HostState, path: &str) -> Option<Vec<u8>> {
    if let Some(stream) = state.streams.get(&state.effective) {
        if let Some(v) = stream.properties.get(path) {
            return Some(v.clone());
        }
        if let Some(v) = request_property(stream, path) {
            return Some(v);
        }
    }
    if state.effective == state.root_id
        && let Some(v) = state.root_properties.get(path)
    {
        return Some(v.clone());
    }
    state.plugin_properties.get(path).cloned()
}

/// The request properties Envoy derives from the headers (`request.path`, `request.method`...).
fn request_property(stream: &Stream, path: &str) -> Option<Vec<u8>> {
    let header =
        |name: &str| stream.request_headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone().into_bytes());
    match path {
        "request.path" => header(":path"),
        "request.url_path" => header(":path").map(|p| p.split(|&b| b == b'?').next().unwrap_or(&[]).to_vec()),
        "request.method" => header(":method"),
        "request.host" => header(":authority"),
        "request.scheme" => header(":scheme"),
        "response.code" => stream
            .response_headers
            .as_ref()
            .and_then(|h| h.iter().find(|(k, _)| k == ":status"))
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map(|code| code.to_le_bytes().to_vec()),
        _ => None,
    }
}

pub(super) fn proxy_get_property(
    mut c: Ctx<'_>,
    path_ptr: i32,
    path_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    let Some(path) = read(&mut c, path_ptr, path_len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
    let Some(value) = property(c.data(), &property_key(&path)) else { return Ok(status::NOT_FOUND) };
    copy_out(&mut c, &value, ptr_ptr, size_ptr)
}

/// Sets a property on the effective stream, or on the root context.
pub(super) fn proxy_set_property(mut c: Ctx<'_>, path_ptr: i32, path_len: i32, ptr: i32, len: i32) -> Result<i32> {
    let (Some(path), Some(value)) = (read(&mut c, path_ptr, path_len)?, read(&mut c, ptr, len)?) else {
        return Ok(status::INVALID_MEMORY_ACCESS);
    };
    let key = property_key(&path);
    let state = c.data_mut();
    let (root, effective) = (state.root_id, state.effective);
    if let Some(stream) = state.streams.get_mut(&effective) {
        stream.properties.insert(key, value);
    } else if effective == root {
        state.root_properties.insert(key, value);
    } else {
        return Ok(status::NOT_FOUND);
    }
    Ok(status::OK)
}
