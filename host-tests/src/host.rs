//! The host side of the ABI: what each VM's store holds, what all VMs share, and every host
//! function, linked by name.
//!
//! Each function follows the proxy-wasm ABI 0.2.1 spec and, where the spec leaves room, Envoy's
//! implementation (proxy-wasm-cpp-host plus Envoy's `Context`): statuses, which buffers and maps
//! exist in which callback, how `set_buffer_bytes` edits a body, the CAS counter of shared data.
//! A function the module imports that the harness does not implement is still linked, as a stub
//! that traps with its name, so a test that reaches it fails saying which call it was.

use crate::abi::{self, BufferType, Headers, LogLevel, MapType, MetricKind, errno, status};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use wasmtime::{Caller, Error, Extern, Linker, Module, Result};

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

/// What a scripted upstream cluster answers to one `proxy_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamReply {
    /// A response `latency_ms` after the call (delivered as a timeout if that is past the call's timeout).
    Respond { status: u16, headers: Headers, body: Vec<u8>, latency_ms: u64 },
    /// Never answers: the call's timeout fires, and Envoy's async client answers 504.
    Hang,
    /// The stream is reset `after_ms` after the call: the callback sees no headers at all.
    Reset { after_ms: u64 },
}

impl UpstreamReply {
    /// A 200 with a JSON body, 1 ms after the call.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        UpstreamReply::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            latency_ms: 1,
        }
    }

    pub fn status(status: u16) -> Self {
        UpstreamReply::Respond { status, headers: Vec::new(), body: Vec::new(), latency_ms: 1 }
    }

    pub fn latency_ms(self, ms: u64) -> Self {
        match self {
            UpstreamReply::Respond { status, headers, body, .. } => {
                UpstreamReply::Respond { status, headers, body, latency_ms: ms }
            }
            other => other,
        }
    }
}

/// The script of one cluster: one-shot replies first, then the standing reply.
#[derive(Debug, Clone, Default)]
pub struct UpstreamScript {
    pub once: VecDeque<UpstreamReply>,
    pub always: Option<UpstreamReply>,
}

impl UpstreamScript {
    fn next_reply(&mut self) -> UpstreamReply {
        // A known cluster with nothing scripted behaves like an Envoy cluster with no healthy host.
        self.once.pop_front().or_else(|| self.always.clone()).unwrap_or(UpstreamReply::Respond {
            status: 503,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"no healthy upstream".to_vec(),
            latency_ms: 1,
        })
    }
}

