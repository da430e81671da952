//! Per-request cost of the plugin inside wasmtime: request headers + body + scheduling decision
//! (context creation, `proxy_on_request_headers`, `proxy_on_request_body` with the whole body,
//! every host call they make), for pools of 16 to 4,096 endpoints and prompts of 1K, 16K and
//! 400,000 characters. The response side (headers, body, log, done, delete) runs after each timed
//! request, untimed, so in-flight counts stay level.
//!
//! Run: `./build.sh && cargo bench -p host-tests --bench per_request` (the `.wasm` is found as the
//! tests find it). `-- --table-only` skips Criterion and prints only the table. Nothing here asserts
//! a time.
//!
//! - `WIS_HOST_BENCH_QUICK=1`: short warm-up and measurement (Criterion and the table), so
//!   `./build.sh bench` runs every case in about a minute.
//! - `WIS_HOST_BENCH_JSON=<path>`: the table's rows also go to that file, as a JSON list of
//!   `{"endpoints": N, "prompt_chars": N, "us_per_request": X, "shared_bytes": N}` (`us_per_request`
//!   is the median; a case the plugin could not be set up for is left out and said on stderr).

use criterion::{Criterion, criterion_group};
use host_tests::wis::{self, CHAT, MODEL};
use host_tests::{Envoy, Exchange};
use serde_json::json;
use std::time::{Duration, Instant};

/// (endpoints, prompt characters): the grid of 16 / 256 / 1,024 / 4,096 endpoints by 1K / 16K
/// prompts, and a 400,000-character prompt on 256 endpoints.
const CASES: [(usize, usize); 9] = [
    (16, 1024),
    (16, 16 * 1024),
    (256, 1024),
    (256, 16 * 1024),
    (1024, 1024),
    (1024, 16 * 1024),
    (4096, 1024),
    (4096, 16 * 1024),
    (256, 400_000),
];
/// Distinct conversations cycled through, so the prefix index holds a realistic mix.
const CONVERSATIONS: usize = 64;

/// How long each phase runs: the full run, or the quick one `./build.sh bench` uses.
struct Effort {
    criterion_warm_up: Duration,
    criterion_measurement: Duration,
    criterion_samples: usize,
    /// Requests timed one by one per case for the table.
    table_requests: usize,
}

impl Effort {
    fn from_env() -> Self {
        if std::env::var("WIS_HOST_BENCH_QUICK").is_ok_and(|v| v == "1") {
            Effort {
                criterion_warm_up: Duration::from_millis(200),
                criterion_measurement: Duration::from_millis(600),
                criterion_samples: 10,
                table_requests: 100,
            }
        } else {
            Effort {
                criterion_warm_up: Duration::from_secs(1),
                criterion_measurement: Duration::from_secs(3),
                criterion_samples: 20,
                table_requests: 300,
            }
        }
    }
}

struct Case {
    endpoints: usize,
    prompt_chars: usize,
    envoy: Envoy,
    bodies: Vec<String>,
    next: usize,
}

impl Case {
    /// Two workers on a fresh snapshot of `endpoints` pods, warmed with every conversation twice.
    /// An error says why the plugin could not be set up (e.g. it refused the snapshot).
    fn new(endpoints: usize, prompt_chars: usize) -> Result<Self, String> {
        let config = wis::config_with_scraper(json!({"models": {"served": [MODEL]}}));
        let envoy = wis::envoy().workers(2).quiet().plugin_config(config).build().map_err(|e| e.to_string())?;
        envoy.scraper_replies(wis::snapshot(1, envoy.now_ms(), &wis::pods(endpoints)));
        envoy.advance_ms(101);
        if envoy.stats().get("wis.snapshot.fetch_ok").copied().unwrap_or(0) < 1 {
            let logs = envoy.logs();
            let why = logs.iter().rev().find(|l| l.message.contains("snapshot")).map(|l| l.message.as_str());
            return Err(format!("the plugin took no snapshot of {endpoints} endpoints: {}", why.unwrap_or("no log")));
        }
        let bodies = (0..CONVERSATIONS)
            .map(|i| {
                let system = format!("Conversation {i}: you answer questions about subject {i}. ");
                let system = system.repeat(prompt_chars / system.len() + 1);
                wis::chat(MODEL, &system[..prompt_chars.saturating_sub(40)], "What is the next step?").to_string()
            })
            .collect();
        let mut case = Self { endpoints, prompt_chars, envoy, bodies, next: 0 };
        // Warm every worker's prefix index and allocator.
        for _ in 0..CONVERSATIONS * 2 {
            let r = case.send()?;
            Self::finish(r);
        }
        Ok(case)
    }

