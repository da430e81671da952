//! vLLM's OpenAI-compatible request and response shapes (only what the simulator needs).
//!
//! Errors use vLLM's `ErrorResponse`: `{"error": {"message", "type", "param", "code"}}` with
//! `BadRequestError`/400 for a bad body or an over-long prompt and `NotFoundError`/404 for an unknown
//! model. Usage carries `prompt_tokens_details` only with `--enable-prompt-tokens-details`: `null`
//! in a non-streaming response without it, absent from the streaming usage chunk (`exclude_none`).

use serde_json::{Value, json};

/// Which endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

/// What the simulator keeps of a request body.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    pub model: String,
    /// The prompt text after the chat template (chat) or as sent (completions).
    pub prompt_text: String,
    /// The text a reply is drawn from: the messages' contents (chat) or the prompt (completions).
    pub reply_source: String,
    /// Token ids sent directly (`"prompt": [1, 2, 3]`), if any.
    pub prompt_ids: Option<Vec<u32>>,
    pub max_tokens: Option<u32>,
    pub stream: bool,
    pub include_usage: bool,
}

/// An error answered to the client, in vLLM's JSON shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: 400, kind: "BadRequestError", message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: 404, kind: "NotFoundError", message: message.into() }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError { status: 500, kind: "InternalServerError", message: message.into() }
    }

    pub fn body(&self) -> String {
        json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.status}}).to_string()
    }
}

/// Qwen's ChatML template, which Qwen3's tokenizer_config applies (without the thinking parts).
pub fn chat_template(messages: &[(String, String)]) -> String {
    let mut s = String::new();
    for (role, content) in messages {
        s.push_str("<|im_start|>");
        s.push_str(role);
        s.push('\n');
        s.push_str(content);
        s.push_str("<|im_end|>\n");
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

fn message_content(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match p.get("text").and_then(Value::as_str) {
                    Some(t) => out.push_str(t),
                    None => {
                        return Err(ApiError::bad_request(
                            "only text content parts are supported: expected {\"type\": \"text\", \"text\": ...}",
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(ApiError::bad_request("message content must be a string or a list of text parts")),
    }
}

fn optional_u32(body: &Value, key: &str) -> Result<Option<u32>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= u64::from(u32::MAX) => Ok(Some(n as u32)),
            _ => Err(ApiError::bad_request(format!("{key} must be a positive integer, got {v}"))),
        },
    }
}

/// A request's prompt: its text, what a reply is drawn from, token ids sent as such.
struct Prompt {
    text: String,
    reply_source: String,
    ids: Option<Vec<u32>>,
}

/// `prompt` of `/v1/completions`: a string, a list of one string, or a list of token ids.
fn completion_prompt(prompt: Option<&Value>) -> Result<Prompt, ApiError> {
    let text = match prompt {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            let ids: Vec<u32> = items.iter().filter_map(Value::as_u64).map(|x| x as u32).collect();
            return Ok(Prompt { text: String::new(), reply_source: String::new(), ids: Some(ids) });
        }
        Some(Value::Array(_)) => {
            return Err(ApiError::bad_request(
                "prompt must be a string, a list of one string, or a list of token ids (batches are not simulated)",
            ));
        }
        None => return Err(ApiError::bad_request("field required: prompt")),
        Some(other) => return Err(ApiError::bad_request(format!("prompt must be a string, got {other}"))),
    };
    Ok(Prompt { reply_source: text.clone(), text, ids: None })
}

/// `messages` of `/v1/chat/completions`, rendered with the chat template.
fn chat_prompt(messages: Option<&Value>) -> Result<Prompt, ApiError> {
    let Some(Value::Array(msgs)) = messages else {
        return Err(ApiError::bad_request("field required: messages (a list of {role, content})"));
    };
    if msgs.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty"));
    }
    let mut turns = Vec::with_capacity(msgs.len());
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
            ApiError::bad_request("every message needs a string role (system, user, assistant, tool)")
        })?;
        turns.push((role.to_string(), message_content(m.get("content").unwrap_or(&Value::Null))?));
    }
    let text = chat_template(&turns);
    let reply_source = turns.into_iter().map(|(_, content)| content).collect::<Vec<_>>().join("\n");
    Ok(Prompt { text, reply_source, ids: None })
}

