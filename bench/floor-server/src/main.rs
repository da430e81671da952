//! The overhead benchmark's floor backend: a model-server stand-in that answers every request at
//! once, so that "req/s against the floor" measures the proxy in front of it, not the backend.
//!
//! Each `--listen` address is one "pod". It speaks just enough of vLLM for the scraper and the
//! plugin to treat it as one:
//! - `GET /health` → 200;
//! - `GET /metrics` → a vLLM exposition: nothing waiting or running, an empty KV cache,
//!   `vllm:cache_config_info` with the block size and block count, the served model name;
//! - `GET /v1/models` → the served model;
//! - anything else (`POST /v1/chat/completions`, `/v1/completions`) → a one-token, non-streamed chat
//!   completion whose `usage.prompt_tokens` is the request body's length / 4 (the plugin reads
//!   `usage` as it does from a real pod).
//!
//! One thread and no per-request allocation beyond hyper's own: the backend must cost little of the
//! machine the proxy is measured on.
//!
//! Usage: `floor-server --listen 127.0.0.1:8001,127.0.0.1:8002 [--model Qwen/Qwen3-0.6B] [--num-gpu-blocks 1200]`

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

/// The project's model id (vLLM's default served-model-name for it).
const DEFAULT_MODEL: &str = "Qwen/Qwen3-0.6B";
/// KV blocks reported per pod: the bench's quality fleet default.
const DEFAULT_NUM_GPU_BLOCKS: u32 = 1200;
/// vLLM's default KV block size in tokens.
const BLOCK_SIZE: u32 = 16;
/// Characters per token used for the reported `prompt_tokens`: a plausible figure, nothing more.
const BYTES_PER_TOKEN: usize = 4;

/// The fixed answers of one pod.
struct Answers {
    metrics: Bytes,
    models: Bytes,
    model: String,
}

impl Answers {
    fn new(model: &str, num_gpu_blocks: u32) -> Self {
        let m = escape_label(model);
        let metrics = format!(
            "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{engine=\"0\",model_name=\"{m}\"}} 0.0\n\
             # TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{engine=\"0\",model_name=\"{m}\"}} 0.0\n\
             # TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"{m}\"}} 0.0\n\
             # TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{block_size=\"{BLOCK_SIZE}\",\
             enable_prefix_caching=\"True\",engine=\"0\",num_gpu_blocks=\"{num_gpu_blocks}\"}} 1.0\n\
             # TYPE vllm:prefix_cache_queries_total counter\nvllm:prefix_cache_queries_total{{engine=\"0\",model_name=\"{m}\"}} 0.0\n\
             # TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total{{engine=\"0\",model_name=\"{m}\"}} 0.0\n"
        );
        let models = format!(
            "{{\"object\":\"list\",\"data\":[{{\"id\":{},\"object\":\"model\",\"owned_by\":\"floor-server\"}}]}}",
            json_string(model)
        );
        Self { metrics: Bytes::from(metrics), models: Bytes::from(models), model: json_string(model) }
    }

