//! Per-request cost of the plugin inside wasmtime: request headers + body + scheduling decision
//! (context creation, `proxy_on_request_headers`, `proxy_on_request_body` with the whole body,
//! every host call they make), for pools of 16, 256 and 1,024 endpoints and prompts of 1K and 16K
//! characters. The response side (headers, body, log, done, delete) runs after each timed request,
//! untimed, so in-flight counts stay level.
//!
//! Run: `./build.sh && cargo bench -p host-tests --bench per_request` (the `.wasm` is found as the
//! tests find it). `-- --table-only` skips Criterion and prints only the table. Nothing here asserts
//! a time.

use criterion::{Criterion, criterion_group};
use host_tests::wis::{self, CHAT, MODEL};
use host_tests::{Envoy, Exchange, UpstreamReply};
use serde_json::json;
use std::time::{Duration, Instant};

const POOLS: [usize; 3] = [16, 256, 1024];
const PROMPTS: [usize; 2] = [1024, 16 * 1024];
/// Distinct conversations cycled through, so the prefix index holds a realistic mix.
const CONVERSATIONS: usize = 64;
/// Requests timed per case for the table.
const TABLE_REQUESTS: u32 = 300;

struct Case {
    envoy: Envoy,
    bodies: Vec<String>,
    next: usize,
}

impl Case {
    fn new(endpoints: usize, prompt_chars: usize) -> Self {
        let config = wis::config_with_scraper(json!({"models": {"served": [MODEL]}}));
        let envoy = wis::envoy().workers(2).quiet().plugin_config(config).build().unwrap_or_else(|e| panic!("{e}"));
        let pool = wis::pods(endpoints);
        envoy.upstream("wis-scraper").always(UpstreamReply::json(200, wis::snapshot(1, envoy.now_ms(), &pool)));
        envoy.advance_ms(101);
        assert!(envoy.stat("wis.snapshot.fetch_ok") >= 1, "no snapshot fetched: {:?}", envoy.logs());
        let bodies = (0..CONVERSATIONS)
            .map(|i| {
                let system = format!("Conversation {i}: you answer questions about subject {i}. ");
                let system = system.repeat(prompt_chars / system.len() + 1);
                wis::chat(MODEL, &system[..prompt_chars.saturating_sub(40)], "What is the next step?").to_string()
            })
            .collect();
        let mut case = Self { envoy, bodies, next: 0 };
        // Warm every worker's prefix index and allocator.
        for _ in 0..CONVERSATIONS * 2 {
            let r = case.send();
            Self::finish(r);
        }
        case
    }

    /// One request through headers, body and decision, alternating workers.
    fn send(&mut self) -> Exchange {
        let body = &self.bodies[self.next % self.bodies.len()];
        let worker = self.next % 2;
        self.next += 1;
        let r = self.envoy.worker(worker).request(CHAT).body(body.clone()).send();
        assert!(!r.destinations().is_empty(), "no decision: {:?}", r.local_reply());
        r
    }

    fn finish(mut r: Exchange) {
        r.respond(200).body("{}").finish();
    }

    /// Total time of `n` timed requests.
    fn timed(&mut self, n: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..n {
            let started = Instant::now();
            let r = self.send();
            total += started.elapsed();
            Self::finish(r);
        }
        total
    }
}

fn per_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_request");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for endpoints in POOLS {
        for prompt in PROMPTS {
            let mut case = Case::new(endpoints, prompt);
            group.bench_function(format!("{endpoints}_endpoints/{}k_prompt", prompt / 1024), |b| {
                b.iter_custom(|iters| case.timed(iters))
            });
        }
    }
    group.finish();
}

fn table() {
    println!(
        "\nper-request cost inside wasmtime (headers + body + decision), {TABLE_REQUESTS} requests per case, 2 workers"
    );
    println!(
        "| endpoints | prompt chars | µs/request (mean) | µs/request (p50) | µs/request (p99) | shared data bytes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for endpoints in POOLS {
        for prompt in PROMPTS {
            let mut case = Case::new(endpoints, prompt);
            let mut samples: Vec<f64> = (0..TABLE_REQUESTS).map(|_| case.timed(1).as_secs_f64() * 1e6).collect();
            samples.sort_by(f64::total_cmp);
            let mean = samples.iter().sum::<f64>() / samples.len() as f64;
            let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
            println!(
                "| {endpoints} | {prompt} | {mean:.1} | {:.1} | {:.1} | {} |",
                at(0.5),
                at(0.99),
                case.envoy.shared_data_bytes()
            );
        }
    }
}

criterion_group!(benches, per_request);

fn main() {
    let table_only = std::env::args().any(|a| a == "--table-only");
    // `cargo test --benches` runs this binary with `--bench` absent: keep that quick.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if !table_only && benchmarking {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if table_only || benchmarking {
        table();
    }
}
