//! What one VM's store holds ([`HostState`]), what every VM shares ([`Shared`]: Envoy's
//! process-wide shared data, queues, stats, cluster manager and dispatcher clock), and one HTTP
//! stream as the host sees it ([`Stream`]).

use super::http_call::{CallResponse, HttpCall, UpstreamScript};
use crate::abi::{Headers, LogLevel, MetricKind};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

/// Which proxy the harness pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostMode {
    /// Envoy: every call is available.
    #[default]
    Envoy,
    /// Google Cloud Service Extensions: no timers, shared data, shared queues, metrics or outbound
    /// HTTP calls. The harness refuses those calls by failing the test with the call's name; it
    /// enforces nothing else.
    ServiceExtensions,
}

/// One line the plugin logged (`proxy_log`, or a line on stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub vm: usize,
    pub level: LogLevel,
    pub message: String,
}

/// A metric as Envoy keeps it: one per name, shared by every VM (worker) of the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub kind: MetricKind,
    /// Counter or gauge value.
    pub value: i64,
    /// Histogram samples, in recording order.
    pub samples: Vec<u64>,
}

/// What the host will deliver later, on the test clock.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    HttpCallDone { vm: usize, context_id: u32, token: u32, response: CallResponse },
    QueueReady { vm: usize, context_id: u32, queue_id: u32 },
}

#[derive(Debug, Clone)]
pub(crate) struct Queue {
    pub vm_id: String,
    pub name: String,
    pub owner_vm: usize,
    pub owner_context: u32,
    pub items: VecDeque<Vec<u8>>,
}

/// State every VM sees: Envoy's process-wide shared data, shared queues, stats, cluster manager,
/// dispatcher clock. All VMs run on the test's thread, so a `RefCell` is enough.
#[derive(Debug)]
pub(crate) struct Shared {
    pub mode: HostMode,
    pub now_ns: u64,
    pub vm_id: String,
    pub shared_data: BTreeMap<String, (Vec<u8>, u32)>,
    /// Envoy's CAS counter: one for all keys, starts at 1, never 0.
    pub next_cas: u32,
    pub queues: Vec<Queue>,
    pub metrics: BTreeMap<String, Metric>,
    pub logs: Vec<LogLine>,
    pub echo_logs: bool,
    pub log_level: LogLevel,
    pub clusters: BTreeMap<String, UpstreamScript>,
    pub http_calls: Vec<HttpCall>,
    /// (due time ns, sequence) → event.
    pub events: BTreeMap<(u64, u64), Event>,
    pub event_seq: u64,
}

impl Shared {
    pub fn new(mode: HostMode, start_ms: u64, vm_id: String) -> Self {
        Self {
            mode,
            now_ns: start_ms * 1_000_000,
            vm_id,
            shared_data: BTreeMap::new(),
            next_cas: 1,
            queues: Vec::new(),
            metrics: BTreeMap::new(),
            logs: Vec::new(),
            echo_logs: true,
            log_level: LogLevel::Info,
            clusters: BTreeMap::new(),
            http_calls: Vec::new(),
            events: BTreeMap::new(),
            event_seq: 0,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ns / 1_000_000
    }

    pub(super) fn next_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        cas
    }

    pub fn schedule(&mut self, at_ns: u64, event: Event) {
        self.event_seq += 1;
        self.events.insert((at_ns, self.event_seq), event);
    }

    pub fn log(&mut self, vm: usize, level: LogLevel, message: String) {
        if self.echo_logs {
            eprintln!("[vm{vm} {level:?}] {message}");
        }
        self.logs.push(LogLine { vm, level, message });
    }
}

/// Which callback is running: decides which buffers and maps exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    VmStart,
    Configure,
    Tick,
    HttpCallResponse { token: u32 },
    Stream,
}

/// A local reply the plugin sent (`proxy_send_local_response`), or the host sent for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub details: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub grpc_status: i32,
    /// True when Envoy itself replied (e.g. its buffer limit), not the plugin.
    pub from_host: bool,
}

