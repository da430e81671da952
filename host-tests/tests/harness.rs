//! The harness tested on a hand-written filter (`tests/wat/probe.wat`), before anyone trusts it
//! with the real plugin.

use host_tests::{Envoy, EnvoyBuilder, UpstreamReply};

fn probe() -> EnvoyBuilder {
    let wasm = wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wat/probe.wat")).expect("probe.wat parses");
    Envoy::new().wasm_bytes(wasm).plugin_config("probe-config").cluster("up")
}

#[test]
fn the_vm_starts_like_envoy_starts_it_and_reads_its_configuration() {
    let envoy = probe().workers(2).build().unwrap();
    assert_eq!(envoy.logs_containing("probe-config").len(), 2, "each worker's on_configure read the configuration");
    assert_eq!(envoy.tick_period_ms(0), 10);
    assert_eq!(envoy.tick_period_ms(1), 10);
}

#[test]
fn a_refused_configuration_fails_the_build_with_the_plugin_log() {
    let error = probe().plugin_config("reject").build().err().expect("configuration refused");
    assert!(error.0.contains("proxy_on_configure returned false"), "{error}");
    assert!(error.0.contains("reject"), "the plugin's log is in the error: {error}");
}

#[test]
fn headers_set_and_removed_in_the_filter_reach_the_upstream() {
    let envoy = probe().build().unwrap();
    let r = envoy.worker(0).request("/any").header("x-remove-me", "a").header("x-remove-me", "b").body("hi").send();
    r.assert_forwarded();
    assert_eq!(r.upstream_header("x-seen").as_deref(), Some("1"));
    assert!(r.upstream_header_values("x-remove-me").is_empty());
}

#[test]
fn body_chunks_accumulate_while_the_filter_pauses_and_it_sees_the_whole_body() {
    let envoy = probe().build().unwrap();
    let r = envoy.worker(0).request("/any").body("hello wide world").chunked(3).send();
    assert_eq!(r.upstream_header("x-body").as_deref(), Some("hello wide world"));
    assert_eq!(r.upstream_body(), b"hello wide world", "the buffered body went upstream once, whole");
    let body_calls = r.callbacks().iter().filter(|c| *c == "proxy_on_request_body").count();
    assert_eq!(body_calls, 6, "one call per chunk: {:?}", r.callbacks());
}

#[test]
fn set_buffer_bytes_at_zero_prepends_to_the_body() {
    let envoy = probe().build().unwrap();
    let r = envoy.worker(0).request("/any").body("prepend").send();
    assert_eq!(r.upstream_body(), b">>prepend");
}

#[test]
fn a_local_reply_goes_through_the_response_callbacks_and_ends_the_stream() {
    let envoy = probe().build().unwrap();
    let r = envoy.worker(0).request("/any").body("reply").send();
    let reply = r.local_reply().expect("local reply");
    assert_eq!((reply.status, reply.body.as_slice()), (418, b"teapot".as_slice()));
    assert!(!r.forwarded());
    let client = r.client_response().expect("client got the reply");
    assert_eq!(client.status, 418);
    assert_eq!(client.body, b"teapot");
    assert_eq!(
        r.callbacks(),
        [
            "proxy_on_request_headers",
            "proxy_on_request_body",
            "proxy_on_response_headers",
            "proxy_on_response_body",
            "proxy_on_log",
            "proxy_on_done",
            "proxy_on_delete"
        ]
    );
    assert!(r.ended());
    assert_eq!(envoy.live_streams(0), 0);
}

#[test]
fn a_stale_compare_and_swap_fails_with_cas_mismatch() {
    let envoy = probe().build().unwrap();
    let r = envoy.worker(0).request("/any").body("cas").send();
    // statuses: set without CAS OK (0), set with current CAS OK (0), set with the stale CAS CasMismatch (8).
    assert_eq!(r.upstream_header("x-cas").as_deref(), Some("008"));
    assert_eq!(envoy.shared_data()["k"].0, b"v2");
}

