use super::*;

fn config() -> PluginConfig {
    PluginConfig::default()
}

fn parse(api: ApiKind, body: &str) -> Result<SchedulingRequest, RequestError> {
    parse_request(api, body.as_bytes(), &RequestHeaders::default(), &config())
}

#[test]
fn paths_map_to_apis_and_others_pass_through() {
    let c = config();
    assert_eq!(ApiKind::from_path("/v1/chat/completions", &c), Some(ApiKind::ChatCompletions));
    assert_eq!(ApiKind::from_path("/v1/completions?x=1", &c), Some(ApiKind::Completions));
    assert_eq!(ApiKind::from_path("/v1/models", &c), None);
    assert_eq!(ApiKind::from_path("/health", &c), None);
}

#[test]
fn chat_with_string_and_part_contents() {
    let r = parse(
        ApiKind::ChatCompletions,
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"cache_salt":"s","user":"u",
            "messages":[{"role":"system","content":"You are \"helpful\".\nBe brief."},
                        {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
    )
    .unwrap();
    assert_eq!(r.prompt_prefix, "system: You are \"helpful\".\nBe brief.\nuser: Hi<image_url>\n");
    assert!(r.stream && r.include_usage);
    assert_eq!(r.cache_salt.as_deref(), Some("s"));
    assert_eq!(r.user.as_deref(), Some("u"));
    assert_eq!(r.api, ApiKind::ChatCompletions);
    assert!(!r.continues, "a first turn");
}

#[test]
fn a_conversation_with_an_earlier_reply_continues() {
    let body = |roles: &[&str]| {
        let messages: Vec<String> = roles.iter().map(|r| format!(r#"{{"role":"{r}","content":"text"}}"#)).collect();
        format!(r#"{{"model":"m","messages":[{}]}}"#, messages.join(","))
    };
    let continues = |roles: &[&str]| parse(ApiKind::ChatCompletions, &body(roles)).unwrap().continues;
    assert!(!continues(&["system", "user"]));
    assert!(continues(&["system", "user", "assistant", "user"]));
    assert!(continues(&["user", "tool", "user"]));
    assert!(!parse(ApiKind::Completions, r#"{"model":"m","prompt":"assistant: hi"}"#).unwrap().continues);
}

#[test]
fn completions_prompt_string_array_and_tokens() {
    assert_eq!(parse(ApiKind::Completions, r#"{"model":"m","prompt":"abc"}"#).unwrap().prompt_prefix, "abc");
    assert_eq!(parse(ApiKind::Completions, r#"{"model":"m","prompt":["a","b"]}"#).unwrap().prompt_prefix, "ab");
    assert_eq!(parse(ApiKind::Completions, r#"{"model":"m","prompt":[1,2]}"#).unwrap().prompt_prefix, "1 2 ");
}

#[test]
fn every_malformed_body_has_its_error() {
    let chat = ApiKind::ChatCompletions;
    assert!(matches!(parse(chat, "not json"), Err(RequestError::NotJson(_))));
    assert!(matches!(parse(chat, ""), Err(RequestError::NotJson(_))));
    assert!(matches!(parse(chat, r#"{"model":"m","messages":[}"#), Err(RequestError::NotJson(_))));
    assert_eq!(parse(chat, "[1,2]"), Err(RequestError::NotAnObject));
    assert_eq!(parse(chat, r#"{"messages":[]}"#), Err(RequestError::MissingModel));
    assert_eq!(parse(chat, r#"{"model":7,"messages":[]}"#), Err(RequestError::InvalidField("model", "a string")));
    assert_eq!(parse(chat, r#"{"model":"m"}"#), Err(RequestError::MissingPrompt(ApiKind::ChatCompletions)));
    assert_eq!(parse(ApiKind::Completions, r#"{"model":"m"}"#), Err(RequestError::MissingPrompt(ApiKind::Completions)));
    assert!(matches!(parse(chat, r#"{"model":"m","messages":"hi"}"#), Err(RequestError::InvalidField("messages", _))));
    assert!(matches!(parse(chat, r#"{"model":"m","messages":[]}"#), Err(RequestError::InvalidField("messages", _))));
    assert!(matches!(
        parse(chat, r#"{"model":"m","messages":[{"role":"user","content":5}]}"#),
        Err(RequestError::InvalidField("messages[].content", _))
    ));
    assert!(matches!(
        parse(chat, r#"{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}"#),
        Err(RequestError::InvalidField("stream", _))
    ));
}

#[test]
fn unknown_models_are_refused_when_the_pool_lists_its_models() {
    let mut c = config();
    c.models.served = vec!["Qwen/Qwen3-0.6B".into()];
    c.models.adapters = vec!["sql-lora".into()];
    let body = |m: &str| format!(r#"{{"model":"{m}","prompt":"x"}}"#);
    let h = RequestHeaders::default();
    assert_eq!(
        parse_request(ApiKind::Completions, body("gpt-4").as_bytes(), &h, &c),
        Err(RequestError::UnknownModel("gpt-4".into()))
    );
    let base = parse_request(ApiKind::Completions, body("Qwen/Qwen3-0.6B").as_bytes(), &h, &c).unwrap();
    assert_eq!(base.lora_adapter, None);
    let lora = parse_request(ApiKind::Completions, body("sql-lora").as_bytes(), &h, &c).unwrap();
    assert_eq!(lora.lora_adapter.as_deref(), Some("sql-lora"));
}

#[test]
fn a_huge_prompt_copies_and_hashes_only_the_bounded_prefix() {
    let c = config();
    let huge = "x".repeat(400_000);
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{huge}"}}]}}"#);
    let r = parse_request(ApiKind::ChatCompletions, body.as_bytes(), &RequestHeaders::default(), &c).unwrap();
    let budget = c.prefix.block_bytes * c.prefix.max_prefix_blocks;
    assert!(r.prompt_prefix.len() <= budget, "{} > {budget}", r.prompt_prefix.len());
    assert!(r.block_hashes.len() <= c.prefix.max_prefix_blocks);
    assert_eq!(r.prompt_bytes, "user: ".len() + 400_000 + 1, "its raw length, not scanned again");
    assert!(!r.prompt_bytes_exact, "beyond the hashed prefix the count is not exact");
}

#[test]
fn prompt_bytes_are_the_unescaped_utf8_length_however_the_client_escaped_it() {
    // The same Chinese sentence, as Python's json.dumps writes it (ensure_ascii) and raw.
    let text = "你好，世界。\n😀 \"quoted\"";
    let escaped = serde_json::to_string(text).unwrap().replace('你', "\\u4f60").replace('😀', "\\ud83d\\ude00");
    let raw = serde_json::to_string(text).unwrap();
    for literal in [escaped, raw] {
        let body = format!(r#"{{"model":"m","prompt":{literal}}}"#);
        let r = parse(ApiKind::Completions, &body).unwrap();
        assert_eq!(r.prompt_bytes, text.len(), "{literal}");
        assert!(r.prompt_bytes_exact);
        assert_eq!(r.prompt_prefix, text);
    }
}

#[test]
fn unescaping_handles_unicode_and_stops_at_the_budget() {
    let mut out = String::new();
    unescape_prefix(r#""a\u00e9\ud83d\ude00\n""#, 100, &mut out).unwrap();
    assert_eq!(out, "aé😀\n");
    let mut out = String::new();
    assert_eq!(unescape_prefix(r#""héllo""#, 2, &mut out), Ok(false));
    assert_eq!(out, "h");
    let mut out = String::new();
    assert_eq!(unescape_prefix(r#""a\u00e9b""#, 2, &mut out), Ok(false), "é does not fit in the last byte");
    assert_eq!(out, "a");
    assert_eq!(unescape_prefix(r#""ab""#, 2, &mut String::new()), Ok(true), "exactly the budget: all of it");
    assert!(unescape_prefix(r#""bad \q""#, 100, &mut String::new()).is_err());
    assert!(unescape_prefix(r#""cut \u12""#, 100, &mut String::new()).is_err());
}

#[test]
fn messages_that_are_not_message_objects_name_the_field() {
    let chat = ApiKind::ChatCompletions;
    for messages in [r#"{"role":"user"}"#, r#"["hi"]"#, r#"[[1]]"#, "7", "true"] {
        let body = format!(r#"{{"model":"m","messages":{messages}}}"#);
        assert_eq!(
            parse(chat, &body).map(|_| ()),
            Err(RequestError::InvalidField("messages", "an array of message objects")),
            "{messages}"
        );
    }
}

#[test]
fn headers_give_subset_priority_and_session() {
    let mut c = config();
    c.objectives.insert("batch".into(), -1);
    let headers = RequestHeaders {
        subset: Some("10.0.0.1:8000, 10.0.0.2:8000".into()),
        objective: Some("batch".into()),
        session_token: Some("wis2.token".into()),
    };
    let r = parse_request(ApiKind::Completions, br#"{"model":"m","prompt":"p"}"#, &headers, &c).unwrap();
    assert_eq!(r.subset, Some(vec!["10.0.0.1:8000".to_string(), "10.0.0.2:8000".to_string()]));
    assert_eq!(r.priority, -1);
    assert_eq!(r.session_token.as_deref(), Some("wis2.token"));
    assert_eq!(r.session_endpoint, None, "only the director, holding the key, resolves a token");
}
