//! The physics on a virtual clock: no sleeping, fully deterministic.

use super::*;
use std::sync::OnceLock;

use crate::profile::qwen3_0_6b_l4;
use crate::tokenizer::Tokenizer;

/// One tokenizer for every test (cl100k_base, as a default fleet).
fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::cl100k().expect("the embedded vocabulary loads"))
}

fn count(text: &str) -> usize {
    tokenizer().count(text)
}

fn config(num_gpu_blocks: usize) -> EngineConfig {
    let p = qwen3_0_6b_l4();
    EngineConfig {
        block_size: 16,
        num_gpu_blocks,
        max_num_seqs: p.max_num_seqs,
        max_num_batched_tokens: p.max_num_batched_tokens,
        max_model_len: p.max_model_len,
        enable_prefix_caching: true,
        max_loras: 2,
        time: p.time,
    }
}

fn request(id: u64, text: &str, output_len: u32) -> EngineRequest {
    let prompt = tokenizer().encode(text);
    EngineRequest {
        id,
        prompt,
        output: (0..output_len).map(|i| 1000 + i).collect(),
        finish: FinishReason::Length,
        max_tokens_param: Some(output_len),
        lora: None,
    }
}

fn long_prompt(tag: &str, words: usize) -> String {
    (0..words).map(|i| format!("{tag}{i} ")).collect()
}

/// Runs one request alone from `now`; returns (TTFT, cached tokens).
fn serve_alone(engine: &mut Engine, now: &mut f64, req: EngineRequest) -> (f64, usize) {
    let arrival = *now;
    let id = req.id;
    engine.add_request(req, arrival);
    let outputs = run_virtual(engine, now, 10_000);
    let first = first_token_times(&outputs)[&id];
    let cached = outputs
        .iter()
        .find_map(|(_, o)| match o {
            Output::Finished { id: i, cached_tokens, .. } if *i == id => Some(*cached_tokens),
            _ => None,
        })
        .expect("the request finishes");
    (first - arrival, cached)
}

#[test]
fn a_repeated_prompt_hits_the_cache_and_gets_its_first_token_sooner() {
    let mut engine = Engine::new(config(1_000));
    let mut now = 0.0;
    let text = long_prompt("policy", 400);
    let (cold_ttft, cold_cached) = serve_alone(&mut engine, &mut now, request(1, &text, 8));
    now += 1.0;
    let (warm_ttft, warm_cached) = serve_alone(&mut engine, &mut now, request(2, &text, 8));
    let prompt_len = count(&text);
    assert_eq!(cold_cached, 0);
    assert!(warm_cached > 0 && warm_cached % 16 == 0 && warm_cached < prompt_len, "{warm_cached}/{prompt_len}");
    assert_eq!(warm_cached, (prompt_len - 1) / 16 * 16);
    assert!(warm_ttft < cold_ttft / 2.0, "warm {warm_ttft} vs cold {cold_ttft}");
    assert_eq!(engine.stats.prefix_cache_queries, 2 * prompt_len as u64);
    assert_eq!(engine.stats.prefix_cache_hits, warm_cached as u64);
}

#[test]
fn cached_tokens_stay_below_the_prompt_even_when_every_block_is_cached() {
    let mut engine = Engine::new(config(1_000));
    let mut now = 0.0;
    // Find a prompt whose length is an exact multiple of the block size.
    let mut text = long_prompt("x", 100);
    for _ in 0..64 {
        if count(&text).is_multiple_of(16) {
            break;
        }
        text.push_str(" the");
    }
    let len = count(&text);
    serve_alone(&mut engine, &mut now, request(1, &text, 4));
    let (_, cached) = serve_alone(&mut engine, &mut now, request(2, &text, 4));
    assert_eq!(cached, len - 16, "a full match still recomputes the last block (cap prompt − 1)");
}

#[test]
fn a_full_cache_evicts_the_least_recently_used_prefix() {
    // 3 prompts of ~10 blocks each in a pool that holds ~2 of them.
    let mut engine = Engine::new(config(24));
    let mut now = 0.0;
    let a = long_prompt("alpha", 80);
    let b = long_prompt("beta", 80);
    let c = long_prompt("gamma", 100);
    let blocks = |t: &str| count(t).div_ceil(16);
    // a and b fit together; c then needs more than what is free besides b's blocks.
    assert!(blocks(&a) + blocks(&b) < 23 && blocks(&a) + blocks(&b) + blocks(&c) > 23 + 8, "{}", blocks(&c));
    serve_alone(&mut engine, &mut now, request(1, &a, 2));
    serve_alone(&mut engine, &mut now, request(2, &b, 2));
    // Touch `a` again so `b` becomes the least recently used.
    let (_, hit_a) = serve_alone(&mut engine, &mut now, request(3, &a, 2));
    assert!(hit_a > 0);
    serve_alone(&mut engine, &mut now, request(4, &c, 2));
    let (_, hit_a2) = serve_alone(&mut engine, &mut now, request(5, &a, 2));
    let (_, hit_b) = serve_alone(&mut engine, &mut now, request(6, &b, 2));
    assert!(hit_a2 > 0, "the recently used prefix survived");
    assert_eq!(hit_b, 0, "the least recently used prefix was evicted");
    assert!(engine.pool().evictions() > 0);
}

