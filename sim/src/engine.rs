//! One simulated vLLM engine core: a waiting queue, continuous batching and the KV cache, driven
//! step by step by a clock the caller owns (a virtual one in tests, the wall clock in the server).
//!
//! A step, after vLLM V1's `Scheduler.schedule()`:
//! 1. Running requests first, in order: a decoding request needs one token, a prefilling one the rest
//!    of its prompt (chunked prefill), both capped by the step's token budget
//!    (`max_num_batched_tokens`). If the KV pool cannot hold a request's next block, the **last**
//!    running request is preempted (its blocks freed, it goes back to the front of the queue and is
//!    recomputed later), as vLLM does.
//! 2. Then waiting requests, first come first served, while `max_num_seqs` and the budget allow:
//!    the longest cached prefix (whole blocks, at most prompt − 1 tokens) is reused, the rest is
//!    prefilled. A request whose LoRA adapter cannot get a slot is skipped (deferred) and later ones
//!    may go first; a request the pool cannot hold stops admission.
//! 3. The step's duration comes from the [`TimeModel`]; when it ends, every request whose prompt is
//!    fully computed emits one token, and finished requests free their blocks.
//!
//! Times are model seconds (what the real GPU would take); the server scales them by `--time-scale`.

use std::collections::{HashMap, VecDeque};

use crate::kv::{BlockHash, BlockPool, NONE_HASH, hash_block};
use crate::metrics::EngineStats;
use crate::profile::TimeModel;
use lora::LoraSlots;

/// Engine settings (vLLM's names).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub block_size: usize,
    pub num_gpu_blocks: usize,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub max_model_len: usize,
    pub enable_prefix_caching: bool,
    /// LoRA slots on the GPU (`--max-loras`); 0 = LoRA disabled.
    pub max_loras: usize,
    pub time: TimeModel,
}

/// Why a request finished (vLLM's `FinishReason` strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    Abort,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// A request as the engine sees it.
#[derive(Debug, Clone)]
pub struct EngineRequest {
    pub id: u64,
    pub prompt: Vec<u32>,
    /// Tokens to generate before stopping.
    /// The token ids it will generate, in order (the pod plans the reply; the engine times it).
    pub output: Vec<u32>,
    /// Reported after the last output token: `length` if its count came from `max_tokens`, else `stop`.
    pub finish: FinishReason,
    /// The `max_tokens` parameter as sent (for the histogram), if any.
    pub max_tokens_param: Option<u32>,
    pub lora: Option<String>,
}

/// What a step produced for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The `index`-th generated token (id `token`); `cached_tokens` is the prefix-cache hit of the
    /// request's prefill; `finish` is set on the last token (a `Finished` follows in the same step).
    Token { id: u64, token: u32, index: u32, cached_tokens: usize, finish: Option<FinishReason> },
    /// The request is done (after its last token, or aborted).
    Finished { id: u64, reason: FinishReason, prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize },
}

#[derive(Debug)]
struct Seq {
    req: EngineRequest,
    /// Prompt then generated token ids.
    tokens: Vec<u32>,
    /// Chained hashes of the full blocks of `tokens` computed so far.
    hashes: Vec<BlockHash>,
    /// How many of `blocks` are registered in the pool's hash map.
    cached_blocks: usize,
    blocks: Vec<usize>,
    num_computed: usize,
    /// Prefix-cache hit of the (last) admission, in tokens.
    hit_tokens: usize,
    generated: u32,
    arrival: f64,
    scheduled_at: Option<f64>,
    first_token_at: Option<f64>,
    last_token_at: f64,
}

impl Seq {
    fn prompt_len(&self) -> usize {
        self.req.prompt.len()
    }
}

/// One planned step: which requests compute how many tokens, and how long it takes.
#[derive(Debug, Clone)]
pub struct Step {
    pub start: f64,
    pub duration: f64,
    plan: Vec<(u64, usize)>,
    pub num_tokens: usize,
}

/// The engine core of one pod.
#[derive(Debug)]
pub struct Engine {
    pub config: EngineConfig,
    pool: BlockPool,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    loras: LoraSlots,
    /// Requests skipped at the last schedule because their adapter had no slot.
    deferred: usize,
    pub stats: EngineStats,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        let pool = BlockPool::new(config.num_gpu_blocks);
        let max_model_len = config.max_model_len;
        Engine {
            config,
            pool,
            waiting: VecDeque::new(),
            running: Vec::new(),
            loras: LoraSlots::default(),
            deferred: 0,
            stats: EngineStats::new(max_model_len),
        }
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Waiting requests deferred by a transient constraint (LoRA slots), vLLM's reason `deferred`.
    pub fn num_deferred(&self) -> usize {
        self.deferred.min(self.waiting.len())
    }

