//! Guest memory as host functions see it: reads that tell an out-of-range pointer apart (the call
//! answers `INVALID_MEMORY_ACCESS` or `FAULT`), writes, and copying a value out into memory the
//! guest allocates.

use super::state::{HostMode, HostState};
use crate::abi::status;
use wasmtime::{Caller, Error, Extern, Result};

/// The caller of a host function: the VM's store and its instance's exports.
pub(super) type Ctx<'a> = Caller<'a, HostState>;

/// The status word a host function returns: `ok` when the write landed, else `INVALID_MEMORY_ACCESS`.
pub(super) fn written(ok: bool) -> i32 {
    if ok { status::OK } else { status::INVALID_MEMORY_ACCESS }
}

fn memory(caller: &mut Ctx<'_>) -> Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(Error::msg("the module exports no memory named \"memory\"")),
    }
}

/// Reads guest memory; `None` when the range is outside it (the caller answers INVALID_MEMORY_ACCESS).
pub(super) fn read(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Option<Vec<u8>>> {
    let memory = memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    Ok(start.checked_add(len).and_then(|end| memory.data(&*caller).get(start..end)).map(<[u8]>::to_vec))
}

pub(super) fn read_string(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Option<String>> {
    Ok(read(caller, ptr, len)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

pub(super) fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<bool> {
    let memory = memory(caller)?;
    Ok(memory.write(&mut *caller, ptr as u32 as usize, bytes).is_ok())
}

pub(super) fn write_u32(caller: &mut Ctx<'_>, ptr: i32, value: u32) -> Result<bool> {
    write(caller, ptr, &value.to_le_bytes())
}

pub(super) fn write_u64(caller: &mut Ctx<'_>, ptr: i32, value: u64) -> Result<bool> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Allocates `bytes.len()` in the guest (`proxy_on_memory_allocate`, else `malloc`), copies the
/// bytes there and writes pointer and size to the return slots. Empty data writes a null pointer
/// and size 0 without allocating, as proxy-wasm-cpp-host does.
pub(super) fn copy_out(caller: &mut Ctx<'_>, bytes: &[u8], ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
    let mut pointer = 0u32;
    if !bytes.is_empty() {
        let alloc = caller
            .get_export("proxy_on_memory_allocate")
            .or_else(|| caller.get_export("malloc"))
            .and_then(Extern::into_func)
            .ok_or_else(|| Error::msg("the module exports neither proxy_on_memory_allocate nor malloc"))?;
        let alloc = alloc.typed::<i32, i32>(&*caller)?;
        pointer = alloc.call(&mut *caller, bytes.len() as i32)? as u32;
        if pointer == 0 || !write(caller, pointer as i32, bytes)? {
            return Ok(status::INVALID_MEMORY_ACCESS);
        }
    }
    if !write_u32(caller, ptr_ptr, pointer)? || !write_u32(caller, size_ptr, bytes.len() as u32)? {
        return Ok(status::INVALID_MEMORY_ACCESS);
    }
    Ok(status::OK)
}

/// Fails the test when a Service Extensions host would not have this call.
pub(super) fn refuse_on_service_extensions(caller: &Ctx<'_>, call: &str) -> Result<()> {
    if caller.data().shared.borrow().mode == HostMode::ServiceExtensions {
        return Err(Error::msg(format!(
            "{call}: not available on a Service Extensions host (no timers, shared data, shared queues, \
             metrics or outbound HTTP calls there); the plugin must not call it in that mode"
        )));
    }
    Ok(())
}
