//! Metrics as Envoy's stats store keeps them: one per name across every VM; each definition gets
//! a fresh id with the kind in its low bits.

use super::guest::{Ctx, read_string, refuse_on_service_extensions, write_u32, write_u64, written};
use super::state::{HostState, Metric};
use crate::abi::{MetricKind, status};
use wasmtime::Result;

/// The name an id was defined for in this VM.
fn metric_name(state: &HostState, id: i32) -> Option<String> {
    state.metric_ids.get(&(id as u32)).cloned()
}

/// Defines (or finds) a metric; one name cannot be two kinds.
pub(super) fn proxy_define_metric(mut c: Ctx<'_>, kind: i32, name_ptr: i32, name_len: i32, id_ptr: i32) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_define_metric")?;
    let Some(kind) = MetricKind::from_word(kind) else { return Ok(status::BAD_ARGUMENT) };
    let Some(name) = read_string(&mut c, name_ptr, name_len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
    {
        let mut shared = c.data().shared.borrow_mut();
        let metric = shared.metrics.entry(name.clone()).or_insert(Metric { kind, value: 0, samples: Vec::new() });
        if metric.kind != kind {
            // Envoy's stat store cannot hold one name as two kinds.
            return Ok(status::BAD_ARGUMENT);
        }
    }
    let state = c.data_mut();
    // Envoy encodes the kind in the id's low bits; each definition gets a fresh id.
    let id = (state.next_metric << 2) | kind as u32;
    state.next_metric += 1;
    state.metric_ids.insert(id, name);
    Ok(written(write_u32(&mut c, id_ptr, id)?))
}

/// Counters only go up; histograms are recorded, not incremented.
pub(super) fn proxy_increment_metric(c: Ctx<'_>, id: i32, delta: i64) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_increment_metric")?;
    let Some(name) = metric_name(c.data(), id) else { return Ok(status::NOT_FOUND) };
    let mut shared = c.data().shared.borrow_mut();
    let Some(metric) = shared.metrics.get_mut(&name) else { return Ok(status::NOT_FOUND) };
    match metric.kind {
        MetricKind::Counter if delta < 0 => Ok(status::BAD_ARGUMENT),
        MetricKind::Histogram => Ok(status::BAD_ARGUMENT),
        _ => {
            metric.value = metric.value.saturating_add(delta);
            Ok(status::OK)
        }
    }
}

/// A histogram sample, or the value of a counter or gauge.
pub(super) fn proxy_record_metric(c: Ctx<'_>, id: i32, value: i64) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_record_metric")?;
    let Some(name) = metric_name(c.data(), id) else { return Ok(status::NOT_FOUND) };
    let mut shared = c.data().shared.borrow_mut();
    let Some(metric) = shared.metrics.get_mut(&name) else { return Ok(status::NOT_FOUND) };
    match metric.kind {
        MetricKind::Histogram => metric.samples.push(value as u64),
        _ => metric.value = value,
    }
    Ok(status::OK)
}

pub(super) fn proxy_get_metric(mut c: Ctx<'_>, id: i32, ret: i32) -> Result<i32> {
    refuse_on_service_extensions(&c, "proxy_get_metric")?;
    let Some(name) = metric_name(c.data(), id) else { return Ok(status::NOT_FOUND) };
    let value = match c.data().shared.borrow().metrics.get(&name) {
        Some(m) if m.kind != MetricKind::Histogram => m.value as u64,
        Some(_) => return Ok(status::BAD_ARGUMENT),
        None => return Ok(status::NOT_FOUND),
    };
    Ok(written(write_u64(&mut c, ret, value)?))
}
