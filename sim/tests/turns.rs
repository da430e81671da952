//! Conversations over real HTTP: a follow-up turn that appends the pod's reply hits the blocks that
//! reply was generated into; replies read like their prompt (Chinese streams whole characters);
//! `sim load` reports turn affinity and its multi-turn workloads resend what the pod said.

mod common;

use serde_json::{Value, json};
use vllm_sim::load;

use common::*;

/// A chat body from (role, content) pairs.
fn messages(turns: &[(&str, &str)], max_tokens: u32) -> Value {
    let msgs: Vec<Value> = turns.iter().map(|(r, c)| json!({"role": r, "content": c})).collect();
    json!({"model": MODEL, "messages": msgs, "max_tokens": max_tokens})
}

fn usage(body: &str) -> (u64, u64, u64, String) {
    let v: Value = serde_json::from_str(body).unwrap();
    let u = &v["usage"];
    (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
        u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap(),
        v["choices"][0]["message"]["content"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_follow_up_turn_hits_the_blocks_of_the_previous_prompt_and_of_the_reply() {
    let f = fleet(1, true).await;
    let a = &f.addresses()[0];
    let system = long_text("clause", 200);
    let first = [("system", system.as_str()), ("user", "Summarise the clauses in one paragraph.")];
    let r1 = call(a, "POST", "/v1/chat/completions", Some(messages(&first, 64))).await.unwrap();
    assert_eq!(r1.status, 200, "{}", r1.body);
    let (prompt1, completion1, cached1, reply) = usage(&r1.body);
    assert_eq!((completion1, cached1), (64, 0));
    let second = [first[0], first[1], ("assistant", reply.as_str()), ("user", "And the exceptions?")];
    let r2 = call(a, "POST", "/v1/chat/completions", Some(messages(&second, 8))).await.unwrap();
    let (prompt2, _, cached2, _) = usage(&r2.body);
    assert!(prompt2 > prompt1 + completion1);
    // The pod cached the first prompt and the reply it generated (whole blocks); the client resent
    // the reply's text, which re-tokenizes to the same tokens but for the word cut at its end.
    let generated_blocks = (prompt1 + completion1 - 4) / 16 * 16;
    assert!(cached2 >= generated_blocks, "cached {cached2} of {prompt2}; turn 1 was {prompt1} + {completion1}");
}

#[tokio::test]
async fn a_chinese_reply_is_chinese_and_streams_whole_characters() {
    let f = fleet(1, true).await;
    let a = &f.addresses()[0];
    let system = "你是一个客服助手。请根据公司的退款政策回答用户的问题，回答要简洁准确。退款必须在收到商品后的三十天内申请，\
        商品需要保持完好，并且附上购买记录。特殊商品不能退款，例如定制产品和已经打开的软件。";
    let turns = [("system", system), ("user", "我上个月买的耳机坏了，可以退款吗？")];
    let mut streamed = messages(&turns, 40);
    streamed["stream"] = json!(true);
    let r = call(a, "POST", "/v1/chat/completions", Some(streamed)).await.unwrap();
    let events = sse_events(&r.body);
    let mut text = String::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        let piece = v["choices"][0]["delta"]["content"].as_str().unwrap_or_default();
        assert!(!piece.contains('\u{fffd}'), "a chunk split a character: {piece:?}");
        text.push_str(piece);
    }
    let full = call(a, "POST", "/v1/chat/completions", Some(messages(&turns, 40))).await.unwrap();
    let (_, completion, _, content) = usage(&full.body);
    assert_eq!(completion, 40);
    assert_eq!(text, content, "the same prompt gets the same reply, streamed or not");
    let han = text.chars().filter(|c| ('\u{4e00}'..='\u{9fff}').contains(c)).count();
    assert!(han * 2 > text.chars().count(), "mostly Chinese characters: {text}");
    assert!(text.chars().all(|c| system.contains(c) || turns[1].1.contains(c)), "drawn from the prompt: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_affinity_is_one_when_conversations_stay_on_a_pod_and_zero_when_they_alternate() {
    let f = fleet(2, true).await;
    let targets: Vec<String> = f.addresses().iter().map(|a| format!("http://{a}")).collect();
    let mut args = load_args(targets.clone(), f.addresses());
    (args.workload, args.spread, args.requests, args.turns) = ("multi-turn".into(), "group".into(), Some(24), 4);
    let pinned = load::run(args).await.unwrap();
    let s = &pinned.summary;
    assert_eq!(s.errors, 0, "{}", load::render_table(&pinned));
    assert!(s.follow_up_turns >= 12, "{}", s.follow_up_turns);
    assert_eq!(s.turn_affinity, Some(1.0));
    // One request at a time, round-robin over two pods: each turn lands on the other pod.
    let mut args = load_args(targets, f.addresses());
    (args.workload, args.concurrency, args.requests, args.turns) = ("cjk-chat".into(), Some(1), Some(9), 3);
    let alternating = load::run(args).await.unwrap();
    assert_eq!(alternating.summary.follow_up_turns, 6);
    assert_eq!(alternating.summary.turn_affinity, Some(0.0));
    assert!(load::render_table(&alternating).contains("turn affinity 0.0%  (0 of 6 follow-up turns"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_workloads_resend_the_pods_replies_and_hit_the_cache() {
    let f = fleet(1, true).await;
    let targets = vec![format!("http://{}", f.addresses()[0])];
    for workload in ["multi-turn", "code-assistant", "cjk-chat"] {
        let mut args = load_args(targets.clone(), f.addresses());
        (args.workload, args.requests, args.turns, args.output_tokens) = (workload.into(), Some(12), 4, 32);
        let report = load::run(args).await.unwrap();
        let s = &report.summary;
        assert_eq!(s.errors, 0, "{workload}: {}", load::render_table(&report));
        // Follow-up turns resend the history: their prompt grows by the reply and a question.
        let follow_ups: Vec<_> = report.records.iter().filter(|r| r.turn > 1).collect();
        assert!(!follow_ups.is_empty(), "{workload}");
        for r in &follow_ups {
            let cached = r.cached_tokens.unwrap();
            let prompt = r.prompt_tokens.unwrap();
            assert!(cached * 10 >= prompt * 6, "{workload} turn {}: {cached} of {prompt} cached", r.turn);
        }
        assert_eq!(s.turn_affinity, Some(1.0), "{workload}: one pod");
    }
    let shared = load::run(load_args(targets, f.addresses())).await.unwrap();
    assert_eq!(shared.summary.turn_affinity, None, "shared-prefix has no follow-up turns");
}
