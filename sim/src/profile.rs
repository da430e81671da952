//! The simulated hardware: one model on one GPU, and the cost of an engine step on it.
//!
//! Default profile `qwen3-0.6b-l4`: Qwen3-0.6B in bf16 on one NVIDIA L4 (24 GB GDDR6, 300 GB/s,
//! 121 dense bf16 TFLOPS per NVIDIA's datasheet). The numbers are **estimates derived from the
//! datasheet and the model config**, not measurements; sim/README.md shows the arithmetic:
//! - Qwen3-0.6B (`config.json`): 28 layers, 8 KV heads × head_dim 128, 16 query heads, hidden 1024,
//!   max_position_embeddings 40,960, ~0.6 B parameters (~1.5 GB of bf16 weights, tied embeddings).
//! - KV bytes per token = 2 (K and V) × 28 × 8 × 128 × 2 bytes = 114,688 B; one 16-token block = 1.84 MB.
//! - KV budget ≈ 0.9 × 22.5 GiB usable − 1.5 GB weights − ~1.5 GB activations and CUDA graphs ≈ 17 GB
//!   → ≈ 9,000 blocks (144,000 tokens).
//! - Prefill is compute-bound: ~1.2 GFLOP per token (2 × params) at ~50 % of 121 TFLOPS → ~20 µs/token,
//!   plus attention: 4 × 28 layers × 2048 (q dim) FLOPs per (token, context token) ≈ 0.23 MFLOP → ~4.8 ns.
//! - Decode is memory-bound: reading 1.5 GB of weights at ~75 % of 300 GB/s ≈ 6.5 ms per step (we take
//!   6 ms incl. launch overhead), plus each sequence's KV: 114,688 B / 300 GB/s ≈ 0.4 µs per context
//!   token, plus ~50 µs per sequence for the LM head (1024 × 151,936) and sampling.
//! - vLLM's defaults for a <70 GB GPU behind the OpenAI server: `max_num_batched_tokens` 2048,
//!   `max_num_seqs` 256; `max_model_len` = the model's 40,960; block size 16.
//! - LoRA: moving a small (rank 8-16) adapter from CPU to GPU memory takes milliseconds; we charge 25 ms
//!   per load to the step that loads it.

use serde::Serialize;

/// Costs of one engine step, in model seconds (the time a real GPU would take).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimeModel {
    /// Fixed cost of any step: reading the weights once, kernel launches, scheduler overhead.
    pub step_overhead_s: f64,
    /// Prefill compute per uncached prompt token (the MLP and projections).
    pub prefill_per_token_s: f64,
    /// Prefill attention per (new token, context token) pair; makes long prompts super-linear.
    pub prefill_attention_per_pair_s: f64,
    /// Decode cost per running sequence in the batch (LM head, sampling).
    pub decode_per_seq_s: f64,
    /// Decode cost per context token read from the KV cache (attention is memory-bound).
    pub decode_per_context_token_s: f64,
    /// Loading one LoRA adapter into a GPU slot.
    pub lora_load_s: f64,
}

/// A named model-on-GPU profile: the cache geometry, scheduler limits and time model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuProfile {
    pub name: &'static str,
    pub model: &'static str,
    pub gpu: &'static str,
    pub num_gpu_blocks: usize,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub max_model_len: usize,
    pub gpu_memory_utilization: f64,
    pub time: TimeModel,
}

/// Qwen3-0.6B bf16 on one L4 (see the module comment for the derivation).
pub fn qwen3_0_6b_l4() -> GpuProfile {
    GpuProfile {
        name: "qwen3-0.6b-l4",
        model: "Qwen/Qwen3-0.6B",
        gpu: "NVIDIA L4 24GB",
        num_gpu_blocks: 9_000,
        max_num_seqs: 256,
        max_num_batched_tokens: 2_048,
        max_model_len: 40_960,
        gpu_memory_utilization: 0.9,
        time: TimeModel {
            step_overhead_s: 6.0e-3,
            prefill_per_token_s: 20.0e-6,
            prefill_attention_per_pair_s: 4.8e-9,
            decode_per_seq_s: 50.0e-6,
            decode_per_context_token_s: 0.4e-6,
            lora_load_s: 25.0e-3,
        },
    }
}

/// Qwen3-0.6B bf16 on one A100 40GB (1,555 GB/s, 312 dense bf16 TFLOPS): same arithmetic, larger
/// cache (~0.9 × 40 GB − 3 GB ≈ 33 GB → ~18,000 blocks) and vLLM's defaults for a ≥70 GB class GPU
/// are not used (40 GB is below it), so the scheduler limits stay at 2048 / 256.
pub fn qwen3_0_6b_a100() -> GpuProfile {
    GpuProfile {
        name: "qwen3-0.6b-a100",
        model: "Qwen/Qwen3-0.6B",
        gpu: "NVIDIA A100 40GB",
        num_gpu_blocks: 18_000,
        max_num_seqs: 256,
        max_num_batched_tokens: 2_048,
        max_model_len: 40_960,
        gpu_memory_utilization: 0.9,
        time: TimeModel {
            step_overhead_s: 2.5e-3,
            prefill_per_token_s: 8.0e-6,
            prefill_attention_per_pair_s: 1.9e-9,
            decode_per_seq_s: 20.0e-6,
            decode_per_context_token_s: 0.08e-6,
            lora_load_s: 15.0e-3,
        },
    }
}

/// Every built-in profile, by name.
pub fn by_name(name: &str) -> Result<GpuProfile, String> {
    match name {
        "qwen3-0.6b-l4" => Ok(qwen3_0_6b_l4()),
        "qwen3-0.6b-a100" => Ok(qwen3_0_6b_a100()),
        other => Err(format!("unknown GPU profile {other:?}; expected one of: qwen3-0.6b-l4, qwen3-0.6b-a100")),
    }
}
