//! Helpers shared by the HTTP tests: a fast fleet on ephemeral ports, a raw HTTP client, request
//! bodies and `sim load` arguments.
#![allow(dead_code)] // each test file uses its own subset

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use vllm_sim::engine::EngineConfig;
use vllm_sim::fleet::Fleet;
use vllm_sim::load::LoadArgs;
use vllm_sim::pod::{FaultMode, LoraInfoStyle, PodConfig};
use vllm_sim::profile::qwen3_0_6b_l4;
use vllm_sim::tokenizer::Tokenizer;

/// The model every test fleet serves (vLLM's default served name is the Hugging Face id).
pub const MODEL: &str = "Qwen/Qwen3-0.6B";

/// Fast clock so tests take milliseconds (1 model second = 20 ms).
pub const TIME_SCALE: f64 = 0.02;

pub fn config(details: bool) -> PodConfig {
    let p = qwen3_0_6b_l4();
    PodConfig {
        engine: EngineConfig {
            block_size: 16,
            num_gpu_blocks: 2_000,
            max_num_seqs: p.max_num_seqs,
            max_num_batched_tokens: p.max_num_batched_tokens,
            max_model_len: 4_096,
            enable_prefix_caching: true,
            max_loras: 1,
            time: p.time,
        },
        model: MODEL.into(),
        served_model_name: MODEL.into(),
        lora_modules: vec![("sql-lora".into(), "/adapters/sql".into())],
        enable_lora: true,
        enable_prompt_tokens_details: details,
        time_scale: TIME_SCALE,
        lora_info_style: LoraInfoStyle::Recent,
        gpu_memory_utilization: 0.9,
        fault: FaultMode::None,
        tokenizer: Arc::new(Tokenizer::cl100k().expect("the embedded vocabulary loads")),
    }
}

pub async fn fleet(pods: usize, details: bool) -> Fleet {
    let addrs: Vec<SocketAddr> = (0..pods).map(|_| "127.0.0.1:0".parse().unwrap()).collect();
    Fleet::start(&addrs, &config(details), &vec![FaultMode::None; pods]).await.expect("fleet starts")
}

pub struct Reply {
    pub status: u16,
    pub pod: Option<String>,
    pub body: String,
}

pub async fn call(addr: &str, method: &str, path: &str, body: Option<Value>) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
        .unwrap();
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let pod = resp.headers().get("x-sim-pod").map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply { status, pod, body: String::from_utf8_lossy(&body).into_owned() })
}

pub async fn metrics(addr: &str) -> String {
    call(addr, "GET", "/metrics", None).await.unwrap().body
}

pub fn chat(content: &str, max_tokens: u32, stream: bool) -> Value {
    let mut b = json!({"model": MODEL, "messages": [{"role": "system", "content": content}, {"role": "user", "content": "Why?"}], "max_tokens": max_tokens});
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

pub fn long_text(tag: &str, words: usize) -> String {
    (0..words).map(|i| format!(" {tag}{i}")).collect()
}

/// The data payloads of an SSE body.
pub fn sse_events(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "SSE frames end with a blank line: {body:?}");
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data: prefix").to_string())
        .collect()
}

/// `sim load` arguments for a small bounded run against `targets` (tests override what they pin).
pub fn load_args(targets: Vec<String>, fleet: Vec<String>) -> LoadArgs {
    LoadArgs {
        target: targets,
        spread: "round-robin".into(),
        workload: "shared-prefix".into(),
        api: "chat".into(),
        model: MODEL.into(),
        rate: None,
        concurrency: Some(4),
        duration: "20s".into(),
        requests: Some(40),
        groups: 2,
        system_tokens: 300,
        question_tokens: 20,
        output_tokens: 8,
        turns: 3,
        conversations: None,
        loras: vec![],
        base_share: 0.0,
        no_stream: false,
        served_by_header: "x-sim-pod".into(),
        fleet,
        metrics_urls: vec![],
        out: None,
        seed: 7,
        timeout_s: 20.0,
        max_in_flight: 64,
        threads: 1,
        tokenizer: "bpe".into(),
        vocab: None,
    }
}