/// One `proxy_http_call` the plugin made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub vm: usize,
    pub context_id: u32,
    pub token: u32,
    pub cluster: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
    pub at_ms: u64,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the host will deliver later, on the test clock.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    HttpCallDone { vm: usize, context_id: u32, token: u32, response: Option<(Headers, Vec<u8>)> },
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

    fn next_cas(&mut self) -> u32 {
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

    fn stream(&mut self) -> Option<&mut Stream> {
        let id = self.effective;
        self.streams.get_mut(&id)
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic, good enough for ids and seeds.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn property(&self, path: &str) -> Option<Vec<u8>> {
        if let Some(stream) = self.streams.get(&self.effective) {
            if let Some(v) = stream.properties.get(path) {
                return Some(v.clone());
            }
            if let Some(v) = request_property(stream, path) {
                return Some(v);
            }
        }
        if self.effective == self.root_id
            && let Some(v) = self.root_properties.get(path)
        {
            return Some(v.clone());
        }
        self.plugin_properties.get(path).cloned()
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

/// The request properties Envoy derives from the headers (`request.path`, `request.method`...).
fn request_property(stream: &Stream, path: &str) -> Option<Vec<u8>> {
    let header =
        |name: &str| stream.request_headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone().into_bytes());
    match path {
        "request.path" => header(":path"),
        "request.url_path" => header(":path").map(|p| p.split(|&b| b == b'?').next().unwrap_or(&[]).to_vec()),
        "request.method" => header(":method"),
        "request.host" => header(":authority"),
        "request.scheme" => header(":scheme"),
        "response.code" => stream
            .response_headers
            .as_ref()
            .and_then(|h| h.iter().find(|(k, _)| k == ":status"))
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map(|code| code.to_le_bytes().to_vec()),
        _ => None,
    }
}

type Ctx<'a> = Caller<'a, HostState>;

fn memory(caller: &mut Ctx<'_>) -> Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(Error::msg("the module exports no memory named \"memory\"")),
    }
}

/// Reads guest memory; `None` when the range is outside it (the caller answers INVALID_MEMORY_ACCESS).
fn read(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Option<Vec<u8>>> {
    let memory = memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    Ok(start.checked_add(len).and_then(|end| memory.data(&*caller).get(start..end)).map(<[u8]>::to_vec))
}

fn read_string(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Option<String>> {
    Ok(read(caller, ptr, len)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<bool> {
    let memory = memory(caller)?;
    Ok(memory.write(&mut *caller, ptr as u32 as usize, bytes).is_ok())
}

fn write_u32(caller: &mut Ctx<'_>, ptr: i32, value: u32) -> Result<bool> {
    write(caller, ptr, &value.to_le_bytes())
}

fn write_u64(caller: &mut Ctx<'_>, ptr: i32, value: u64) -> Result<bool> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Allocates `bytes.len()` in the guest (`proxy_on_memory_allocate`, else `malloc`), copies the
/// bytes there and writes pointer and size to the return slots. Empty data writes a null pointer
/// and size 0 without allocating, as proxy-wasm-cpp-host does.
fn copy_out(caller: &mut Ctx<'_>, bytes: &[u8], ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
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
fn refuse_on_service_extensions(caller: &Ctx<'_>, call: &str) -> Result<()> {
    if caller.data().shared.borrow().mode == HostMode::ServiceExtensions {
        return Err(Error::msg(format!(
            "{call}: not available on a Service Extensions host (no timers, shared data, shared queues, \
             metrics or outbound HTTP calls there); the plugin must not call it in that mode"
        )));
    }
    Ok(())
}

/// Property paths are segments separated by NUL; we key them joined with '.'.
fn property_key(bytes: &[u8]) -> String {
    bytes.split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect::<Vec<_>>().join(".")
}

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

fn is_writable(map: MapType) -> bool {
    matches!(
        map,
        MapType::HttpRequestHeaders
            | MapType::HttpRequestTrailers
            | MapType::HttpResponseHeaders
            | MapType::HttpResponseTrailers
    )
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

/// Every host function the harness implements, by (module, name).
pub(crate) fn link(linker: &mut Linker<HostState>, module: &Module) -> Result<()> {
    link_proxy(linker)?;
    link_wasi(linker)?;
    // Anything else the module imports traps with its own name when called.
    let mut missing = Vec::new();
    for import in module.imports() {
        if let wasmtime::ExternType::Func(ty) = import.ty()
            && !IMPLEMENTED.contains(&(import.module(), import.name()))
        {
            missing.push((import.module().to_string(), import.name().to_string(), ty));
        }
    }
    for (module_name, name, ty) in missing {
        let call = format!("{module_name}.{name}");
        linker.func_new(&module_name, &name, ty, move |_, _, _| {
            Err(Error::msg(format!("{call}: the plugin called a host function the test harness does not implement")))
        })?;
    }
    Ok(())
}

const IMPLEMENTED: &[(&str, &str)] = &[
    ("env", "proxy_log"),
    ("env", "proxy_get_log_level"),
    ("env", "proxy_get_current_time_nanoseconds"),
    ("env", "proxy_set_tick_period_milliseconds"),
    ("env", "proxy_get_buffer_bytes"),
    ("env", "proxy_get_buffer_status"),
    ("env", "proxy_set_buffer_bytes"),
    ("env", "proxy_get_header_map_pairs"),
    ("env", "proxy_get_header_map_size"),
    ("env", "proxy_set_header_map_pairs"),
    ("env", "proxy_get_header_map_value"),
    ("env", "proxy_add_header_map_value"),
    ("env", "proxy_replace_header_map_value"),
    ("env", "proxy_remove_header_map_value"),
    ("env", "proxy_get_property"),
    ("env", "proxy_set_property"),
    ("env", "proxy_send_local_response"),
    ("env", "proxy_get_shared_data"),
    ("env", "proxy_set_shared_data"),
    ("env", "proxy_register_shared_queue"),
    ("env", "proxy_resolve_shared_queue"),
    ("env", "proxy_enqueue_shared_queue"),
    ("env", "proxy_dequeue_shared_queue"),
    ("env", "proxy_http_call"),
    ("env", "proxy_define_metric"),
    ("env", "proxy_increment_metric"),
    ("env", "proxy_record_metric"),
    ("env", "proxy_get_metric"),
    ("env", "proxy_set_effective_context"),
    ("env", "proxy_continue_stream"),
    ("env", "proxy_close_stream"),
    ("env", "proxy_done"),
    ("env", "proxy_call_foreign_function"),
    ("wasi_snapshot_preview1", "fd_write"),
    ("wasi_snapshot_preview1", "clock_time_get"),
    ("wasi_snapshot_preview1", "random_get"),
    ("wasi_snapshot_preview1", "environ_get"),
    ("wasi_snapshot_preview1", "environ_sizes_get"),
    ("wasi_snapshot_preview1", "args_get"),
    ("wasi_snapshot_preview1", "args_sizes_get"),
    ("wasi_snapshot_preview1", "proc_exit"),
    ("wasi_snapshot_preview1", "sched_yield"),
];

fn link_proxy(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap("env", "proxy_log", |mut c: Ctx<'_>, level: i32, ptr: i32, len: i32| -> Result<i32> {
        let Some(level) = LogLevel::from_word(level) else { return Ok(status::BAD_ARGUMENT) };
        let Some(message) = read_string(&mut c, ptr, len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
        let vm = c.data().vm;
        c.data().shared.borrow_mut().log(vm, level, message);
        Ok(status::OK)
    })?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: Ctx<'_>, ret: i32| -> Result<i32> {
        let level = c.data().shared.borrow().log_level as u32;
        Ok(if write_u32(&mut c, ret, level)? { status::OK } else { status::INVALID_MEMORY_ACCESS })
    })?;
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", |mut c: Ctx<'_>, ret: i32| -> Result<i32> {
        let now = c.data().shared.borrow().now_ns;
        Ok(if write_u64(&mut c, ret, now)? { status::OK } else { status::INVALID_MEMORY_ACCESS })
    })?;
    linker.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut c: Ctx<'_>, period: i32| -> Result<i32> {
        refuse_on_service_extensions(&c, "proxy_set_tick_period_milliseconds")?;
        let now = c.data().shared.borrow().now_ns;
        let state = c.data_mut();
        state.tick_period_ms = period as u32;
        state.next_tick_ns = (period != 0).then(|| now + u64::from(period as u32) * 1_000_000);
        Ok(status::OK)
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>, buffer: i32, start: i32, max: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32> {
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
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: Ctx<'_>, buffer: i32, size_ptr: i32, flags_ptr: i32| -> Result<i32> {
            let Some(kind) = BufferType::from_word(buffer) else { return Ok(status::BAD_ARGUMENT) };
            let Some(len) = buffer_ref(c.data_mut(), kind).map(|b| b.len()) else { return Ok(status::NOT_FOUND) };
            let ok = write_u32(&mut c, size_ptr, len as u32)? && write_u32(&mut c, flags_ptr, 0)?;
            Ok(if ok { status::OK } else { status::INVALID_MEMORY_ACCESS })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Ctx<'_>, buffer: i32, start: i32, size: i32, ptr: i32, len: i32| -> Result<i32> {
            let Some(kind) = BufferType::from_word(buffer) else { return Ok(status::BAD_ARGUMENT) };
            let Some(value) = read(&mut c, ptr, len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
            let writable = matches!(kind, BufferType::HttpRequestBody | BufferType::HttpResponseBody);
            let Some(data) = buffer_ref(c.data_mut(), kind) else { return Ok(status::NOT_FOUND) };
            if !writable {
                return Ok(status::BAD_ARGUMENT);
            }
            let (start, size) = (start as u32 as usize, size as u32 as usize);
            // Envoy's Buffer::copyFrom: replace a prefix (start 0) or append (start ≥ length); an
            // edit in the middle is refused.
            if start == 0 {
                data.drain(..size.min(data.len()));
                data.splice(0..0, value);
            } else if start >= data.len() {
                data.extend_from_slice(&value);
            } else {
                return Ok(status::BAD_ARGUMENT);
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32> {
            let Some(map) = MapType::from_word(map) else { return Ok(status::BAD_ARGUMENT) };
            let Some(pairs) = map_mut(c.data_mut(), map).map(|m| m.clone()) else { return Ok(status::BAD_ARGUMENT) };
            let bytes = if pairs.is_empty() { Vec::new() } else { abi::serialize_map(&pairs) };
            copy_out(&mut c, &bytes, ptr_ptr, size_ptr)
        },
    )?;
    linker.func_wrap("env", "proxy_get_header_map_size", |mut c: Ctx<'_>, map: i32, size_ptr: i32| -> Result<i32> {
        let Some(map) = MapType::from_word(map) else { return Ok(status::BAD_ARGUMENT) };
        let Some(size) = map_mut(c.data_mut(), map).map(|m| abi::serialize_map(m).len()) else {
            return Ok(status::BAD_ARGUMENT);
        };
        Ok(if write_u32(&mut c, size_ptr, size as u32)? { status::OK } else { status::INVALID_MEMORY_ACCESS })
    })?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ptr: i32, len: i32| -> Result<i32> {
            let Some(map) = MapType::from_word(map).filter(|m| is_writable(*m)) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(bytes) = read(&mut c, ptr, len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
            let pairs =
                abi::deserialize_map(&bytes).map_err(|e| Error::msg(format!("proxy_set_header_map_pairs: {e}")))?;
            let Some(target) = map_mut(c.data_mut(), map) else { return Ok(status::BAD_ARGUMENT) };
            *target = pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, map: i32, key_ptr: i32, key_len: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32> {
            let Some(map) = MapType::from_word(map) else { return Ok(status::BAD_ARGUMENT) };
            let Some(key) = read_string(&mut c, key_ptr, key_len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
            let key = key.to_ascii_lowercase();
            let Some(headers) = map_mut(c.data_mut(), map) else { return Ok(status::BAD_ARGUMENT) };
            let Some(value) = headers.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()) else {
                return Ok(status::NOT_FOUND);
            };
            copy_out(&mut c, value.as_bytes(), ptr_ptr, size_ptr)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Ctx<'_>, map: i32, key_ptr: i32, key_len: i32, ptr: i32, len: i32| -> Result<i32> {
            let Some(map) = MapType::from_word(map).filter(|m| is_writable(*m)) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let (Some(key), Some(value)) = (read_string(&mut c, key_ptr, key_len)?, read_string(&mut c, ptr, len)?)
            else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let Some(headers) = map_mut(c.data_mut(), map) else { return Ok(status::BAD_ARGUMENT) };
            headers.push((key.to_ascii_lowercase(), value));
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Ctx<'_>, map: i32, key_ptr: i32, key_len: i32, ptr: i32, len: i32| -> Result<i32> {
            let Some(map) = MapType::from_word(map).filter(|m| is_writable(*m)) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let (Some(key), Some(value)) = (read_string(&mut c, key_ptr, key_len)?, read_string(&mut c, ptr, len)?)
            else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let Some(headers) = map_mut(c.data_mut(), map) else { return Ok(status::BAD_ARGUMENT) };
            replace_header(headers, &key.to_ascii_lowercase(), &value);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_>, map: i32, key_ptr: i32, key_len: i32| -> Result<i32> {
            let Some(map) = MapType::from_word(map).filter(|m| is_writable(*m)) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(key) = read_string(&mut c, key_ptr, key_len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
            let key = key.to_ascii_lowercase();
            let Some(headers) = map_mut(c.data_mut(), map) else { return Ok(status::BAD_ARGUMENT) };
            // OK also when the key was absent (spec).
            headers.retain(|(k, _)| *k != key);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Ctx<'_>, path_ptr: i32, path_len: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32> {
            let Some(path) = read(&mut c, path_ptr, path_len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
            let Some(value) = c.data().property(&property_key(&path)) else { return Ok(status::NOT_FOUND) };
            copy_out(&mut c, &value, ptr_ptr, size_ptr)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Ctx<'_>, path_ptr: i32, path_len: i32, ptr: i32, len: i32| -> Result<i32> {
            let (Some(path), Some(value)) = (read(&mut c, path_ptr, path_len)?, read(&mut c, ptr, len)?) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let key = property_key(&path);
            let state = c.data_mut();
            let (root, effective) = (state.root_id, state.effective);
            if let Some(stream) = state.streams.get_mut(&effective) {
                stream.properties.insert(key, value);
            } else if effective == root {
                state.root_properties.insert(key, value);
            } else {
                return Ok(status::NOT_FOUND);
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Ctx<'_>,
         code: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         grpc_status: i32|
         -> Result<i32> {
            let (Some(details), Some(body), Some(headers)) = (
                read_string(&mut c, details_ptr, details_len)?,
                read(&mut c, body_ptr, body_len)?,
                read(&mut c, headers_ptr, headers_len)?,
            ) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let headers = abi::deserialize_map(&headers)
                .map_err(|e| Error::msg(format!("proxy_send_local_response: headers: {e}")))?;
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
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Ctx<'_>, key_ptr: i32, key_len: i32, ptr_ptr: i32, size_ptr: i32, cas_ptr: i32| -> Result<i32> {
            refuse_on_service_extensions(&c, "proxy_get_shared_data")?;
            let Some(key) = read_string(&mut c, key_ptr, key_len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
            let Some((value, cas)) = c.data().shared.borrow().shared_data.get(&key).cloned() else {
                return Ok(status::NOT_FOUND);
            };
            if !write_u32(&mut c, cas_ptr, cas)? {
                return Ok(status::INVALID_MEMORY_ACCESS);
            }
            copy_out(&mut c, &value, ptr_ptr, size_ptr)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Ctx<'_>, key_ptr: i32, key_len: i32, ptr: i32, len: i32, cas: i32| -> Result<i32> {
            refuse_on_service_extensions(&c, "proxy_set_shared_data")?;
            let (Some(key), Some(value)) = (read_string(&mut c, key_ptr, key_len)?, read(&mut c, ptr, len)?) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let mut shared = c.data().shared.borrow_mut();
            let cas = cas as u32;
            // Envoy: a non-zero CAS must match the key's current one; a new key ignores the CAS.
            if let Some((_, current)) = shared.shared_data.get(&key)
                && cas != 0
                && cas != *current
            {
                return Ok(status::CAS_MISMATCH);
            }
            let next = shared.next_cas();
            shared.shared_data.insert(key, (value, next));
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Ctx<'_>, name_ptr: i32, name_len: i32, id_ptr: i32| -> Result<i32> {
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
            Ok(if write_u32(&mut c, id_ptr, id as u32 + 1)? { status::OK } else { status::INVALID_MEMORY_ACCESS })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_>, vm_ptr: i32, vm_len: i32, name_ptr: i32, name_len: i32, id_ptr: i32| -> Result<i32> {
            refuse_on_service_extensions(&c, "proxy_resolve_shared_queue")?;
            let (Some(vm_id), Some(name)) =
                (read_string(&mut c, vm_ptr, vm_len)?, read_string(&mut c, name_ptr, name_len)?)
            else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let found = {
                let shared = c.data().shared.borrow();
                let vm_id = if vm_id.is_empty() { shared.vm_id.clone() } else { vm_id };
                shared.queues.iter().position(|q| q.vm_id == vm_id && q.name == name)
            };
            let Some(i) = found else { return Ok(status::NOT_FOUND) };
            Ok(if write_u32(&mut c, id_ptr, i as u32 + 1)? { status::OK } else { status::INVALID_MEMORY_ACCESS })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: Ctx<'_>, id: i32, ptr: i32, len: i32| -> Result<i32> {
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
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Ctx<'_>, id: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32> {
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
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Ctx<'_>,
         up_ptr: i32,
         up_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         body_ptr: i32,
         body_len: i32,
         trailers_ptr: i32,
         trailers_len: i32,
         timeout_ms: i32,
         token_ptr: i32|
         -> Result<i32> {
            refuse_on_service_extensions(&c, "proxy_http_call")?;
            let (Some(cluster), Some(headers), Some(body), Some(_trailers)) = (
                read_string(&mut c, up_ptr, up_len)?,
                read(&mut c, headers_ptr, headers_len)?,
                read(&mut c, body_ptr, body_len)?,
                read(&mut c, trailers_ptr, trailers_len)?,
            ) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let headers: Headers = abi::deserialize_map(&headers)
                .map_err(|e| Error::msg(format!("proxy_http_call: headers: {e}")))?
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            // Envoy: an unknown cluster, or a request without :method, :path or :authority, is a bad argument.
            let has = |name: &str| headers.iter().any(|(k, _)| k == name);
            if !has(":method") || !has(":path") || !has(":authority") {
                return Ok(status::BAD_ARGUMENT);
            }
            let (vm, context_id) = (c.data().vm, c.data().effective);
            let token = c.data().next_token;
            {
                let mut shared = c.data().shared.borrow_mut();
                let now = shared.now_ns;
                let Some(script) = shared.clusters.get_mut(&cluster) else { return Ok(status::BAD_ARGUMENT) };
                let reply = script.next_reply();
                let timeout_ns = (timeout_ms != 0).then(|| u64::from(timeout_ms as u32) * 1_000_000);
                let timed_out = || {
                    let body = b"upstream request timeout".to_vec();
                    let headers = vec![
                        (":status".to_string(), "504".to_string()),
                        ("content-type".to_string(), "text/plain".to_string()),
                        ("content-length".to_string(), body.len().to_string()),
                    ];
                    Some((headers, body))
                };
                let (after_ns, response) = match reply {
                    UpstreamReply::Respond { status, headers: mut reply_headers, body, latency_ms } => {
                        let latency = latency_ms * 1_000_000;
                        match timeout_ns {
                            Some(t) if latency >= t => (t, timed_out()),
                            _ => {
                                reply_headers.insert(0, (":status".to_string(), status.to_string()));
                                if !body.is_empty() {
                                    reply_headers.push(("content-length".to_string(), body.len().to_string()));
                                }
                                (latency, Some((reply_headers, body)))
                            }
                        }
                    }
                    // Without a timeout a hanging upstream never answers.
                    UpstreamReply::Hang => match timeout_ns {
                        Some(t) => (t, timed_out()),
                        None => (u64::MAX - now, None),
                    },
                    UpstreamReply::Reset { after_ms } => (after_ms * 1_000_000, None),
                };
                let at_ms = shared.now_ms();
                shared.http_calls.push(HttpCall {
                    vm,
                    context_id,
                    token,
                    cluster,
                    headers,
                    body,
                    timeout_ms: timeout_ms as u32,
                    at_ms,
                });
                if after_ns != u64::MAX - now {
                    shared.schedule(now + after_ns, Event::HttpCallDone { vm, context_id, token, response });
                }
            }
            c.data_mut().next_token = token.wrapping_add(1).max(1);
            Ok(if write_u32(&mut c, token_ptr, token)? { status::OK } else { status::INVALID_MEMORY_ACCESS })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Ctx<'_>, kind: i32, name_ptr: i32, name_len: i32, id_ptr: i32| -> Result<i32> {
            refuse_on_service_extensions(&c, "proxy_define_metric")?;
            let Some(kind) = MetricKind::from_word(kind) else { return Ok(status::BAD_ARGUMENT) };
            let Some(name) = read_string(&mut c, name_ptr, name_len)? else { return Ok(status::INVALID_MEMORY_ACCESS) };
            {
                let mut shared = c.data().shared.borrow_mut();
                let metric =
                    shared.metrics.entry(name.clone()).or_insert(Metric { kind, value: 0, samples: Vec::new() });
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
            Ok(if write_u32(&mut c, id_ptr, id)? { status::OK } else { status::INVALID_MEMORY_ACCESS })
        },
    )?;
    linker.func_wrap("env", "proxy_increment_metric", |c: Ctx<'_>, id: i32, delta: i64| -> Result<i32> {
        refuse_on_service_extensions(&c, "proxy_increment_metric")?;
        let Some(name) = c.data().metric_ids.get(&(id as u32)).cloned() else { return Ok(status::NOT_FOUND) };
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
    })?;
    linker.func_wrap("env", "proxy_record_metric", |c: Ctx<'_>, id: i32, value: i64| -> Result<i32> {
        refuse_on_service_extensions(&c, "proxy_record_metric")?;
        let Some(name) = c.data().metric_ids.get(&(id as u32)).cloned() else { return Ok(status::NOT_FOUND) };
        let mut shared = c.data().shared.borrow_mut();
        let Some(metric) = shared.metrics.get_mut(&name) else { return Ok(status::NOT_FOUND) };
        match metric.kind {
            MetricKind::Histogram => metric.samples.push(value as u64),
            _ => metric.value = value,
        }
        Ok(status::OK)
    })?;
    linker.func_wrap("env", "proxy_get_metric", |mut c: Ctx<'_>, id: i32, ret: i32| -> Result<i32> {
        refuse_on_service_extensions(&c, "proxy_get_metric")?;
        let Some(name) = c.data().metric_ids.get(&(id as u32)).cloned() else { return Ok(status::NOT_FOUND) };
        let value = match c.data().shared.borrow().metrics.get(&name) {
            Some(m) if m.kind != MetricKind::Histogram => m.value as u64,
            Some(_) => return Ok(status::BAD_ARGUMENT),
            None => return Ok(status::NOT_FOUND),
        };
        Ok(if write_u64(&mut c, ret, value)? { status::OK } else { status::INVALID_MEMORY_ACCESS })
    })?;
    linker.func_wrap("env", "proxy_set_effective_context", |mut c: Ctx<'_>, id: i32| -> Result<i32> {
        let id = id as u32;
        let state = c.data_mut();
        if id != state.root_id && !state.streams.contains_key(&id) {
            return Ok(status::BAD_ARGUMENT);
        }
        state.effective = id;
        Ok(status::OK)
    })?;
    linker.func_wrap("env", "proxy_continue_stream", |mut c: Ctx<'_>, stream_type: i32| -> Result<i32> {
        let Some(stream) = c.data_mut().stream() else { return Ok(status::BAD_ARGUMENT) };
        match stream_type {
            0 => stream.continue_request = true,
            1 => stream.continue_response = true,
            2 | 3 => return Ok(status::UNIMPLEMENTED),
            _ => return Ok(status::BAD_ARGUMENT),
        }
        Ok(status::OK)
    })?;
    linker.func_wrap("env", "proxy_close_stream", |mut c: Ctx<'_>, stream_type: i32| -> Result<i32> {
        let Some(stream) = c.data_mut().stream() else { return Ok(status::BAD_ARGUMENT) };
        match stream_type {
            0 | 1 => stream.close_requested = true,
            2 | 3 => return Ok(status::UNIMPLEMENTED),
            _ => return Ok(status::BAD_ARGUMENT),
        }
        Ok(status::OK)
    })?;
    linker.func_wrap("env", "proxy_done", |mut c: Ctx<'_>| -> Result<i32> {
        match c.data_mut().stream() {
            Some(stream) if stream.done_pending => {
                stream.done_pending = false;
                stream.done_called = true;
                Ok(status::OK)
            }
            _ => Ok(status::NOT_FOUND),
        }
    })?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_c: Ctx<'_>, _n: i32, _nl: i32, _a: i32, _al: i32, _rp: i32, _rs: i32| -> Result<i32> {
            // No foreign functions are registered on this host.
            Ok(status::NOT_FOUND)
        },
    )?;
    Ok(())
}

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

fn link_wasi(linker: &mut Linker<HostState>) -> Result<()> {
    const WASI: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, count: i32, written_ptr: i32| -> Result<i32> {
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
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Ctx<'_>, clock: i32, _precision: i64, ret: i32| -> Result<i32> {
            // Realtime and monotonic both read the test clock.
            if clock != 0 && clock != 1 {
                return Ok(errno::NOTSUP);
            }
            let now = c.data().shared.borrow().now_ns;
            Ok(if write_u64(&mut c, ret, now)? { errno::SUCCESS } else { errno::FAULT })
        },
    )?;
    linker.func_wrap(WASI, "random_get", |mut c: Ctx<'_>, ptr: i32, len: i32| -> Result<i32> {
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
    })?;
    // No environment, no arguments (the spec discourages exposing the host's).
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(WASI, name, |mut c: Ctx<'_>, count_ptr: i32, size_ptr: i32| -> Result<i32> {
            let ok = write_u32(&mut c, count_ptr, 0)? && write_u32(&mut c, size_ptr, 0)?;
            Ok(if ok { errno::SUCCESS } else { errno::FAULT })
        })?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(WASI, name, |_c: Ctx<'_>, _array: i32, _buffer: i32| -> Result<i32> { Ok(errno::SUCCESS) })?;
    }
    linker.func_wrap(WASI, "proc_exit", |mut c: Ctx<'_>, code: i32| -> Result<()> {
        c.data_mut().flush_output(true);
        Err(Error::msg(format!("wasi proc_exit({code}): the plugin exited its VM")))
    })?;
    linker.func_wrap(WASI, "sched_yield", |_c: Ctx<'_>| -> Result<i32> { Ok(errno::SUCCESS) })?;
    Ok(())
}