    /// One request through headers, body and decision, alternating workers.
    fn send(&mut self) -> Result<Exchange, String> {
        let body = &self.bodies[self.next % self.bodies.len()];
        let worker = self.next % 2;
        self.next += 1;
        let r = self.envoy.worker(worker).request(CHAT).body(body.clone()).try_send().map_err(|e| e.to_string())?;
        if r.destinations().is_empty() {
            return Err(format!("no decision: {:?}", r.local_reply()));
        }
        Ok(r)
    }

    fn finish(mut r: Exchange) {
        r.respond(200).body("{}").finish();
    }

    /// Total time of `n` timed requests.
    fn timed(&mut self, n: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..n {
            let started = Instant::now();
            let r = self.send().unwrap_or_else(|e| panic!("{e}"));
            total += started.elapsed();
            Self::finish(r);
        }
        total
    }

    /// `n` requests timed one by one: the table's row.
    fn row(&mut self, n: usize) -> Row {
        let mut samples: Vec<f64> = (0..n).map(|_| self.timed(1).as_secs_f64() * 1e6).collect();
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Row {
            endpoints: self.endpoints,
            prompt_chars: self.prompt_chars,
            mean_us: samples.iter().sum::<f64>() / samples.len() as f64,
            p50_us: at(0.5),
            p99_us: at(0.99),
            shared_bytes: self.envoy.shared_data_bytes(),
        }
    }
}

/// One line of the table.
struct Row {
    endpoints: usize,
    prompt_chars: usize,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    shared_bytes: usize,
}

impl Row {
    fn markdown(&self) -> String {
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            self.endpoints, self.prompt_chars, self.mean_us, self.p50_us, self.p99_us, self.shared_bytes
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "endpoints": self.endpoints,
            "prompt_chars": self.prompt_chars,
            "us_per_request": (self.p50_us * 10.0).round() / 10.0,
            "shared_bytes": self.shared_bytes,
        })
    }
}

/// Every case: Criterion on it (unless `criterion` is `None`), then the table's row.
fn run(effort: &Effort, mut criterion: Option<&mut Criterion>) -> Vec<Result<Row, String>> {
    let mut group = criterion.as_mut().map(|c| {
        let mut group = c.benchmark_group("per_request");
        group
            .sample_size(effort.criterion_samples)
            .warm_up_time(effort.criterion_warm_up)
            .measurement_time(effort.criterion_measurement);
        group
    });
    let mut rows = Vec::new();
    for (endpoints, prompt_chars) in CASES {
        let mut case = match Case::new(endpoints, prompt_chars) {
            Ok(case) => case,
            Err(why) => {
                eprintln!("per_request: {endpoints} endpoints, {prompt_chars}-char prompt not measured: {why}");
                rows.push(Err(format!("| {endpoints} | {prompt_chars} | not measured: {why} | | | |")));
                continue;
            }
        };
        if let Some(group) = group.as_mut() {
            let name = format!("{endpoints}_endpoints/{prompt_chars}_chars");
            group.bench_function(name, |b| b.iter_custom(|iters| case.timed(iters)));
        }
        rows.push(Ok(case.row(effort.table_requests)));
    }
    if let Some(group) = group {
        group.finish();
    }
    rows
}

fn print_table(effort: &Effort, rows: &[Result<Row, String>]) {
    println!(
        "\nper-request cost inside wasmtime (headers + body + decision), {} requests per case, 2 workers",
        effort.table_requests
    );
    println!(
        "| endpoints | prompt chars | µs/request (mean) | µs/request (p50) | µs/request (p99) | shared data bytes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        match row {
            Ok(row) => println!("{}", row.markdown()),
            Err(line) => println!("{line}"),
        }
    }
}

/// The measured rows as JSON, to `WIS_HOST_BENCH_JSON` when it is set.
fn write_json(rows: &[Result<Row, String>]) {
    let Some(path) = std::env::var_os("WIS_HOST_BENCH_JSON") else { return };
    let list: Vec<serde_json::Value> = rows.iter().flatten().map(Row::json).collect();
    let text = serde_json::to_string_pretty(&list).unwrap_or_else(|e| panic!("rows serialize: {e}"));
    if let Err(e) = std::fs::write(&path, text + "\n") {
        panic!("cannot write WIS_HOST_BENCH_JSON={}: {e}", path.to_string_lossy());
    }
    eprintln!("per_request: {} rows written to {}", list.len(), path.to_string_lossy());
}

fn per_request(c: &mut Criterion) {
    let effort = Effort::from_env();
    let rows = run(&effort, Some(c));
    print_table(&effort, &rows);
    write_json(&rows);
}

criterion_group!(benches, per_request);

fn main() {
    let table_only = std::env::args().any(|a| a == "--table-only");
    // `cargo test --benches` runs this binary with `--bench` absent: keep that quick.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if table_only {
        let effort = Effort::from_env();
        let rows = run(&effort, None);
        print_table(&effort, &rows);
        write_json(&rows);
    } else if benchmarking {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
