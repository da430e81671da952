//! OpenAI request bodies → [`SchedulingRequest`].
//!
//! Reads only what scheduling needs: `model`, the prompt text (chat `messages` with string or
//! array-of-parts content, or completions `prompt`), `stream`, `stream_options.include_usage`,
//! `cache_salt` and `user`. The body is validated as JSON in full, but prompt strings are borrowed
//! from the body as raw JSON and only their first `max_prefix_blocks × block bytes` bytes are
//! unescaped and copied, so a 400 KB prompt costs about what a 16 KB one does; the rest is only
//! measured (its unescaped UTF-8 length, which the bytes-per-token calibration compares with the
//! pod's token count).

use crate::config::PluginConfig;
use crate::prefix;
mod json;

use json::{Messages, unescape_prefix};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;

/// Which OpenAI API a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    Completions,
    ChatCompletions,
}

impl ApiKind {
    /// The API of a request path if it is one of the configured inference paths (query ignored).
    pub fn from_path(path: &str, config: &PluginConfig) -> Option<ApiKind> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        if !config.inference_paths.iter().any(|p| p == path) {
            return None;
        }
        Some(if path.ends_with("chat/completions") { ApiKind::ChatCompletions } else { ApiKind::Completions })
    }
}

/// Request headers the scheduler reads (names from the configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    pub subset: Option<String>,
    pub objective: Option<String>,
    pub session_token: Option<String>,
}

/// Everything the scheduler knows about one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulingRequest {
    pub api: ApiKind,
    /// The model as requested (a base model or a LoRA adapter).
    pub model: String,
    /// Set when `model` names a configured LoRA adapter.
    pub lora_adapter: Option<String>,
    /// The start of the prompt, as much as prefix hashing reads, never more.
    pub prompt_prefix: String,
    /// UTF-8 bytes of the whole prompt text as the plugin reads it (escapes decoded); beyond the
    /// hashed prefix, the raw JSON length (see `prompt_bytes_exact`).
    pub prompt_bytes: usize,
    /// `prompt_bytes` is exact: the whole prompt fitted the hashed prefix. Only exact counts teach
    /// the bytes-per-token ratio.
    pub prompt_bytes_exact: bool,
    pub cache_salt: Option<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub user: Option<String>,
    /// The session token the client sent, unverified.
    pub session_token: Option<String>,
    /// The endpoint a verified session token names (set by the director, which holds the key).
    pub session_endpoint: Option<String>,
    /// Subset hint: the choice is restricted to these endpoints.
    pub subset: Option<Vec<String>>,
    pub priority: i32,
    /// Chained prefix-block hashes of `prompt_prefix` (see `prefix::block_hashes`).
    pub block_hashes: Vec<u64>,
    /// The messages carry an earlier reply (an `assistant` or `tool` message): the request
    /// continues a conversation that some gateway already placed.
    pub continues: bool,
}

/// Why a body cannot be scheduled. Each maps to a 400 or 404 reply saying what was expected.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestError {
    /// The body is not JSON (the parser's message says where).
    NotJson(String),
    /// JSON, but not an object.
    NotAnObject,
    MissingModel,
    /// A field of the wrong type: (field, what was expected).
    InvalidField(&'static str, &'static str),
    /// `messages` (chat) or `prompt` (completions) absent.
    MissingPrompt(ApiKind),
    /// The pool does not serve this model.
    UnknownModel(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson(why) => write!(f, "request body is not valid JSON: {why}"),
            Self::NotAnObject => f.write_str("request body must be a JSON object"),
            Self::MissingModel => f.write_str("request body has no 'model' field"),
            Self::InvalidField(field, expected) => write!(f, "'{field}' must be {expected}"),
            Self::MissingPrompt(ApiKind::ChatCompletions) => f.write_str("chat completion request has no 'messages'"),
            Self::MissingPrompt(ApiKind::Completions) => f.write_str("completion request has no 'prompt'"),
            Self::UnknownModel(model) => write!(f, "the model '{model}' does not exist in this pool"),
        }
    }
}

impl std::error::Error for RequestError {}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<Messages<'a>>,
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cache_salt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct Message<'a> {
    #[serde(borrow, default)]
    pub(super) role: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Collects prompt text up to a byte budget, and measures all of it: exactly while it fits the
/// budget, by its raw JSON length beyond (a prompt longer than the hashed prefix is not scanned
/// again just to be measured; its byte count is then approximate, and `exact` says so).
struct PromptText {
    text: String,
    budget: usize,
    total_bytes: usize,
    exact: bool,
    /// An `assistant` or `tool` message was read.
    continues: bool,
}