    fn completion(&self, body_bytes: usize) -> Bytes {
        let prompt = (body_bytes / BYTES_PER_TOKEN).max(1);
        Bytes::from(format!(
            "{{\"id\":\"chatcmpl-floor\",\"object\":\"chat.completion\",\"created\":0,\"model\":{},\
             \"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"ok\"}},\"finish_reason\":\"length\"}}],\
             \"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":1,\"total_tokens\":{},\
             \"prompt_tokens_details\":{{\"cached_tokens\":0}}}}}}",
            self.model,
            prompt + 1
        ))
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn reply(content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    resp
}

async fn answer(answers: Rc<Answers>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let get = req.method() == Method::GET;
    let path = req.uri().path().to_owned();
    // Drain the body (a client that sends one expects it read); a broken body still gets an answer.
    let body_bytes = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => 0,
    };
    Ok(match (get, path.as_str()) {
        (true, "/health") => reply("text/plain", Bytes::from_static(b"ok")),
        (true, "/metrics") => reply("text/plain; version=0.0.4; charset=utf-8", answers.metrics.clone()),
        (true, "/v1/models") => reply("application/json", answers.models.clone()),
        _ => reply("application/json", answers.completion(body_bytes)),
    })
}

#[derive(Debug)]
struct Options {
    listen: Vec<SocketAddr>,
    model: String,
    num_gpu_blocks: u32,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options { listen: Vec::new(), model: DEFAULT_MODEL.into(), num_gpu_blocks: DEFAULT_NUM_GPU_BLOCKS };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                for a in value()?.split(',').filter(|a| !a.trim().is_empty()) {
                    opts.listen.push(a.trim().parse().map_err(|e| format!("--listen {a:?}: expected IP:PORT ({e})"))?);
                }
            }
            "--model" => opts.model = value()?,
            "--num-gpu-blocks" => {
                let v = value()?;
                opts.num_gpu_blocks = v.parse().map_err(|_| format!("--num-gpu-blocks {v:?}: expected a count"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if opts.listen.is_empty() {
        return Err("--listen IP:PORT[,IP:PORT...] is required".into());
    }
    Ok(opts)
}

async fn serve(listener: tokio::net::TcpListener, answers: Rc<Answers>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let answers = answers.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |req| answer(answers.clone(), req));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("floor-server: {e}");
            }
            eprintln!("usage: floor-server --listen IP:PORT[,IP:PORT...] [--model NAME] [--num-gpu-blocks N]");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("floor-server: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    let answers = Rc::new(Answers::new(&opts.model, opts.num_gpu_blocks));
    let result: Result<(), String> = local.block_on(&runtime, async move {
        for address in &opts.listen {
            let listener =
                tokio::net::TcpListener::bind(address).await.map_err(|e| format!("cannot listen on {address}: {e}"))?;
            tokio::task::spawn_local(serve(listener, answers.clone()));
        }
        eprintln!("floor-server: {} pods on {:?}, model {}", opts.listen.len(), opts.listen, opts.model);
        tokio::signal::ctrl_c().await.map_err(|e| format!("signal: {e}"))
    });
    if let Err(e) = result {
        eprintln!("floor-server: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn listen_addresses_are_required_and_must_be_ip_port() {
        assert!(parse_args(args(&[])).unwrap_err().contains("--listen"));
        assert!(parse_args(args(&["--listen", "localhost:80"])).unwrap_err().contains("IP:PORT"));
        let o = parse_args(args(&["--listen", "127.0.0.1:1,127.0.0.1:2", "--num-gpu-blocks", "7"])).unwrap();
        assert_eq!(o.listen.len(), 2);
        assert_eq!(o.num_gpu_blocks, 7);
        assert_eq!(o.model, DEFAULT_MODEL);
    }

    #[test]
    fn completion_is_json_with_usage_from_the_body_length() {
        let a = Answers::new("m\"x", 10);
        let text = String::from_utf8(a.completion(400).to_vec()).unwrap();
        assert!(text.contains("\"model\":\"m\\\"x\""), "{text}");
        assert!(text.contains("\"prompt_tokens\":100,"), "{text}");
        assert!(text.contains("\"total_tokens\":101,"), "{text}");
    }

    #[test]
    fn metrics_name_the_model_and_the_cache_geometry() {
        let a = Answers::new("Qwen/Qwen3-0.6B", 700);
        let text = String::from_utf8(a.metrics.to_vec()).unwrap();
        assert!(text.contains("vllm:num_requests_waiting{engine=\"0\",model_name=\"Qwen/Qwen3-0.6B\"} 0.0"), "{text}");
        assert!(text.contains("num_gpu_blocks=\"700\""), "{text}");
        assert!(text.contains("block_size=\"16\""), "{text}");
    }
}
