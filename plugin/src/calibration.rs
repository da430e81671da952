//! Bytes per token, learned per model from what the pods report.
//!
//! The plugin cuts prompts into blocks of fixed **bytes** (so a block's hash never changes), but
//! everything it compares with a pod is in **tokens**: the pod's KV capacity (`num_gpu_blocks` ×
//! `block_size` tokens), its `cached_tokens` report, the prompt tokens it has in flight. Tokenizers
//! differ per model and per kind of text (Qwen's BPE: about 5 bytes a token on English prose, 3.6 on
//! code and JSON, 4.9 on Chinese), so the conversion is learned instead of assumed: every response
//! that reports `usage.prompt_tokens` gives one sample, the prompt's UTF-8 bytes as the plugin read
//! them against the tokens the pod counted (the pod's count includes its chat template, a few tokens
//! per message, which biases the ratio low by a few percent on short prompts and not at all on long
//! ones).
//!
//! **Estimator.** A ratio of exponentially weighted sums, `Σ wᵢ bytesᵢ / Σ wᵢ tokensᵢ` with each new
//! sample weighted [`SAMPLE_WEIGHT`] against the past: long prompts count in proportion to their
//! length, and the mix of text a model serves is tracked as it drifts. The configured
//! `limits.charsPerToken` is only the starting guess: the first sample replaces it. After `n`
//! samples the past before them weighs `(1 − w)ⁿ`; with `w` = 0.05 that is 8 % after 50 samples, so a
//! starting guess 25 % off leaves about 2 % error by then, and a stable fleet's ratio is within a few
//! percent after its first sample.
//!
//! **Determinism.** Samples arrive as routing events, which every worker applies in the same order,
//! so every worker computes the same ratio bit for bit (IEEE arithmetic, no randomness).

/// Weight of a new sample against the accumulated past (see the module doc).
pub const SAMPLE_WEIGHT: f64 = 0.05;
/// Samples with fewer prompt tokens are ignored: the chat template dominates them.
pub const MIN_SAMPLE_TOKENS: u32 = 16;
/// Plausible bounds of a sample's bytes per token; outside them the report is not a tokenizer's.
pub const MIN_BYTES_PER_TOKEN: f64 = 0.5;
pub const MAX_BYTES_PER_TOKEN: f64 = 32.0;
/// Models tracked at most; an unknown model beyond it uses the pool-wide ratio.
pub const MAX_MODELS: usize = 64;
/// Longest model name kept (model names are Hugging Face ids or served-model-names).
pub const MAX_MODEL_NAME_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Ratio {
    bytes: f64,
    tokens: f64,
    samples: u64,
}

impl Ratio {
    fn value(&self) -> f64 {
        self.bytes / self.tokens
    }

    fn add(&mut self, bytes: f64, tokens: f64) {
        if self.samples == 0 {
            (self.bytes, self.tokens) = (bytes, tokens);
        } else {
            self.bytes = (1.0 - SAMPLE_WEIGHT) * self.bytes + SAMPLE_WEIGHT * bytes;
            self.tokens = (1.0 - SAMPLE_WEIGHT) * self.tokens + SAMPLE_WEIGHT * tokens;
        }
        self.samples += 1;
    }
}

/// The learned bytes-per-token ratio of every model, and of the pool as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    starting_guess: f64,
    models: Vec<(String, Ratio)>,
    pool: Ratio,
}

impl Calibration {
    /// Starts from `starting_guess` bytes per token (`limits.charsPerToken`).
    pub fn new(starting_guess: f64) -> Self {
        let guess = if starting_guess.is_finite() && starting_guess > 0.0 { starting_guess } else { 4.0 };
        Self { starting_guess: guess, models: Vec::new(), pool: Ratio { bytes: 0.0, tokens: 0.0, samples: 0 } }
    }

    /// One response: `prompt_bytes` of prompt text the plugin read were `prompt_tokens` tokens to the
    /// pod serving `model`. Returns whether the sample was used.
    pub fn observe(&mut self, model: &str, prompt_bytes: u32, prompt_tokens: u32) -> bool {
        if prompt_tokens < MIN_SAMPLE_TOKENS || prompt_bytes == 0 {
            return false;
        }
        let (bytes, tokens) = (f64::from(prompt_bytes), f64::from(prompt_tokens));
        let ratio = bytes / tokens;
        if !(MIN_BYTES_PER_TOKEN..=MAX_BYTES_PER_TOKEN).contains(&ratio) {
            return false;
        }
        self.pool.add(bytes, tokens);
        let model = truncated(model);
        match self.models.iter().position(|(m, _)| m == model) {
            Some(i) => self.models[i].1.add(bytes, tokens),
            None if self.models.len() < MAX_MODELS => {
                let mut r = Ratio { bytes: 0.0, tokens: 0.0, samples: 0 };
                r.add(bytes, tokens);
                self.models.push((model.to_string(), r));
            }
            None => {}
        }
        true
    }