impl PromptText {
    /// `expected`: how much text there may be (the body's length), to allocate once.
    fn new(budget: usize, expected: usize) -> Self {
        Self {
            text: String::with_capacity(budget.min(expected)),
            budget,
            total_bytes: 0,
            exact: true,
            continues: false,
        }
    }

    fn push_str(&mut self, s: &str) {
        self.total_bytes += s.len();
        let room = self.budget.saturating_sub(self.text.len());
        if room > 0 {
            let mut end = room.min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&s[..end]);
        }
    }

    /// A raw JSON string: unescaped up to the remaining budget only.
    fn push_raw_string(&mut self, raw: &str) -> Result<(), ()> {
        let room = self.budget.saturating_sub(self.text.len());
        let before = self.text.len();
        if room > 0 && unescape_prefix(raw, room, &mut self.text)? {
            self.total_bytes += self.text.len() - before;
            return Ok(());
        }
        self.total_bytes += raw.len().saturating_sub(2).max(self.text.len() - before);
        self.exact = false;
        Ok(())
    }
}

/// Parses a body of the given API.
pub fn parse_request(
    api: ApiKind,
    body: &[u8],
    headers: &RequestHeaders,
    config: &PluginConfig,
) -> Result<SchedulingRequest, RequestError> {
    let parsed = parse_body(body)?;
    let model = read_model(parsed.model)?;
    let lora_adapter = resolve_model(&model, config)?;
    let (api, prompt) = read_prompt_text(api, &parsed, config, body.len())?;
    let stream = optional(parsed.stream, "stream", "a boolean")?.unwrap_or(false);
    let include_usage = match parsed.stream_options {
        Some(raw) if raw.get() != "null" => serde_json::from_str::<StreamOptions>(raw.get())
            .map_err(|_| RequestError::InvalidField("stream_options", "an object"))?
            .include_usage
            .unwrap_or(false),
        _ => false,
    };
    let cache_salt: Option<String> = optional(parsed.cache_salt, "cache_salt", "a string")?;
    let user: Option<String> = optional(parsed.user, "user", "a string")?;
    let block_hashes = prefix::block_hashes(
        &model,
        cache_salt.as_deref(),
        &prompt.text,
        config.prefix.block_bytes,
        config.prefix.max_prefix_blocks,
    );
    let subset = headers
        .subset
        .as_deref()
        .map(|s| s.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect::<Vec<_>>());
    Ok(SchedulingRequest {
        api,
        model,
        lora_adapter,
        prompt_bytes: prompt.total_bytes,
        prompt_bytes_exact: prompt.exact,
        prompt_prefix: prompt.text,
        cache_salt,
        stream,
        include_usage,
        user,
        session_token: headers.session_token.clone(),
        session_endpoint: None,
        subset,
        priority: config.priority_of(headers.objective.as_deref()),
        block_hashes,
        continues: prompt.continues,
    })
}

/// The body as a JSON object whose fields are borrowed raw, or why it is not one.
fn parse_body(body: &[u8]) -> Result<Body<'_>, RequestError> {
    let trimmed = body.iter().position(|b| !b.is_ascii_whitespace()).map(|i| &body[i..]).unwrap_or(&[]);
    if trimmed.is_empty() {
        return Err(RequestError::NotJson("the body is empty".into()));
    }
    if trimmed[0] != b'{' {
        // Tell apart "not JSON" from "JSON but not an object".
        return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(RequestError::NotAnObject),
            Err(e) => Err(RequestError::NotJson(e.to_string())),
        };
    }
    serde_json::from_slice(body).map_err(|e| RequestError::NotJson(e.to_string()))
}

fn read_model(raw: Option<&RawValue>) -> Result<String, RequestError> {
    let raw = raw.ok_or(RequestError::MissingModel)?;
    let model: String = serde_json::from_str(raw.get()).map_err(|_| RequestError::InvalidField("model", "a string"))?;
    if model.is_empty() { Err(RequestError::MissingModel) } else { Ok(model) }
}

/// The prompt (chat messages or completions prompt), up to the hashing budget, and the API it
/// really is (a custom completions-style path may carry chat messages).
fn read_prompt_text(
    api: ApiKind,
    parsed: &Body,
    config: &PluginConfig,
    body_len: usize,
) -> Result<(ApiKind, PromptText), RequestError> {
    let budget = config.prefix.block_bytes.saturating_mul(config.prefix.max_prefix_blocks);
    let mut prompt = PromptText::new(budget, body_len);
    let api = match (api, parsed.messages.is_some(), parsed.prompt.is_some()) {
        (ApiKind::Completions, true, false) => ApiKind::ChatCompletions,
        (api, _, _) => api,
    };
    match api {
        ApiKind::ChatCompletions => {
            read_messages(parsed.messages.as_ref().ok_or(RequestError::MissingPrompt(api))?, &mut prompt)?
        }
        ApiKind::Completions => read_prompt(parsed.prompt.ok_or(RequestError::MissingPrompt(api))?, &mut prompt)?,
    }
    Ok((api, prompt))
}