    pub fn kv_usage(&self) -> f64 {
        self.pool.usage()
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Queues a request that arrived at `now`.
    pub fn add_request(&mut self, req: EngineRequest, now: f64) {
        let tokens = req.prompt.clone();
        self.waiting.push_back(Seq {
            req,
            tokens,
            hashes: Vec::new(),
            cached_blocks: 0,
            blocks: Vec::new(),
            num_computed: 0,
            hit_tokens: 0,
            generated: 0,
            arrival: now,
            scheduled_at: None,
            first_token_at: None,
            last_token_at: now,
        });
    }

    /// Removes a request (client gone); returns its `Finished` output if it was known.
    pub fn abort(&mut self, id: u64, now: f64) -> Option<Output> {
        let seq = if let Some(i) = self.running.iter().position(|s| s.req.id == id) {
            self.running.remove(i)
        } else {
            let i = self.waiting.iter().position(|s| s.req.id == id)?;
            self.waiting.remove(i)?
        };
        self.pool.free_blocks(&seq.blocks);
        Some(self.finish(seq, FinishReason::Abort, now))
    }

    fn lora_key(seq: &Seq) -> Option<&str> {
        seq.req.lora.as_deref()
    }

    /// Extends `seq.hashes` over every full block of computed tokens and registers them in the pool.
    fn cache_computed_blocks(pool: &mut BlockPool, seq: &mut Seq, block_size: usize, enabled: bool) {
        let full = seq.num_computed.min(seq.tokens.len()) / block_size;
        while seq.hashes.len() < full {
            let i = seq.hashes.len();
            let parent = if i == 0 { NONE_HASH } else { seq.hashes[i - 1] };
            let chunk = &seq.tokens[i * block_size..(i + 1) * block_size];
            let h = hash_block(parent, chunk, Self::lora_key(seq));
            seq.hashes.push(h);
        }
        if !enabled {
            return;
        }
        while seq.cached_blocks < full.min(seq.blocks.len()) {
            pool.cache_full_block(seq.blocks[seq.cached_blocks], seq.hashes[seq.cached_blocks]);
            seq.cached_blocks += 1;
        }
    }

    /// Blocks a request must hold to have `tokens` tokens in the cache.
    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.config.block_size)
    }

    fn preempt_last(&mut self) -> Option<u64> {
        let mut seq = self.running.pop()?;
        self.pool.free_blocks(&seq.blocks);
        seq.blocks.clear();
        seq.cached_blocks = 0;
        seq.num_computed = 0;
        self.stats.num_preemptions += 1;
        let id = seq.req.id;
        self.waiting.push_front(seq);
        Some(id)
    }

    /// Plans the next step at `now`, or None when there is nothing to run.
    pub fn schedule(&mut self, now: f64) -> Option<Step> {
        let mut budget = self.config.max_num_batched_tokens;
        let mut plan: Vec<(u64, usize)> = Vec::new();
        let preempted = self.schedule_running(&mut plan, &mut budget);
        self.deferred = 0;
        // Waiting requests are not admitted in a step that had to preempt, as in vLLM.
        let lora_load_s = if preempted { 0.0 } else { self.admit_waiting(now, &mut plan, &mut budget) };
        if plan.is_empty() {
            return None;
        }
        let duration = self.step_cost(&plan) + lora_load_s;
        let num_tokens = plan.iter().map(|(_, n)| n).sum();
        Some(Step { start: now, duration, plan, num_tokens })
    }

    /// Step part 1: the running requests' next tokens, preempting from the back when the pool is
    /// full. Returns whether anything was preempted.
    fn schedule_running(&mut self, plan: &mut Vec<(u64, usize)>, budget: &mut usize) -> bool {
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() && *budget > 0 {
            let seq = &self.running[i];
            let need = seq.tokens.len() - seq.num_computed;
            let n = need.min(*budget);
            let extra = self.blocks_for(seq.num_computed + n).saturating_sub(seq.blocks.len());
            if extra > 0 && self.pool.num_free() < extra {
                // Preempt from the back until this request fits (or it is the one preempted).
                self.preempt_last();
                preempted = true;
                continue;
            }
            if extra > 0 {
                let Some(new) = self.pool.allocate(extra) else { break };
                self.running[i].blocks.extend(new);
            }
            plan.push((self.running[i].req.id, n));
            *budget -= n;
            i += 1;
        }
        preempted
    }

    /// Step part 2: waiting requests, first come first served, while the sequence limit and the
    /// token budget allow. Returns the LoRA load time the admissions add to the step.
    fn admit_waiting(&mut self, now: f64, plan: &mut Vec<(u64, usize)>, budget: &mut usize) -> f64 {
        let mut lora_load_s = 0.0;
        let mut in_use: Vec<String> = self.running.iter().filter_map(|s| s.req.lora.clone()).collect();
        let mut skipped: VecDeque<Seq> = VecDeque::new();
        while *budget > 0 && self.running.len() < self.config.max_num_seqs {
            if self.waiting.front().is_some_and(|s| s.arrival > now) {
                break; // arrived after this step's start on the engine's clock
            }
            let Some(seq) = self.waiting.pop_front() else { break };
            let lora = seq.req.lora.clone();
            if !self.admit_lora(lora.as_deref(), &in_use, &mut lora_load_s) {
                self.deferred += 1;
                skipped.push_back(seq);
                continue;
            }
            let Some((seq, n)) = self.start_prefill(seq, now, *budget) else { break };
            if let Some(l) = lora {
                in_use.push(l);
            }
            plan.push((seq.req.id, n));
            *budget -= n;
            self.running.push(seq);
        }
        while let Some(s) = skipped.pop_back() {
            self.waiting.push_front(s);
        }
        lora_load_s
    }

    /// Gives an admitted request its longest cached prefix (whole blocks, at most prompt − 1 tokens)
    /// and blocks for the first prefill chunk; returns it with the chunk's size. When the pool cannot
    /// hold the chunk the request goes back to the front of the queue and None stops admission.
    fn start_prefill(&mut self, mut seq: Seq, now: f64, budget: usize) -> Option<(Seq, usize)> {
        let bs = self.config.block_size;
        let lora = seq.req.lora.as_deref();
        let prompt_len = seq.prompt_len();
        let prompt_hashes = crate::kv::block_hashes(&seq.req.prompt, bs, lora);
        let max_hit_blocks = prompt_len.saturating_sub(1) / bs;
        let hit_blocks = if self.config.enable_prefix_caching {
            self.pool.longest_hit(&prompt_hashes[..max_hit_blocks.min(prompt_hashes.len())])
        } else {
            0
        };
        let hit_tokens = hit_blocks * bs;
        let n = (seq.tokens.len() - hit_tokens).min(budget);
        let extra = self.blocks_for(hit_tokens + n) - hit_blocks;
        let held = self.pool.touch(&prompt_hashes[..hit_blocks]);
        let Some(new) = self.pool.allocate(extra) else {
            self.pool.free_blocks(&held);
            self.waiting.push_front(seq);
            return None;
        };
        seq.blocks = held;
        seq.blocks.extend(new);
        seq.hashes = prompt_hashes[..hit_blocks].to_vec();
        seq.cached_blocks = hit_blocks;
        seq.num_computed = hit_tokens;
        // A preempted request being resumed is not counted again (vLLM keeps preempted
        // queries out of the Prometheus counters) and keeps its first `cached_tokens`.
        if seq.scheduled_at.is_none() {
            if self.config.enable_prefix_caching {
                self.stats.prefix_cache_queries += prompt_len as u64;
                self.stats.prefix_cache_hits += hit_tokens as u64;
            }
            seq.hit_tokens = hit_tokens;
            seq.scheduled_at = Some(now);
            self.stats.queue_time.observe(now - seq.arrival);
        }
        Some((seq, n))
    }

    /// The time model applied to a plan.
    fn step_cost(&self, plan: &[(u64, usize)]) -> f64 {
        let t = &self.config.time;
        let mut cost = t.step_overhead_s;
        for (id, n) in plan {
            let Some(seq) = self.running.iter().find(|s| s.req.id == *id) else { continue };
            let start = seq.num_computed;
            if start < seq.prompt_len() {
                // Prefill chunk: positions start..start+n each attend to everything before them.
                let n = *n as f64;
                let pairs = n * start as f64 + n * (n + 1.0) / 2.0;
                cost += n * t.prefill_per_token_s + pairs * t.prefill_attention_per_pair_s;
            } else {
                cost += t.decode_per_seq_s + start as f64 * t.decode_per_context_token_s;
            }
        }
        cost
    }

    /// Applies a planned step that ended at `end`; returns the outputs in plan order.
    pub fn complete(&mut self, step: Step, end: f64) -> Vec<Output> {
        let bs = self.config.block_size;
        let caching = self.config.enable_prefix_caching;
        self.stats.iteration_tokens.observe(step.num_tokens as f64);
        let mut outputs = Vec::new();
        let mut finished: Vec<u64> = Vec::new();
        for (id, n) in step.plan {
            // A request preempted or aborted after planning is simply skipped.
            let Some(seq) = self.running.iter_mut().find(|s| s.req.id == id) else { continue };
            seq.num_computed += n;
            Self::cache_computed_blocks(&mut self.pool, seq, bs, caching);
            if seq.num_computed < seq.tokens.len() {
                continue; // prefill chunk, no token yet
            }
            let index = seq.generated;
            let token = seq.req.output.get(index as usize).copied().unwrap_or(0);
            seq.tokens.push(token);
            seq.generated += 1;
            self.stats.generation_tokens += 1;
            if seq.first_token_at.is_none() {
                seq.first_token_at = Some(end);
                let prompt_len = seq.prompt_len() as u64;
                self.stats.prompt_tokens += prompt_len;
                self.stats.prompt_tokens_cached += seq.hit_tokens as u64;
                self.stats.prompt_tokens_computed += prompt_len - seq.hit_tokens as u64;
                self.stats.ttft.observe(end - seq.arrival);
                if let Some(s) = seq.scheduled_at {
                    self.stats.prefill_time.observe(end - s);
                }
                self.stats.request_prompt_tokens.observe(prompt_len as f64);
                self.stats.request_prefill_kv_computed_tokens.observe((prompt_len - seq.hit_tokens as u64) as f64);
            } else {
                self.stats.itl.observe(end - seq.last_token_at);
            }
            seq.last_token_at = end;
            let last = seq.generated as usize >= seq.req.output.len();
            let finish = last.then_some(seq.req.finish);
            outputs.push(Output::Token { id, token, index, cached_tokens: seq.hit_tokens, finish });
            if last {
                finished.push(id);
            }
        }
        for id in finished {
            if let Some(i) = self.running.iter().position(|s| s.req.id == id) {
                let seq = self.running.remove(i);
                self.pool.free_blocks(&seq.blocks);
                let reason = seq.req.finish;
                outputs.push(self.finish(seq, reason, end));
            }
        }
        outputs
    }

    fn finish(&mut self, seq: Seq, reason: FinishReason, now: f64) -> Output {
        let s = &mut self.stats;
        *s.request_success.entry(reason.as_str()).or_insert(0) += 1;
        if reason != FinishReason::Abort {
            s.e2e.observe(now - seq.arrival);
            s.request_generation_tokens.observe(f64::from(seq.generated));
            s.request_max_num_generation_tokens.observe(seq.req.output.len() as f64);
            if let Some(m) = seq.req.max_tokens_param {
                s.request_params_max_tokens.observe(f64::from(m));
            }
            s.request_params_n.observe(1.0);
            if let (Some(sched), Some(first)) = (seq.scheduled_at, seq.first_token_at) {
                s.inference_time.observe(now - sched);
                s.decode_time.observe(now - first);
                if seq.generated > 1 {
                    s.time_per_output_token.observe((now - first) / f64::from(seq.generated - 1));
                }
            }
        }
        Output::Finished {
            id: seq.req.id,
            reason,
            prompt_tokens: seq.prompt_len(),
            completion_tokens: seq.generated as usize,
            cached_tokens: seq.hit_tokens,
        }
    }
}

/// Runs an engine on a virtual clock until it is idle or `max_steps` steps ran; returns the outputs
/// with the time they were emitted. For tests and offline experiments.
pub fn run_virtual(engine: &mut Engine, now: &mut f64, max_steps: usize) -> Vec<(f64, Output)> {
    let mut out = Vec::new();
    for _ in 0..max_steps {
        let Some(step) = engine.schedule(*now) else { break };
        *now += step.duration;
        let end = *now;
        out.extend(engine.complete(step, end).into_iter().map(|o| (end, o)));
    }
    out
}

/// Time to first token of every request in `outputs`, by request id.
pub fn first_token_times(outputs: &[(f64, Output)]) -> HashMap<u64, f64> {
    let mut m = HashMap::new();
    for (t, o) in outputs {
        if let Output::Token { id, .. } = o {
            m.entry(*id).or_insert(*t);
        }
    }
    m
}

mod lora;
#[cfg(test)]
mod tests;