#[test]
fn shared_data_is_one_store_for_every_worker() {
    let envoy = probe().workers(2).build().unwrap();
    envoy.worker(0).request("/any").body("cas").send();
    let cas_after_first = envoy.shared_data()["k"].1;
    // The second worker's CAS-less write succeeds and moves the CAS on; its CAS write from its own
    // read succeeds; its stale one fails.
    let r = envoy.worker(1).request("/any").body("cas").send();
    assert_eq!(r.upstream_header("x-cas").as_deref(), Some("008"));
    assert!(envoy.shared_data()["k"].1 > cas_after_first);
}

#[test]
fn ticks_fire_on_the_test_clock_and_call_answers_arrive_after_their_latency() {
    let envoy = probe().workers(2).build().unwrap();
    envoy.upstream("up").always(UpstreamReply::json(200, "pong").latency_ms(3));
    envoy.advance_ms(9);
    assert!(envoy.http_calls().is_empty(), "no tick before 10 ms");
    envoy.advance_ms(1);
    let calls = envoy.http_calls();
    assert_eq!(calls.len(), 2, "one call per worker's tick: {calls:?}");
    assert_eq!(calls[0].header(":path"), Some("/x"));
    assert_eq!(calls[0].timeout_ms, 100);
    assert!(!envoy.shared_data().contains_key("last-call"), "the answer takes 3 ms");
    envoy.advance_ms(3);
    assert_eq!(envoy.shared_data()["last-call"].0, b"pong");
    // :status, content-type, content-length
    assert_eq!(envoy.shared_data()["call-headers"].0, [3]);
    envoy.advance_ms(20);
    assert_eq!(envoy.http_calls().len(), 6, "ticks keep their period");
}

#[test]
fn a_hanging_upstream_times_out_with_a_504_from_envoy() {
    let envoy = probe().build().unwrap();
    envoy.upstream("up").always(UpstreamReply::Hang);
    envoy.advance_ms(109);
    assert!(!envoy.shared_data().contains_key("last-call"), "the first call (at 10 ms) times out at 110 ms");
    envoy.advance_ms(1);
    assert_eq!(envoy.shared_data()["last-call"].0, b"upstream request timeout");
    assert_eq!(envoy.shared_data()["call-headers"].0, [3], ":status, content-type, content-length");
}

#[test]
fn a_reset_call_reports_zero_headers() {
    let envoy = probe().build().unwrap();
    envoy.upstream("up").always(UpstreamReply::Reset { after_ms: 1 });
    envoy.advance_ms(11);
    assert_eq!(envoy.shared_data()["call-headers"].0, [0]);
    assert_eq!(envoy.shared_data()["last-call"].0, b"", "no body either");
}

#[test]
fn a_cluster_with_nothing_scripted_answers_503() {
    let envoy = probe().build().unwrap();
    envoy.advance_ms(11);
    assert_eq!(envoy.shared_data()["last-call"].0, b"no healthy upstream");
}

#[test]
fn metrics_are_one_per_name_across_workers() {
    let envoy = probe().workers(2).build().unwrap();
    envoy.worker(0).request("/any").body("metric").send();
    envoy.worker(1).request("/any").body("metric").send();
    assert_eq!(envoy.stat("hits"), 10);
}

#[test]
fn a_call_the_harness_does_not_implement_fails_with_its_name() {
    let envoy = probe().build().unwrap();
    let error = envoy.worker(0).request("/any").body("unimpl").try_send().err().expect("trap");
    assert!(error.0.contains("proxy_grpc_cancel"), "{error}");
    assert!(error.0.contains("does not implement"), "{error}");
}

#[test]
fn a_trap_carries_the_plugin_stderr_and_the_vm_stays_crashed() {
    let envoy = probe().build().unwrap();
    let error = envoy.worker(0).request("/any").body("panic").try_send().err().expect("trap");
    assert!(error.0.contains("boom"), "{error}");
    let again = envoy.worker(0).request("/any").body("hi").try_send().err().expect("crashed VM");
    assert!(again.0.contains("crashed earlier"), "{again}");
}