/// One HTTP stream as the host sees it.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub request_headers: Headers,
    pub request_trailers: Headers,
    pub response_headers: Option<Headers>,
    pub response_trailers: Headers,
    /// The request body buffer the plugin can see: `Some` in `on_request_body` and while the
    /// filter holds (paused) buffered data.
    pub request_body: Option<Vec<u8>>,
    pub response_body: Option<Vec<u8>>,
    pub properties: BTreeMap<String, Vec<u8>>,
    pub local_reply: Option<LocalReply>,
    /// Response headers went downstream: too late for a local reply.
    pub response_started: bool,
    pub continue_request: bool,
    pub continue_response: bool,
    pub close_requested: bool,
    /// `proxy_on_done` returned false: the plugin must call `proxy_done`.
    pub done_pending: bool,
    pub done_called: bool,
    // What the host did with the stream, for the driver and the assertions.
    /// The request headers as they went upstream (`None` while the filter holds them).
    pub upstream_headers: Option<Headers>,
    pub upstream_body: Vec<u8>,
    /// The filter paused on the last request body chunk: the next chunk is appended to the buffer.
    pub request_body_held: bool,
    /// The client sent its last byte.
    pub request_eos: bool,
    /// The whole request went upstream.
    pub request_complete: bool,
    pub response_body_held: bool,
    pub response_eos: bool,
    /// Response headers and body as the client got them.
    pub client_headers: Option<Headers>,
    pub client_body: Vec<u8>,
    pub response_complete: bool,
    /// The local reply went through the response callbacks to the client.
    pub local_reply_delivered: bool,
    pub reset: bool,
    pub logged: bool,
    pub ended: bool,
    /// Callbacks the host made on this stream, in order (for lifecycle assertions).
    pub callbacks: Vec<String>,
}

/// What one VM's store holds.
pub(crate) struct HostState {
    pub vm: usize,
    pub shared: Rc<RefCell<Shared>>,
    pub root_id: u32,
    pub effective: u32,
    pub phase: Phase,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub plugin_properties: BTreeMap<String, Vec<u8>>,
    /// The VM's environment variables (Envoy's `vm_config.environment_variables`), what WASI
    /// `environ_get` hands over, in key order.
    pub environment: BTreeMap<String, String>,
    pub streams: BTreeMap<u32, Stream>,
    /// The response `proxy_on_http_call_response` is reporting: `None` headers = the call failed.
    pub call_response: Option<(Option<Headers>, Vec<u8>)>,
    pub tick_period_ms: u32,
    pub next_tick_ns: Option<u64>,
    pub next_token: u32,
    pub metric_ids: BTreeMap<u32, String>,
    pub next_metric: u32,
    pub rng: u64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub root_properties: BTreeMap<String, Vec<u8>>,
}

impl HostState {
    pub fn new(vm: usize, shared: Rc<RefCell<Shared>>, root_id: u32) -> Self {
        Self {
            vm,
            shared,
            root_id,
            effective: root_id,
            phase: Phase::Idle,
            vm_config: Vec::new(),
            plugin_config: Vec::new(),
            plugin_properties: BTreeMap::new(),
            environment: BTreeMap::new(),
            streams: BTreeMap::new(),
            call_response: None,
            tick_period_ms: 0,
            next_tick_ns: None,
            next_token: 1,
            metric_ids: BTreeMap::new(),
            next_metric: 1,
            // Deterministic per VM: the same test draws the same "random" bytes every run.
            rng: 0x9E37_79B9_7F4A_7C15 ^ (vm as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            stdout: Vec::new(),
            stderr: Vec::new(),
            root_properties: BTreeMap::new(),
        }
    }

    /// The stream of the effective context, if it is one.
    pub(super) fn stream(&mut self) -> Option<&mut Stream> {
        let id = self.effective;
        self.streams.get_mut(&id)
    }

    pub(super) fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic, good enough for ids and seeds.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Flushes complete lines written to stdout/stderr into the log.
    pub fn flush_output(&mut self, all: bool) {
        for (fd, level) in [(1, LogLevel::Info), (2, LogLevel::Error)] {
            let buffer = if fd == 1 { &mut self.stdout } else { &mut self.stderr };
            let mut lines = Vec::new();
            while let Some(at) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=at).collect();
                lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            if all && !buffer.is_empty() {
                lines.push(String::from_utf8_lossy(buffer).into_owned());
                buffer.clear();
            }
            for line in lines {
                self.shared.borrow_mut().log(self.vm, level, line);
            }
        }
    }
}
