//! Header maps: the request and response headers and trailers of the effective stream, and the
//! headers of an HTTP call's response. Keys are lower-cased, as Envoy stores them.

use super::guest::{Ctx, copy_out, read, read_string, write_u32, written};
use super::state::HostState;
use crate::abi::{self, Headers, MapType, status};
use wasmtime::{Error, Result};

/// A header map of the effective context, as Envoy exposes it in this phase.
fn map_mut(state: &mut HostState, map: MapType) -> Option<&mut Headers> {
    match map {
        MapType::HttpRequestHeaders => state.stream().map(|s| &mut s.request_headers),
        MapType::HttpRequestTrailers => state.stream().map(|s| &mut s.request_trailers),
        MapType::HttpResponseHeaders => state.stream().and_then(|s| s.response_headers.as_mut()),
        MapType::HttpResponseTrailers => state.stream().map(|s| &mut s.response_trailers),
        MapType::HttpCallResponseHeaders => state.call_response.as_mut().and_then(|(h, _)| h.as_mut()),
        MapType::HttpCallResponseTrailers | MapType::GrpcInitialMetadata | MapType::GrpcTrailingMetadata => None,
    }
}

/// The map a setter names, if the plugin may write it.
fn writable(map: i32) -> Option<MapType> {
    MapType::from_word(map).filter(|map| {
        matches!(
            map,
            MapType::HttpRequestHeaders
                | MapType::HttpRequestTrailers
                | MapType::HttpResponseHeaders
                | MapType::HttpResponseTrailers
        )
    })
}

/// Envoy's `setCopy`: the first entry takes the value, later duplicates go, absent keys append.
pub(crate) fn replace_header(map: &mut Headers, key: &str, value: &str) {
    let mut found = false;
    map.retain_mut(|(k, v)| {
        if k != key {
            return true;
        }
        if found {
            return false;
        }
        found = true;
        *v = value.to_string();
        true
    });
    if !found {
        map.push((key.to_string(), value.to_string()));
    }
}

/// Reads a key and a value from guest memory; `None` if either is out of range.
fn read_pair(c: &mut Ctx<'_>, key: (i32, i32), value: (i32, i32)) -> Result<Option<(String, String)>> {
    let key = read_string(c, key.0, key.1)?;
    let value = read_string(c, value.0, value.1)?;
    Ok(key.zip(value))
}

pub(super) fn proxy_get_header_map_pairs(mut c: Ctx<'_>, map: i32, ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
    let Some(map) = MapType::from_word(map) else { return Ok(status::BAD_ARGUMENT) };
    let Some(pairs) = map_mut(c.data_mut(), map).map(|m| m.clone()) else { return Ok(status::BAD_ARGUMENT) };
    let bytes = if pairs.is_empty() { Vec::new() } else { abi::serialize_map(&pairs) };
    copy_out(&mut c, &bytes, ptr_ptr, size_ptr)
}

pub(super) fn proxy_get_header_map_size(mut c: Ctx<'_>, map: i32, size_ptr: i32) -> Result<i32> {
    let Some(map) = MapType::from_word(map) else { return Ok(status::BAD_ARGUMENT) };
    let Some(size) = map_mut(c.data_mut(), map).map(|m| abi::serialize_map(m).len()) else {
        return Ok(status::BAD_ARGUMENT);
    };
    Ok(written(write_u32(&mut c, size_ptr, size as u32)?))
}

pub(super) fn proxy_set_header_map_pairs(mut c: Ctx<'_>, map: i32, ptr: i32, len: i32) -> Result<i32> {
    let Some(map) = writable(map) else { return Ok(status::BAD_ARGUMENT) };
    let Some(bytes) = read(&mut c, ptr, len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
    let pairs = abi::deserialize_map(&bytes).map_err(|e| Error::msg(format!("proxy_set_header_map_pairs: {e}")))?;
    let Some(target) = map_mut(c.data_mut(), map) else { return Ok(status::BAD_ARGUMENT) };
    *target = pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    Ok(status::OK)
}

/// The first value of a key.
pub(super) fn proxy_get_header_map_value(
    mut c: Ctx<'_>,
    map: i32,
    key_ptr: i32,
    key_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    let Some(map) = MapType::from_word(map) else { return Ok(status::BAD_ARGUMENT) };
    let Some(key) = read_string(&mut c, key_ptr, key_len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
    let key = key.to_ascii_lowercase();
    let Some(headers) = map_mut(c.data_mut(), map) else { return Ok(status::BAD_ARGUMENT) };
    let Some(value) = headers.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()) else {
        return Ok(status::NOT_FOUND);
    };
    copy_out(&mut c, value.as_bytes(), ptr_ptr, size_ptr)
}

pub(super) fn proxy_add_header_map_value(
    mut c: Ctx<'_>,
    map: i32,
    key_ptr: i32,
    key_len: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
    let Some(map) = writable(map) else { return Ok(status::BAD_ARGUMENT) };
    let Some((key, value)) = read_pair(&mut c, (key_ptr, key_len), (ptr, len))? else {
        return Ok(status::INVALID_MEMORY_ACCESS);
    };
    let Some(headers) = map_mut(c.data_mut(), map) else { return Ok(status::BAD_ARGUMENT) };
    headers.push((key.to_ascii_lowercase(), value));
    Ok(status::OK)
}

pub(super) fn proxy_replace_header_map_value(
    mut c: Ctx<'_>,
    map: i32,
    key_ptr: i32,
    key_len: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
    let Some(map) = writable(map) else { return Ok(status::BAD_ARGUMENT) };
    let Some((key, value)) = read_pair(&mut c, (key_ptr, key_len), (ptr, len))? else {
        return Ok(status::INVALID_MEMORY_ACCESS);
    };
    let Some(headers) = map_mut(c.data_mut(), map) else { return Ok(status::BAD_ARGUMENT) };
    replace_header(headers, &key.to_ascii_lowercase(), &value);
    Ok(status::OK)
}

/// Removes every value of a key; OK also when the key was absent (spec).
pub(super) fn proxy_remove_header_map_value(mut c: Ctx<'_>, map: i32, key_ptr: i32, key_len: i32) -> Result<i32> {
    let Some(map) = writable(map) else { return Ok(status::BAD_ARGUMENT) };
    let Some(key) = read_string(&mut c, key_ptr, key_len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
    let key = key.to_ascii_lowercase();
    let Some(headers) = map_mut(c.data_mut(), map) else { return Ok(status::BAD_ARGUMENT) };
    headers.retain(|(k, _)| *k != key);
    Ok(status::OK)
}
