//! Calls that steer a stream or the VM's context: local replies, the effective context,
//! continuing or closing a stream, `proxy_done`, foreign functions.

use super::guest::{Ctx, read, read_string};
use super::state::LocalReply;
use crate::abi::{self, status};
use wasmtime::{Error, Result};

/// Records the plugin's local reply; the driver sends it through the response callbacks after the
/// current callback returns. Too late once response headers went downstream.
#[allow(clippy::too_many_arguments)] // the ABI's signature
pub(super) fn proxy_send_local_response(
    mut c: Ctx<'_>,
    code: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    grpc_status: i32,
) -> Result<i32> {
    let (Some(details), Some(body), Some(headers)) = (
        read_string(&mut c, details_ptr, details_len)?,
        read(&mut c, body_ptr, body_len)?,
        read(&mut c, headers_ptr, headers_len)?,
    ) else {
        return Ok(status::INVALID_MEMORY_ACCESS);
    };
    let headers =
        abi::deserialize_map(&headers).map_err(|e| Error::msg(format!("proxy_send_local_response: headers: {e}")))?;
    let Some(stream) = c.data_mut().stream() else { return Ok(status::BAD_ARGUMENT) };
    if stream.response_started || stream.local_reply.is_some() {
        // Response headers already went downstream: Envoy can no longer reply.
        return Ok(status::BAD_ARGUMENT);
    }
    stream.local_reply = Some(LocalReply {
        status: code as u32 as u16,
        details,
        headers: headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(),
        body,
        grpc_status,
        from_host: false,
    });
    Ok(status::OK)
}

/// The root context or a live stream; anything else is a bad argument.
pub(super) fn proxy_set_effective_context(mut c: Ctx<'_>, id: i32) -> Result<i32> {
    let id = id as u32;
    let state = c.data_mut();
    if id != state.root_id && !state.streams.contains_key(&id) {
        return Ok(status::BAD_ARGUMENT);
    }
    state.effective = id;
    Ok(status::OK)
}

/// Resumes the request (0) or the response (1); the downstream/upstream streams (2, 3) are not
/// implemented.
pub(super) fn proxy_continue_stream(mut c: Ctx<'_>, stream_type: i32) -> Result<i32> {
    let Some(stream) = c.data_mut().stream() else { return Ok(status::BAD_ARGUMENT) };
    match stream_type {
        0 => stream.continue_request = true,
        1 => stream.continue_response = true,
        2 | 3 => return Ok(status::UNIMPLEMENTED),
        _ => return Ok(status::BAD_ARGUMENT),
    }
    Ok(status::OK)
}

/// Closing the request or the response resets the stream once the callback returns.
pub(super) fn proxy_close_stream(mut c: Ctx<'_>, stream_type: i32) -> Result<i32> {
    let Some(stream) = c.data_mut().stream() else { return Ok(status::BAD_ARGUMENT) };
    match stream_type {
        0 | 1 => stream.close_requested = true,
        2 | 3 => return Ok(status::UNIMPLEMENTED),
        _ => return Ok(status::BAD_ARGUMENT),
    }
    Ok(status::OK)
}

/// Finishes a context whose `proxy_on_done` returned false; anything else is not found.
pub(super) fn proxy_done(mut c: Ctx<'_>) -> Result<i32> {
    match c.data_mut().stream() {
        Some(stream) if stream.done_pending => {
            stream.done_pending = false;
            stream.done_called = true;
            Ok(status::OK)
        }
        _ => Ok(status::NOT_FOUND),
    }
}

/// No foreign functions are registered on this host.
pub(super) fn proxy_call_foreign_function(
    _c: Ctx<'_>,
    _name_ptr: i32,
    _name_len: i32,
    _args_ptr: i32,
    _args_len: i32,
    _ret_ptr_ptr: i32,
    _ret_size_ptr: i32,
) -> Result<i32> {
    Ok(status::NOT_FOUND)
}
