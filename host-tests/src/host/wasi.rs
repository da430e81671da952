//! The WASI preview1 calls a proxy-wasm module makes: stdout/stderr become log lines, clocks read
//! the test clock, `random_get` is a fixed per-VM sequence, the environment is the VM's own
//! (what the test configured, never the test process's), no arguments, `proc_exit` traps.

use super::guest::{Ctx, read, write, write_u32, write_u64};
use super::state::HostState;
use crate::abi::errno;
use wasmtime::{Error, Result};

/// Only stdout (1) and stderr (2); complete lines go to the log at once.
pub(super) fn fd_write(mut c: Ctx<'_>, fd: i32, iovs: i32, count: i32, written_ptr: i32) -> Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(errno::BADF);
    }
    let mut bytes = Vec::new();
    for i in 0..count.max(0) {
        let Some(iov) = read(&mut c, iovs.wrapping_add(i * 8), 8)? else { return Ok(errno::FAULT) };
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        let Some(chunk) = read(&mut c, ptr, len)? else { return Ok(errno::FAULT) };
        bytes.extend_from_slice(&chunk);
    }
    if !write_u32(&mut c, written_ptr, bytes.len() as u32)? {
        return Ok(errno::FAULT);
    }
    let state = c.data_mut();
    if fd == 1 {
        state.stdout.extend_from_slice(&bytes)
    } else {
        state.stderr.extend_from_slice(&bytes)
    }
    state.flush_output(false);
    Ok(errno::SUCCESS)
}

/// Realtime and monotonic both read the test clock.
pub(super) fn clock_time_get(mut c: Ctx<'_>, clock: i32, _precision: i64, ret: i32) -> Result<i32> {
    if clock != 0 && clock != 1 {
        return Ok(errno::NOTSUP);
    }
    let now = c.data().shared.borrow().now_ns;
    Ok(if write_u64(&mut c, ret, now)? { errno::SUCCESS } else { errno::FAULT })
}

/// Deterministic per VM: the same test draws the same bytes every run. At most 64 KiB a call.
pub(super) fn random_get(mut c: Ctx<'_>, ptr: i32, len: i32) -> Result<i32> {
    let len = len as u32 as usize;
    if len > 64 * 1024 {
        return Ok(errno::INVAL);
    }
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        let word = c.data_mut().next_random();
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes.truncate(len);
    Ok(if write(&mut c, ptr, &bytes)? { errno::SUCCESS } else { errno::FAULT })
}

/// The VM's environment as WASI hands it over: one `KEY=VALUE\0` string per variable, in key order.
fn environ_strings(state: &HostState) -> Vec<Vec<u8>> {
    state.environment.iter().map(|(key, value)| format!("{key}={value}\0").into_bytes()).collect()
}

/// How many variables, and the bytes their strings take (NULs included).
pub(super) fn environ_sizes_get(mut c: Ctx<'_>, count_ptr: i32, size_ptr: i32) -> Result<i32> {
    let strings = environ_strings(c.data());
    let size: usize = strings.iter().map(Vec::len).sum();
    let ok = write_u32(&mut c, count_ptr, strings.len() as u32)? && write_u32(&mut c, size_ptr, size as u32)?;
    Ok(if ok { errno::SUCCESS } else { errno::FAULT })
}

/// The strings, one after the other, at `buffer_ptr`, and a pointer to each at `environ_ptr`
/// (the guest sized both with `environ_sizes_get`).
pub(super) fn environ_get(mut c: Ctx<'_>, environ_ptr: i32, buffer_ptr: i32) -> Result<i32> {
    let mut at = buffer_ptr;
    for (i, string) in environ_strings(c.data()).iter().enumerate() {
        let slot = environ_ptr.wrapping_add(i as i32 * 4);
        if !write_u32(&mut c, slot, at as u32)? || !write(&mut c, at, string)? {
            return Ok(errno::FAULT);
        }
        at = at.wrapping_add(string.len() as i32);
    }
    Ok(errno::SUCCESS)
}

/// No arguments.
pub(super) fn args_sizes_get(mut c: Ctx<'_>, count_ptr: i32, size_ptr: i32) -> Result<i32> {
    let ok = write_u32(&mut c, count_ptr, 0)? && write_u32(&mut c, size_ptr, 0)?;
    Ok(if ok { errno::SUCCESS } else { errno::FAULT })
}

pub(super) fn args_get(_c: Ctx<'_>, _argv_ptr: i32, _buffer_ptr: i32) -> Result<i32> {
    Ok(errno::SUCCESS)
}

pub(super) fn proc_exit(mut c: Ctx<'_>, code: i32) -> Result<()> {
    c.data_mut().flush_output(true);
    Err(Error::msg(format!("wasi proc_exit({code}): the plugin exited its VM")))
}

pub(super) fn sched_yield(_c: Ctx<'_>) -> Result<i32> {
    Ok(errno::SUCCESS)
}
