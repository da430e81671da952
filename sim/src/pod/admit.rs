//! Admission: a parsed request becomes an engine request and the reply it will stream, or a
//! vLLM-shaped error (unknown model, empty or over-long prompt, a request the cache can never hold).

use std::sync::atomic::Ordering;

use super::{DEFAULT_OUTPUT_TOKENS, Pod};
use crate::api::{ApiError, ParsedRequest};
use crate::engine::{EngineRequest, FinishReason};
use crate::reply::{self, Reply};

impl Pod {
    /// Validates a parsed request, tokenizes it and plans its reply.
    pub(super) fn admit(&self, req: &ParsedRequest) -> Result<(EngineRequest, Reply), ApiError> {
        let c = &self.config;
        let lora = if req.model == c.served_model_name {
            None
        } else if c.lora_modules.iter().any(|(n, _)| *n == req.model) {
            Some(req.model.clone())
        } else {
            return Err(ApiError::not_found(format!("The model `{}` does not exist.", req.model)));
        };
        let prompt = match &req.prompt_ids {
            Some(ids) => ids.clone(),
            None => c.tokenizer.encode(&req.prompt_text),
        };
        if prompt.is_empty() {
            return Err(ApiError::bad_request("The prompt is empty; expected at least one token."));
        }
        let seed = reply::generation_seed(&prompt);
        let (output_len, finish) = self.output_length(req.max_tokens, prompt.len(), seed)?;
        // A request that can never fit the KV pool would block the queue forever.
        let blocks = (prompt.len() + output_len as usize).div_ceil(c.engine.block_size);
        if blocks > c.engine.num_gpu_blocks.saturating_sub(1) {
            return Err(ApiError::bad_request(format!(
                "The request needs {blocks} KV blocks (prompt {} + output {output_len} tokens) but the cache has only {}.",
                prompt.len(),
                c.engine.num_gpu_blocks.saturating_sub(1)
            )));
        }
        let reply =
            reply::plan(&c.tokenizer, &req.reply_source, seed, output_len as usize, finish == FinishReason::Stop);
        let ereq = EngineRequest {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            prompt,
            output: reply.ids.clone(),
            finish,
            max_tokens_param: req.max_tokens,
            lora,
        };
        Ok((ereq, reply))
    }

    /// How many tokens to generate: `max_tokens` (finish `length`) or, without it, a length drawn
    /// per prompt as a model stopping at EOS would (finish `stop`); never past `max_model_len`.
    fn output_length(
        &self,
        max_tokens: Option<u32>,
        prompt_len: usize,
        seed: u64,
    ) -> Result<(u32, FinishReason), ApiError> {
        let max_len = self.config.engine.max_model_len;
        if prompt_len >= max_len {
            return Err(ApiError::bad_request(format!(
                "This model's maximum context length is {max_len} tokens. However, your request has {prompt_len} input tokens. Please reduce the length of the input messages."
            )));
        }
        let room = (max_len - prompt_len) as u32;
        match max_tokens {
            Some(m) if m > room => Err(ApiError::bad_request(format!(
                "'max_tokens' or 'max_completion_tokens' is too large: {m}. This model's maximum context length is {max_len} tokens and your request has {prompt_len} input tokens ({m} > {max_len} - {prompt_len})."
            ))),
            Some(m) => Ok((m, FinishReason::Length)),
            None => {
                let (lo, hi) = DEFAULT_OUTPUT_TOKENS;
                Ok(((lo + (seed % u64::from(hi - lo + 1)) as u32).min(room), FinishReason::Stop))
            }
        }
    }
}