/// `Ok(Some(adapter))` for a configured LoRA adapter, `Ok(None)` for a base model.
fn resolve_model(model: &str, config: &PluginConfig) -> Result<Option<String>, RequestError> {
    let models = &config.models;
    if models.adapters.iter().any(|a| a == model) {
        return Ok(Some(model.to_string()));
    }
    if models.accepts_any() || models.served.iter().any(|m| m == model) {
        return Ok(None);
    }
    Err(RequestError::UnknownModel(model.to_string()))
}

fn optional<T: serde::de::DeserializeOwned>(
    raw: Option<&RawValue>,
    field: &'static str,
    expected: &'static str,
) -> Result<Option<T>, RequestError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| RequestError::InvalidField(field, expected)),
    }
}

/// Chat messages: each contributes `role: content\n`, content being a string or text parts
/// (other part types contribute a stable marker, so an image changes the prefix identically).
fn read_messages(messages: &Messages, prompt: &mut PromptText) -> Result<(), RequestError> {
    const EXPECTED: &str = "an array of message objects";
    let Messages::List(messages) = messages else { return Err(RequestError::InvalidField("messages", EXPECTED)) };
    if messages.is_empty() {
        return Err(RequestError::InvalidField("messages", "a non-empty array"));
    }
    for message in messages {
        let message = message.as_ref().ok_or(RequestError::InvalidField("messages", EXPECTED))?;
        let role = match message.role {
            Some(raw) => serde_json::from_str::<String>(raw.get())
                .map_err(|_| RequestError::InvalidField("messages[].role", "a string"))?,
            None => return Err(RequestError::InvalidField("messages[].role", "present")),
        };
        prompt.continues |= role == "assistant" || role == "tool";
        prompt.push_str(&role);
        prompt.push_str(": ");
        match message.content {
            None => {}
            Some(raw) => match raw.get().as_bytes().first() {
                Some(b'"') => prompt
                    .push_raw_string(raw.get())
                    .map_err(|_| RequestError::InvalidField("messages[].content", "a valid string"))?,
                Some(b'[') => {
                    let parts: Vec<Part> = serde_json::from_str(raw.get()).map_err(|_| {
                        RequestError::InvalidField("messages[].content", "a string or an array of parts")
                    })?;
                    for part in parts {
                        match (part.kind.as_deref(), part.text) {
                            (Some("text") | None, Some(text)) if text.get().starts_with('"') => prompt
                                .push_raw_string(text.get())
                                .map_err(|_| RequestError::InvalidField("messages[].content[].text", "a string"))?,
                            (Some(kind), _) => {
                                prompt.push_str("<");
                                prompt.push_str(kind);
                                prompt.push_str(">");
                            }
                            (None, _) => {
                                return Err(RequestError::InvalidField("messages[].content[]", "a part with a 'type'"));
                            }
                        }
                    }
                }
                Some(b'n') => {} // null content (assistant tool calls)
                _ => return Err(RequestError::InvalidField("messages[].content", "a string or an array of parts")),
            },
        }
        prompt.push_str("\n");
    }
    Ok(())
}

/// Completions `prompt`: a string, an array of strings, or token ids (hashed as their text).
fn read_prompt(raw: &RawValue, prompt: &mut PromptText) -> Result<(), RequestError> {
    const EXPECTED: &str = "a string, an array of strings or an array of token ids";
    match raw.get().as_bytes().first() {
        Some(b'"') => prompt.push_raw_string(raw.get()).map_err(|_| RequestError::InvalidField("prompt", EXPECTED)),
        Some(b'[') => {
            let items: Vec<&RawValue> =
                serde_json::from_str(raw.get()).map_err(|_| RequestError::InvalidField("prompt", EXPECTED))?;
            if items.is_empty() {
                return Err(RequestError::InvalidField("prompt", "non-empty"));
            }
            for item in items {
                match item.get().as_bytes().first() {
                    Some(b'"') => prompt
                        .push_raw_string(item.get())
                        .map_err(|_| RequestError::InvalidField("prompt", EXPECTED))?,
                    Some(b'0'..=b'9') => {
                        prompt.push_str(item.get());
                        prompt.push_str(" ");
                    }
                    Some(b'[') => {
                        prompt.push_str(item.get());
                    }
                    _ => return Err(RequestError::InvalidField("prompt", EXPECTED)),
                }
            }
            Ok(())
        }
        _ => Err(RequestError::InvalidField("prompt", EXPECTED)),
    }
}

#[cfg(test)]
mod tests;
