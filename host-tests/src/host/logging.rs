//! Logging, the clock and the root context's tick.

use super::guest::{Ctx, read_string, refuse_on_service_extensions, write_u32, write_u64, written};
use crate::abi::{LogLevel, status};
use wasmtime::Result;

pub(super) fn proxy_log(mut c: Ctx<'_>, level: i32, ptr: i32, len: i32) -> Result<i32> {
    let Some(level) = LogLevel::from_word(level) else { return Ok(status::BAD_ARGUMENT) };
    let Some(message) = read_string(&mut c, ptr, len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
    let vm = c.data().vm;
    c.data().shared.borrow_mut().log(vm, level, message);
    Ok(status::OK)
}

pub(super) fn proxy_get_log_level(mut c: Ctx<'_>, ret: i32) -> Result<i32> {
    let level = c.data().shared.borrow().log_level as u32;
    Ok(written(write_u32(&mut c, ret, level)?))
}

/// The test clock, in Unix nanoseconds.
pub(super) fn proxy_get_current_time_nanoseconds(mut c: Ctx<'_>, ret: i32) -> Result<i32> {
    let now = c.data().shared.borrow().now_ns;
    Ok(written(write_u64(&mut c, ret, now)?))
}

/// The first tick fires one period from now, then every period; 0 stops the ticks.
pub(super) fn proxy_set_tick_period_milliseconds(mut c: Ctx<'_>, period: i32) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_set_tick_period_milliseconds")?;
    let now = c.data().shared.borrow().now_ns;
    let state = c.data_mut();
    state.tick_period_ms = period as u32;
    state.next_tick_ns = (period != 0).then(|| now + u64::from(period as u32) * 1_000_000);
    Ok(status::OK)
}
