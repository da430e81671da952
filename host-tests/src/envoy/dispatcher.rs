//! Envoy's dispatchers on the test clock: every worker's ticks and every event the host posted
//! (HTTP-call answers, queue notifications), run in time order.

use super::HostResult;
use super::vm::Vm;
use crate::host::{Event, Phase, Shared};
use std::cell::RefCell;
use std::rc::Rc;

pub(crate) struct Inner {
    pub vms: Vec<Vm>,
    pub shared: Rc<RefCell<Shared>>,
    pub(super) request_buffer_limit: Option<usize>,
    pub(super) override_host_header: Option<String>,
}

impl Inner {
    pub(super) fn new(
        vms: Vec<Vm>,
        shared: Rc<RefCell<Shared>>,
        request_buffer_limit: Option<usize>,
        override_host_header: Option<String>,
    ) -> Self {
        Self { vms, shared, request_buffer_limit, override_host_header }
    }

    /// Runs every event and tick due at or before `target_ns`, in time order (ties: events first,
    /// then ticks by worker).
    pub(super) fn run_until(&mut self, target_ns: u64) -> HostResult<()> {
        loop {
            let next_event = self.shared.borrow().events.keys().next().copied().filter(|(t, _)| *t <= target_ns);
            let next_tick = self
                .vms
                .iter()
                .enumerate()
                .filter_map(|(i, vm)| vm.store.data().next_tick_ns.map(|t| (t, i)))
                .filter(|(t, _)| *t <= target_ns)
                .min();
            match (next_event, next_tick) {
                (Some((te, seq)), tick) if tick.is_none_or(|(tt, _)| te <= tt) => {
                    let event = {
                        let mut shared = self.shared.borrow_mut();
                        shared.now_ns = shared.now_ns.max(te);
                        shared.events.remove(&(te, seq))
                    };
                    if let Some(event) = event {
                        self.run_event(event)?;
                    }
                }
                (_, Some((tt, vm))) => self.fire_tick(vm, tt)?,
                _ => return Ok(()),
            }
        }
    }

    /// Runs what is due now (e.g. queue-ready notifications) without moving the clock.
    pub(crate) fn settle(&mut self) -> HostResult<()> {
        let now = self.shared.borrow().now_ns;
        self.run_until(now)
    }

    /// `proxy_on_tick` on worker `vm`'s root context, due at `at_ns`; the next one a period later.
    fn fire_tick(&mut self, vm: usize, at_ns: u64) -> HostResult<()> {
        {
            let mut shared = self.shared.borrow_mut();
            shared.now_ns = shared.now_ns.max(at_ns);
        }
        let state = self.vms[vm].store.data_mut();
        state.next_tick_ns = Some(at_ns + u64::from(state.tick_period_ms) * 1_000_000);
        let root = state.root_id;
        self.vms[vm].call::<i32, ()>("proxy_on_tick", Phase::Tick, root, root as i32)?;
        self.after_event(vm)
    }

    fn run_event(&mut self, event: Event) -> HostResult<()> {
        match event {
            Event::HttpCallDone { vm, context_id, token, response } => {
                let (headers, body) = match response {
                    Some((headers, body)) => (Some(headers), body),
                    None => (None, Vec::new()),
                };
                let num_headers = headers.as_ref().map_or(0, Vec::len);
                let body_len = body.len();
                self.vms[vm].store.data_mut().call_response = Some((headers, body));
                let params = (context_id as i32, token as i32, num_headers as i32, body_len as i32, 0i32);
                let result = self.vms[vm].call::<(i32, i32, i32, i32, i32), ()>(
                    "proxy_on_http_call_response",
                    Phase::HttpCallResponse { token },
                    context_id,
                    params,
                );
                self.vms[vm].store.data_mut().call_response = None;
                result?;
                self.after_event(vm)
            }
            Event::QueueReady { vm, context_id, queue_id } => {
                self.vms[vm].call::<(i32, i32), ()>(
                    "proxy_on_queue_ready",
                    Phase::Idle,
                    context_id,
                    (context_id as i32, queue_id as i32),
                )?;
                self.after_event(vm)
            }
        }
    }

    /// After a callback not tied to one stream: act on what the plugin asked of any stream.
    fn after_event(&mut self, vm: usize) -> HostResult<()> {
        let ids: Vec<u32> = self.vms[vm].store.data().streams.keys().copied().collect();
        for id in ids {
            self.after_stream_callback(vm, id)?;
        }
        Ok(())
    }
}
