//! Envoy's process-wide shared data (one store and one CAS counter for every VM) and shared
//! queues (named per VM id, owned by the context that registered them last).

use super::guest::{Ctx, copy_out, read, read_string, refuse_on_service_extensions, write_u32, written};
use super::state::{Event, Queue};
use crate::abi::status;
use std::collections::VecDeque;
use wasmtime::Result;

pub(super) fn proxy_get_shared_data(
    mut c: Ctx<'_>,
    key_ptr: i32,
    key_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
    cas_ptr: i32,
) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_get_shared_data")?;
    let Some(key) = read_string(&mut c, key_ptr, key_len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
    let Some((value, cas)) = c.data().shared.borrow().shared_data.get(&key).cloned() else {
        return Ok(status::NOT_FOUND);
    };
    if !write_u32(&mut c, cas_ptr, cas)? {
        return Ok(status::INVALID_MEMORY_ACCESS);
    }
    copy_out(&mut c, &value, ptr_ptr, size_ptr)
}

/// Envoy: a non-zero CAS must match the key's current one; a new key ignores the CAS.
pub(super) fn proxy_set_shared_data(
    mut c: Ctx<'_>,
    key_ptr: i32,
    key_len: i32,
    ptr: i32,
    len: i32,
    cas: i32,
) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_set_shared_data")?;
    let (Some(key), Some(value)) = (read_string(&mut c, key_ptr, key_len)?, read(&mut c, ptr, len)?) else {
        return Ok(status::INVALID_MEMORY_ACCESS);
    };
    let mut shared = c.data().shared.borrow_mut();
    let cas = cas as u32;
    if let Some((_, current)) = shared.shared_data.get(&key)
        && cas != 0
        && cas != *current
    {
        return Ok(status::CAS_MISMATCH);
    }
    let next = shared.next_cas();
    shared.shared_data.insert(key, (value, next));
    Ok(status::OK)
}

/// Queue ids are 1 + the queue's index among all queues.
pub(super) fn proxy_register_shared_queue(mut c: Ctx<'_>, name_ptr: i32, name_len: i32, id_ptr: i32) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_register_shared_queue")?;
    let Some(name) = read_string(&mut c, name_ptr, name_len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
    let (vm, context) = (c.data().vm, c.data().effective);
    let id = {
        let mut shared = c.data().shared.borrow_mut();
        let vm_id = shared.vm_id.clone();
        match shared.queues.iter().position(|q| q.vm_id == vm_id && q.name == name) {
            Some(i) => {
                // Envoy: re-registering moves the queue to the registering context.
                shared.queues[i].owner_vm = vm;
                shared.queues[i].owner_context = context;
                i
            }
            None => {
                let queue = Queue { vm_id, name, owner_vm: vm, owner_context: context, items: VecDeque::new() };
                shared.queues.push(queue);
                shared.queues.len() - 1
            }
        }
    };
    Ok(written(write_u32(&mut c, id_ptr, id as u32 + 1)?))
}

/// An empty VM id means this plugin's own.
pub(super) fn proxy_resolve_shared_queue(
    mut c: Ctx<'_>,
    vm_ptr: i32,
    vm_len: i32,
    name_ptr: i32,
    name_len: i32,
    id_ptr: i32,
) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_resolve_shared_queue")?;
    let (Some(vm_id), Some(name)) = (read_string(&mut c, vm_ptr, vm_len)?, read_string(&mut c, name_ptr, name_len)?)
    else {
        return Ok(status::INVALID_MEMORY_ACCESS);
    };
    let found = {
        let shared = c.data().shared.borrow();
        let vm_id = if vm_id.is_empty() { shared.vm_id.clone() } else { vm_id };
        shared.queues.iter().position(|q| q.vm_id == vm_id && q.name == name)
    };
    let Some(i) = found else { return Ok(status::NOT_FOUND) };
    Ok(written(write_u32(&mut c, id_ptr, i as u32 + 1)?))
}

/// Appends the item and tells the owner (`proxy_on_queue_ready`) once the current callback returns.
pub(super) fn proxy_enqueue_shared_queue(mut c: Ctx<'_>, id: i32, ptr: i32, len: i32) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_enqueue_shared_queue")?;
    let Some(value) = read(&mut c, ptr, len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
    let mut shared = c.data().shared.borrow_mut();
    let now = shared.now_ns;
    let Some(queue) = (id as u32).checked_sub(1).and_then(|i| shared.queues.get_mut(i as usize)) else {
        return Ok(status::NOT_FOUND);
    };
    queue.items.push_back(value);
    let event = Event::QueueReady { vm: queue.owner_vm, context_id: queue.owner_context, queue_id: id as u32 };
    shared.schedule(now, event);
    Ok(status::OK)
}

pub(super) fn proxy_dequeue_shared_queue(mut c: Ctx<'_>, id: i32, ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_dequeue_shared_queue")?;
    let item = {
        let mut shared = c.data().shared.borrow_mut();
        let Some(queue) = (id as u32).checked_sub(1).and_then(|i| shared.queues.get_mut(i as usize)) else {
            return Ok(status::NOT_FOUND);
        };
        match queue.items.pop_front() {
            Some(item) => item,
            None => return Ok(status::EMPTY),
        }
    };
    copy_out(&mut c, &item, ptr_ptr, size_ptr)
}