#[test]
fn service_extensions_refuses_timers_by_name() {
    let error = probe().service_extensions().build().err().expect("refused");
    assert!(error.0.contains("proxy_set_tick_period_milliseconds"), "{error}");
    assert!(error.0.contains("Service Extensions"), "{error}");
}

#[test]
fn a_reset_stream_gets_log_done_delete_and_no_response_callbacks() {
    let envoy = probe().build().unwrap();
    let mut r = envoy.worker(0).request("/any").body("hi").send();
    r.reset();
    assert!(r.was_reset() && r.ended());
    assert_eq!(
        r.callbacks(),
        ["proxy_on_request_headers", "proxy_on_request_body", "proxy_on_log", "proxy_on_done", "proxy_on_delete"]
    );
}

#[test]
fn a_response_runs_through_the_filter_to_the_client() {
    let envoy = probe().build().unwrap();
    let mut r = envoy.worker(0).request("/any").body("hi").send();
    let client = r.respond(200).header("x-up", "1").body_chunks(["a", "b", "c"]).finish();
    assert_eq!(client.status, 200);
    assert_eq!(client.body, b"abc");
    assert_eq!(client.header("x-up"), Some("1"));
    assert!(client.complete);
    let body_calls = r.callbacks().iter().filter(|c| *c == "proxy_on_response_body").count();
    assert_eq!(body_calls, 3);
}

#[test]
fn envoy_answers_413_itself_when_a_paused_body_outgrows_its_buffer_limit() {
    let envoy = probe().request_buffer_limit(4).build().unwrap();
    let r = envoy.worker(0).request("/any").body("hello wide world").chunked(3).send();
    let reply = r.local_reply().expect("Envoy's own reply");
    assert_eq!(reply.status, 413);
    assert!(reply.from_host);
    assert!(!r.forwarded());
}

#[test]
fn a_missing_wasm_file_is_a_clear_error() {
    let error = Envoy::new().wasm_file("/nonexistent/plugin.wasm").build().err().expect("no file");
    assert!(error.0.contains("/nonexistent/plugin.wasm"), "{error}");
}

/// A filter whose `proxy_on_configure` probes calls whose answers are statuses, and a shared queue.
const CALLS_WAT: &str = r#"
(module
  (import "env" "proxy_set_effective_context" (func $set_effective (param i32) (result i32)))
  (import "env" "proxy_done" (func $done (result i32)))
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_log_level" (func $get_log_level (param i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue" (func $resolve (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (data (i32.const 0) "plugin_name")
  (data (i32.const 16) "nope")
  (data (i32.const 32) "q")
  (data (i32.const 48) "item")
  (data (i32.const 64) "statuses")
  (data (i32.const 80) "prop")
  (data (i32.const 96) "dequeued")
  (data (i32.const 112) "missing")
  (data (i32.const 128) "after")
  (func (export "_initialize"))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func $digit (param $at i32) (param $status i32)
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (local.get $status))))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param $ctx i32) (param $size i32) (result i32)
    (call $digit (i32.const 1024) (call $set_effective (i32.const 999)))
    (call $digit (i32.const 1025) (call $done))
    (call $digit (i32.const 1026) (call $foreign (i32.const 16) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 2048) (i32.const 2052)))
    (call $digit (i32.const 1027) (call $get_property (i32.const 0) (i32.const 11) (i32.const 2048) (i32.const 2052)))
    (drop (call $set_shared (i32.const 80) (i32.const 4) (i32.load (i32.const 2048)) (i32.load (i32.const 2052)) (i32.const 0)))
    (call $digit (i32.const 1028) (call $get_property (i32.const 16) (i32.const 4) (i32.const 2048) (i32.const 2052)))
    (call $digit (i32.const 1029) (call $get_log_level (i32.const 2056)))
    (call $digit (i32.const 1030) (i32.load (i32.const 2056)))
    (call $digit (i32.const 1031) (call $register (i32.const 32) (i32.const 1) (i32.const 2060)))
    (call $digit (i32.const 1032) (call $resolve (i32.const 0) (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 2064)))
    (call $digit (i32.const 1033) (i32.eq (i32.load (i32.const 2060)) (i32.load (i32.const 2064))))
    (call $digit (i32.const 1034) (call $enqueue (i32.load (i32.const 2060)) (i32.const 48) (i32.const 4)))
    (call $digit (i32.const 1035) (call $get_shared (i32.const 112) (i32.const 7) (i32.const 2048) (i32.const 2052) (i32.const 2068)))
    (drop (call $set_shared (i32.const 64) (i32.const 8) (i32.const 1024) (i32.const 12) (i32.const 0)))
    (i32.const 1))
  ;; Takes the item, then finds the queue empty.
  (func (export "proxy_on_queue_ready") (param $ctx i32) (param $queue i32)
    (drop (call $dequeue (local.get $queue) (i32.const 2048) (i32.const 2052)))
    (drop (call $set_shared (i32.const 96) (i32.const 8) (i32.load (i32.const 2048)) (i32.load (i32.const 2052)) (i32.const 0)))
    (call $digit (i32.const 1100) (call $dequeue (local.get $queue) (i32.const 2048) (i32.const 2052)))
    (drop (call $set_shared (i32.const 128) (i32.const 5) (i32.const 1100) (i32.const 1) (i32.const 0)))))