    /// Bytes per token of `model`: learned, else the pool's, else the starting guess.
    pub fn bytes_per_token(&self, model: &str) -> f64 {
        let model = truncated(model);
        match self.models.iter().find(|(m, _)| m == model) {
            Some((_, r)) => r.value(),
            None => self.pool_bytes_per_token(),
        }
    }

    /// Bytes per token over every model's samples, else the starting guess.
    pub fn pool_bytes_per_token(&self) -> f64 {
        if self.pool.samples == 0 { self.starting_guess } else { self.pool.value() }
    }

    /// Samples used so far for `model` (0 = still the guess).
    pub fn samples(&self, model: &str) -> u64 {
        let model = truncated(model);
        self.models.iter().find(|(m, _)| m == model).map_or(0, |(_, r)| r.samples)
    }

    /// (model, learned bytes per token, samples), in first-seen order.
    pub fn learned(&self) -> impl Iterator<Item = (&str, f64, u64)> {
        self.models.iter().map(|(m, r)| (m.as_str(), r.value(), r.samples))
    }

    pub fn starting_guess(&self) -> f64 {
        self.starting_guess
    }
}

fn truncated(model: &str) -> &str {
    if model.len() <= MAX_MODEL_NAME_BYTES {
        return model;
    }
    let mut end = MAX_MODEL_NAME_BYTES;
    while !model.is_char_boundary(end) {
        end -= 1;
    }
    &model[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = "Qwen/Qwen3-0.6B";

    #[test]
    fn the_guess_holds_until_the_first_report_replaces_it() {
        let mut c = Calibration::new(4.0);
        assert_eq!(c.bytes_per_token(MODEL), 4.0);
        assert!(c.observe(MODEL, 5_000, 1_000));
        assert_eq!(c.bytes_per_token(MODEL), 5.0);
        assert_eq!(c.samples(MODEL), 1);
        assert_eq!(c.bytes_per_token("other"), 5.0, "an unseen model uses the pool's ratio");
    }

    #[test]
    fn converges_within_five_percent_in_fifty_noisy_samples() {
        // True ratio 4.9 (Chinese on Qwen's BPE), per-request noise ±20 % and prompts of varied size.
        let mut c = Calibration::new(4.0);
        let mut x: u64 = 7;
        for i in 0..50 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = 0.8 + 0.4 * ((x >> 33) as f64 / (1u64 << 31) as f64);
            let tokens = 100 + (i * 37) % 900;
            let bytes = (f64::from(tokens) * 4.9 * noise) as u32;
            c.observe(MODEL, bytes, tokens);
        }
        let learned = c.bytes_per_token(MODEL);
        assert!((learned / 4.9 - 1.0).abs() < 0.05, "{learned}");
    }

    #[test]
    fn follows_a_drift_in_the_kind_of_text() {
        let mut c = Calibration::new(4.0);
        for _ in 0..50 {
            c.observe(MODEL, 5_000, 1_000);
        }
        for _ in 0..100 {
            c.observe(MODEL, 3_600, 1_000); // the traffic turns to code
        }
        assert!((c.bytes_per_token(MODEL) - 3.6).abs() < 0.05, "{}", c.bytes_per_token(MODEL));
    }

    #[test]
    fn implausible_or_tiny_samples_are_ignored() {
        let mut c = Calibration::new(4.0);
        assert!(!c.observe(MODEL, 40, 10), "template-dominated");
        assert!(!c.observe(MODEL, 100_000, 100), "1,000 bytes a token is no tokenizer");
        assert!(!c.observe(MODEL, 0, 100));
        assert_eq!(c.bytes_per_token(MODEL), 4.0);
    }

    #[test]
    fn models_are_learned_apart_and_bounded() {
        let mut c = Calibration::new(4.0);
        c.observe("a", 5_000, 1_000);
        c.observe("b", 2_000, 1_000);
        assert_eq!(c.bytes_per_token("a"), 5.0);
        assert_eq!(c.bytes_per_token("b"), 2.0);
        for i in 0..MAX_MODELS + 10 {
            c.observe(&format!("m{i}"), 3_000, 1_000);
        }
        assert_eq!(c.learned().count(), MAX_MODELS);
    }
}