/// Parses a completions or chat body.
pub fn parse_request(api: Api, bytes: &[u8]) -> Result<ParsedRequest, ApiError> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    if !body.is_object() {
        return Err(ApiError::bad_request("request body must be a JSON object"));
    }
    let model = match body.get("model") {
        Some(Value::String(m)) => m.clone(),
        None | Some(Value::Null) => return Err(ApiError::bad_request("field required: model")),
        Some(other) => return Err(ApiError::bad_request(format!("model must be a string, got {other}"))),
    };
    let Prompt { text: prompt_text, reply_source, ids: prompt_ids } = match api {
        Api::Completions => completion_prompt(body.get("prompt"))?,
        Api::Chat => chat_prompt(body.get("messages"))?,
    };
    let max_tokens = match api {
        Api::Chat => match optional_u32(&body, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => optional_u32(&body, "max_tokens")?,
        },
        // vLLM's CompletionRequest defaults max_tokens to 16, as OpenAI's API does.
        Api::Completions => Some(optional_u32(&body, "max_tokens")?.unwrap_or(16)),
    };
    if let Some(n) = body.get("n").and_then(Value::as_u64)
        && n != 1
    {
        return Err(ApiError::bad_request("the simulator serves n=1 only"));
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(ApiError::bad_request(format!("stream must be a boolean, got {other}"))),
    };
    let include_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    if body.get("stream_options").is_some_and(|o| !o.is_null()) && !stream {
        return Err(ApiError::bad_request("Stream options can only be defined when `stream=True`."));
    }
    Ok(ParsedRequest { model, prompt_text, reply_source, prompt_ids, max_tokens, stream, include_usage })
}

/// The `usage` object.
pub fn usage(prompt_tokens: usize, completion_tokens: usize, cached: usize, details: bool, streaming: bool) -> Value {
    let mut u = json!({
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    });
    if details {
        u["prompt_tokens_details"] = json!({"cached_tokens": cached});
    } else if !streaming {
        u["prompt_tokens_details"] = Value::Null;
    }
    u
}

/// One streamed chunk carrying `text` (and the finish reason on the last one).
pub fn stream_chunk(api: Api, id: &str, created: u64, model: &str, text: &str, finish: Option<&str>) -> Value {
    match api {
        Api::Chat => json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": finish}],
        }),
        Api::Completions => json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish, "stop_reason": null}],
        }),
    }
}

/// The first chat chunk, which carries the role (vLLM sends it before any token).
pub fn chat_role_chunk(id: &str, created: u64, model: &str) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}],
    })
}

/// The final usage chunk of a stream (`choices: []`).
pub fn usage_chunk(api: Api, id: &str, created: u64, model: &str, usage: Value) -> Value {
    let object = if api == Api::Chat { "chat.completion.chunk" } else { "text_completion" };
    json!({"id": id, "object": object, "created": created, "model": model, "choices": [], "usage": usage})
}

/// A non-streaming response.
pub fn full_response(api: Api, id: &str, created: u64, model: &str, text: &str, finish: &str, usage: Value) -> Value {
    match api {
        Api::Chat => json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "reasoning_content": null, "tool_calls": []},
                "logprobs": null, "finish_reason": finish, "stop_reason": null,
            }],
            "usage": usage, "prompt_logprobs": null,
        }),
        Api::Completions => json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish, "stop_reason": null,
                         "prompt_logprobs": null}],
            "usage": usage,
        }),
    }
}

/// `data: <json>\n\n`
pub fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// The stream terminator.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_body_becomes_a_chatml_prompt() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"stream_options":{"include_usage":true}}"#;
        let r = parse_request(Api::Chat, body).unwrap();
        assert_eq!(
            r.prompt_text,
            "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_tokens, None);
    }

    #[test]
    fn completions_default_to_16_tokens_and_accept_token_ids() {
        let r = parse_request(Api::Completions, br#"{"model":"m","prompt":[1,2,3]}"#).unwrap();
        assert_eq!(r.max_tokens, Some(16));
        assert_eq!(r.prompt_ids, Some(vec![1, 2, 3]));
    }

    #[test]
    fn bad_bodies_are_400_with_a_reason() {
        for (api, body) in [
            (Api::Chat, &b"not json"[..]),
            (Api::Chat, br#"{"messages":[{"role":"user","content":"x"}]}"#),
            (Api::Chat, br#"{"model":"m","messages":"x"}"#),
            (Api::Completions, br#"{"model":"m","prompt":"x","max_tokens":-1}"#),
            (Api::Completions, br#"{"model":"m","prompt":"x","stream_options":{"include_usage":true}}"#),
        ] {
            let e = parse_request(api, body).unwrap_err();
            assert_eq!((e.status, e.kind), (400, "BadRequestError"), "{e:?}");
            let v: Value = serde_json::from_str(&e.body()).unwrap();
            assert_eq!(v["error"]["code"], 400);
            assert!(v["error"]["param"].is_null());
        }
    }

    #[test]
    fn usage_details_follow_the_flag() {
        assert_eq!(usage(10, 2, 0, true, true)["prompt_tokens_details"]["cached_tokens"], 0);
        assert!(usage(10, 2, 0, false, true).get("prompt_tokens_details").is_none());
        assert!(usage(10, 2, 0, false, false)["prompt_tokens_details"].is_null());
    }
}
