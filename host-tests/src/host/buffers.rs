//! Buffers: the request and response bodies, an HTTP call's response body, the VM and plugin
//! configurations. Which one exists depends on the callback that is running.

use super::guest::{Ctx, copy_out, read, write_u32, written};
use super::state::{HostState, Phase};
use crate::abi::{BufferType, status};
use wasmtime::Result;

/// The buffer of a kind the effective context can see in this phase.
fn buffer_ref(state: &mut HostState, kind: BufferType) -> Option<&mut Vec<u8>> {
    match (kind, state.phase) {
        (BufferType::HttpRequestBody, _) => state.stream().and_then(|s| s.request_body.as_mut()),
        (BufferType::HttpResponseBody, _) => state.stream().and_then(|s| s.response_body.as_mut()),
        (BufferType::HttpCallResponseBody, Phase::HttpCallResponse { .. }) => {
            state.call_response.as_mut().map(|(_, body)| body)
        }
        (BufferType::VmConfiguration, Phase::VmStart) => Some(&mut state.vm_config),
        (BufferType::PluginConfiguration, Phase::Configure) => Some(&mut state.plugin_config),
        _ => None,
    }
}

pub(super) fn proxy_get_buffer_bytes(
    mut c: Ctx<'_>,
    buffer: i32,
    start: i32,
    max: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    let Some(kind) = BufferType::from_word(buffer) else { return Ok(status::BAD_ARGUMENT) };
    let bytes = {
        let Some(data) = buffer_ref(c.data_mut(), kind) else { return Ok(status::NOT_FOUND) };
        let (start, max) = (start as u32 as usize, max as u32 as usize);
        if start > data.len() {
            return Ok(status::BAD_ARGUMENT);
        }
        let end = start.saturating_add(max).min(data.len());
        data[start..end].to_vec()
    };
    copy_out(&mut c, &bytes, ptr_ptr, size_ptr)
}

/// The buffer's size; flags are always 0.
pub(super) fn proxy_get_buffer_status(mut c: Ctx<'_>, buffer: i32, size_ptr: i32, flags_ptr: i32) -> Result<i32> {
    let Some(kind) = BufferType::from_word(buffer) else { return Ok(status::BAD_ARGUMENT) };
    let Some(len) = buffer_ref(c.data_mut(), kind).map(|b| b.len()) else { return Ok(status::NOT_FOUND) };
    Ok(written(write_u32(&mut c, size_ptr, len as u32)? && write_u32(&mut c, flags_ptr, 0)?))
}

/// Envoy's `Buffer::copyFrom`: replace a prefix (start 0) or append (start ≥ length); an edit in
/// the middle is refused. Only the HTTP bodies are writable.
pub(super) fn proxy_set_buffer_bytes(
    mut c: Ctx<'_>,
    buffer: i32,
    start: i32,
    size: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
    let Some(kind) = BufferType::from_word(buffer) else { return Ok(status::BAD_ARGUMENT) };
    let Some(value) = read(&mut c, ptr, len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
    let writable = matches!(kind, BufferType::HttpRequestBody | BufferType::HttpResponseBody);
    let Some(data) = buffer_ref(c.data_mut(), kind) else { return Ok(status::NOT_FOUND) };
    if !writable {
        return Ok(status::BAD_ARGUMENT);
    }
    let (start, size) = (start as u32 as usize, size as u32 as usize);
    if start == 0 {
        data.drain(..size.min(data.len()));
        data.splice(0..0, value);
    } else if start >= data.len() {
        data.extend_from_slice(&value);
    } else {
        return Ok(status::BAD_ARGUMENT);
    }
    Ok(status::OK)
}