"#;

#[test]
fn status_answers_and_shared_queues_follow_the_spec() {
    let envoy = Envoy::new().wasm_bytes(wat::parse_str(CALLS_WAT).unwrap()).plugin_name("probe").build().unwrap();
    let data = envoy.shared_data();
    let statuses = String::from_utf8(data["statuses"].0.clone()).unwrap();
    // set_effective_context(unknown) BadArgument 2; proxy_done outside a pending context NotFound 1;
    // foreign function NotFound 1; plugin_name OK 0; unknown property NotFound 1; log level OK 0
    // and Info 2; register OK; resolve OK; same id; enqueue OK; missing shared key NotFound 1.
    assert_eq!(statuses, "211010200101");
    assert_eq!(data["prop"].0, b"probe");
    assert_eq!(data["dequeued"].0, b"item", "proxy_on_queue_ready ran after the enqueue");
    assert_eq!(data["after"].0, b"7", "the second dequeue finds the queue Empty (7)");
}

#[test]
fn an_envoy_without_a_module_says_how_to_give_one() {
    let error = Envoy::new().build().err().expect("no module");
    assert!(error.0.contains("wasm_file"), "{error}");
}

/// A filter that records, on the response headers, the `upstream.address` property in shared data.
const UPSTREAM_WAT: &str = r#"
(module
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "upstream\00address")
  (data (i32.const 32) "upstream")
  (func (export "_initialize"))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (i32.eqz (call $get_property (i32.const 0) (i32.const 16) (i32.const 1024) (i32.const 1028)))
      (then (drop (call $set_shared (i32.const 32) (i32.const 8) (i32.load (i32.const 1024)) (i32.load (i32.const 1028)) (i32.const 0)))))
    (i32.const 0)))
"#;

#[test]
fn the_upstream_that_answers_is_the_first_one_the_override_host_header_named() {
    let wasm = wat::parse_str(UPSTREAM_WAT).unwrap();
    // Without an override-host header, a response has no upstream.address unless the story names one.
    let plain = Envoy::new().wasm_bytes(wasm.clone()).build().unwrap();
    plain.worker(0).request("/any").header("x-pick", "10.0.0.2:80").body("hi").send().respond(200).finish();
    assert!(!plain.shared_data().contains_key("upstream"), "{:?}", plain.shared_data());
    let envoy = Envoy::new().wasm_bytes(wasm).override_host_header("X-Pick").build().unwrap();
    let mut r = envoy.worker(0).request("/any").header("x-pick", "10.0.0.2:80, 10.0.0.3:80").body("hi").send();
    r.respond(200).finish();
    assert_eq!(envoy.shared_data()["upstream"].0, b"10.0.0.2:80");
    let mut r = envoy.worker(0).request("/any").header("x-pick", "10.0.0.2:80").body("hi").send();
    r.respond(200).from_upstream("10.0.0.9:80").finish();
    assert_eq!(envoy.shared_data()["upstream"].0, b"10.0.0.9:80", "the story's own choice wins");
}