#[test]
fn a_long_queue_raises_time_to_first_token() {
    let mut cfg = config(10_000);
    cfg.max_num_seqs = 4;
    let mut engine = Engine::new(cfg);
    let mut now = 0.0;
    for i in 0..16 {
        engine.add_request(request(i, &long_prompt(&format!("q{i}-"), 200), 32), 0.0);
    }
    let outputs = run_virtual(&mut engine, &mut now, 100_000);
    let ttft = first_token_times(&outputs);
    assert_eq!(ttft.len(), 16);
    // Admission is FCFS with 4 slots: the last four wait for three batches to finish.
    let first_wave = (0..4).map(|i| ttft[&i]).fold(0.0, f64::max);
    let last_wave = (12..16).map(|i| ttft[&i]).fold(f64::MAX, f64::min);
    assert!(last_wave > 3.0 * first_wave, "queued {last_wave} vs first {first_wave}");
    assert!(engine.is_idle());
    assert_eq!(engine.pool().usage(), 0.0, "every block is free (cached) after the run");
}

#[test]
fn running_requests_are_batched_and_decode_slows_with_batch_size() {
    let t = qwen3_0_6b_l4().time;
    let mut engine = Engine::new(config(10_000));
    engine.add_request(request(1, "short prompt", 3), 0.0);
    let one = engine.schedule(0.0).unwrap();
    let end = one.duration;
    engine.complete(one, end);
    let solo_decode = engine.schedule(end).unwrap();
    for i in 2..10 {
        engine.add_request(request(i, "another short prompt here", 3), end);
    }
    // The next step batches the decode with eight prefills.
    assert!(solo_decode.duration < 2.0 * t.step_overhead_s);
    engine.complete(solo_decode.clone(), end + solo_decode.duration);
    let batched = engine.schedule(end + solo_decode.duration).unwrap();
    assert_eq!(engine.num_running(), 9);
    assert!(batched.duration > solo_decode.duration);
}

#[test]
fn the_token_budget_chunks_a_long_prefill_over_several_steps() {
    let mut engine = Engine::new(config(10_000));
    let text = long_prompt("chunk", 2_500);
    let len = count(&text);
    assert!(len > 2 * 2_048);
    engine.add_request(request(1, &text, 1), 0.0);
    let mut now = 0.0;
    let mut steps = 0;
    while let Some(step) = engine.schedule(now) {
        assert!(step.num_tokens <= 2_048);
        now += step.duration;
        engine.complete(step, now);
        steps += 1;
    }
    assert_eq!(steps, len.div_ceil(2_048));
}

#[test]
fn preemption_frees_blocks_when_decodes_outgrow_the_pool() {
    let mut cfg = config(12);
    cfg.max_num_seqs = 8;
    let mut engine = Engine::new(cfg);
    // Two requests of 4 blocks of prompt each, each growing by 64 tokens (4 blocks).
    engine.add_request(request(1, &long_prompt("p", 20), 64), 0.0);
    engine.add_request(request(2, &long_prompt("q", 20), 64), 0.0);
    let mut now = 0.0;
    let outputs = run_virtual(&mut engine, &mut now, 10_000);
    let finished = outputs.iter().filter(|(_, o)| matches!(o, Output::Finished { .. })).count();
    assert_eq!(finished, 2, "both finish despite the small pool");
    assert!(engine.stats.num_preemptions > 0);
}

#[test]
fn lora_adapters_take_slots_and_a_full_set_defers_other_adapters() {
    let mut cfg = config(10_000);
    cfg.max_loras = 1;
    let mut engine = Engine::new(cfg);
    let mut a = request(1, "use adapter a", 20);
    a.lora = Some("a".into());
    let mut b = request(2, "use adapter b", 20);
    b.lora = Some("b".into());
    engine.add_request(a, 0.0);
    engine.add_request(b, 0.0);
    let step = engine.schedule(0.0).unwrap();
    assert_eq!(engine.num_running(), 1);
    assert_eq!(engine.num_deferred(), 1);
    let (running, waiting) = engine.lora_adapters();
    assert_eq!((running, waiting), (vec!["a".to_string()], vec!["b".to_string()]));
    assert!(step.duration >= qwen3_0_6b_l4().time.lora_load_s, "the first step loads the adapter");
    let mut now = step.duration;
    engine.complete(step, now);
    let outputs = run_virtual(&mut engine, &mut now, 10_000);
    assert_eq!(outputs.iter().filter(|(_, o)| matches!(o, Output::Finished { .. })).count(), 2);
    assert_eq!(engine.stats.lora_loads, 2);
}

#[test]
fn lora_requests_do_not_share_cache_with_the_base_model() {
    let mut engine = Engine::new(config(1_000));
    let mut now = 0.0;
    let text = long_prompt("shared", 200);
    serve_alone(&mut engine, &mut now, request(1, &text, 2));
    let mut with_lora = request(2, &text, 2);
    with_lora.lora = Some("sql-lora".into());
    let (_, cached) = serve_alone(&mut engine, &mut now, with_lora);
    assert_eq!(cached, 0);
}

#[test]
fn an_aborted_request_frees_its_blocks_and_counts_as_abort() {
    let mut engine = Engine::new(config(1_000));
    engine.add_request(request(1, &long_prompt("abort", 100), 50), 0.0);
    let step = engine.schedule(0.0).unwrap();
    engine.complete(step, 0.1);
    assert!(engine.kv_usage() > 0.0);
    let out = engine.abort(1, 0.2).unwrap();
    assert!(matches!(out, Output::Finished { reason: FinishReason::Abort, .. }));
    assert_eq!(engine.kv_usage(), 0.0);
    assert_eq!(engine.stats.request_success["abort"], 1);
    assert!(engine.is_idle());
}