/// A filter whose `proxy_on_vm_start` reads its environment through WASI, as wasi-libc does
/// (`environ_sizes_get`, then `environ_get` into buffers of those sizes), and leaves what it got
/// in shared data: the two sizes, the pointer array, the strings; and logs the strings.
const ENVIRON_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ (param i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "env-sizes")
  (data (i32.const 16) "env-pointers")
  (data (i32.const 32) "env-strings")
  (data (i32.const 48) "env-status")
  (func (export "_initialize"))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    ;; count at 1024, string bytes at 1028; pointers at 1100, strings at 2048.
    (i32.store8 (i32.const 1032) (i32.add (i32.const 48) (call $sizes (i32.const 1024) (i32.const 1028))))
    (i32.store8 (i32.const 1033) (i32.add (i32.const 48) (call $environ (i32.const 1100) (i32.const 2048))))
    (drop (call $set_shared (i32.const 0) (i32.const 9) (i32.const 1024) (i32.const 8) (i32.const 0)))
    (drop (call $set_shared (i32.const 48) (i32.const 10) (i32.const 1032) (i32.const 2) (i32.const 0)))
    (drop (call $set_shared (i32.const 16) (i32.const 12) (i32.const 1100)
      (i32.mul (i32.load (i32.const 1024)) (i32.const 4)) (i32.const 0)))
    (drop (call $set_shared (i32.const 32) (i32.const 11) (i32.const 2048) (i32.load (i32.const 1028)) (i32.const 0)))
    (drop (call $log (i32.const 2) (i32.const 2048) (i32.load (i32.const 1028))))
    (i32.const 1)))
"#;

fn environ_probe() -> EnvoyBuilder {
    Envoy::new().wasm_bytes(wat::parse_str(ENVIRON_WAT).unwrap())
}

/// Little-endian u32 words.
fn words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect()
}

#[test]
fn each_vm_reads_the_environment_variables_it_was_given_through_wasi() {
    let envoy = environ_probe().workers(2).env("WIS_B", "two").env("WIS_A", "1").env("WIS_A", "one").build().unwrap();
    let data = envoy.shared_data();
    assert_eq!(data["env-status"].0, b"00", "both calls succeed");
    // Two variables, 20 bytes of strings: "WIS_A=one\0" and "WIS_B=two\0", in key order.
    assert_eq!(words(&data["env-sizes"].0), [2, 20]);
    assert_eq!(data["env-strings"].0, b"WIS_A=one\0WIS_B=two\0");
    assert_eq!(words(&data["env-pointers"].0), [2048, 2058], "each pointer is its string's start");
    assert_eq!(envoy.logs_containing("WIS_A=one").len(), 2, "every worker's VM has the environment");
}

#[test]
fn a_vm_given_no_environment_sees_none_not_the_test_process_environment() {
    let envoy = environ_probe().build().unwrap();
    let data = envoy.shared_data();
    assert_eq!(data["env-status"].0, b"00");
    assert_eq!(words(&data["env-sizes"].0), [0, 0]);
    assert_eq!(data["env-strings"].0, b"");
}

#[test]
fn host_env_keys_copy_what_the_test_process_has_and_skip_what_it_lacks() {
    // Cargo sets CARGO_MANIFEST_DIR for the tests it runs.
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo runs the tests");
    let envoy = environ_probe()
        .host_env("CARGO_MANIFEST_DIR")
        .host_env("WIS_HOST_TESTS_NEVER_SET")
        .env("WIS_A", "1")
        .build()
        .unwrap();
    let expected = format!("CARGO_MANIFEST_DIR={dir}\0WIS_A=1\0");
    assert_eq!(envoy.shared_data()["env-strings"].0, expected.as_bytes());
    let error = environ_probe().env("WIS_A", "1").host_env("WIS_A").build().err().expect("a key given twice");
    assert!(error.0.contains("WIS_A") && error.0.contains("host_env_keys"), "{error}");
}
