use super::*;

#[test]
fn empty_configuration_is_complete() {
    let config = PluginConfig::from_json(b"{}").unwrap();
    assert_eq!(config.mode, Mode::Envoy);
    assert_eq!(config.inference_paths, vec!["/v1/completions", "/v1/chat/completions"]);
    assert_eq!(config.headers.destination, "x-gateway-destination-endpoint");
    assert_eq!(config.prefix, PrefixSettings::default());
    assert_eq!(config.pool.refresh_interval_ms, 50);
}

#[test]
fn a_typo_is_an_error_naming_the_field() {
    let err = PluginConfig::from_json(br#"{"pool":{"refreshIntervalMS":10}}"#).unwrap_err();
    assert_eq!(err.path, "pool.refreshIntervalMS");
    assert!(err.message.contains("unknown field `refreshIntervalMS`"), "{err}");
}

#[test]
fn a_wrong_type_names_the_nested_path() {
    let err = PluginConfig::from_json(
        br#"{"endpointPickerConfig":{"plugins":[{"type":"queue-scorer"},{"type":"prefix-cache-scorer","parameters":{"blockSizeTokens":"x"}}]}}"#,
    )
    .unwrap_err();
    assert_eq!(err.path, "endpointPickerConfig.plugins[1].parameters.blockSizeTokens");
    assert!(err.to_string().contains("expected u32"), "{err}");
}

#[test]
fn debug_header_takes_a_flag_or_a_format() {
    let read = |v: &str| PluginConfig::from_json(format!(r#"{{"debugHeader":{v}}}"#).as_bytes());
    assert_eq!(read("false").unwrap().debug_header, DebugHeader::Off);
    assert_eq!(read("true").unwrap().debug_header, DebugHeader::Summary);
    assert_eq!(read(r#""summary""#).unwrap().debug_header, DebugHeader::Summary);
    assert_eq!(read(r#""json""#).unwrap().debug_header, DebugHeader::Json);
    let err = read(r#""yaml""#).unwrap_err();
    assert_eq!(err.path, "debugHeader");
    assert!(err.message.contains("unknown debug header format 'yaml'"), "{err}");
    let err = read("3").unwrap_err();
    assert!(err.message.contains(r#"expected true, false, "summary" or "json""#), "{err}");
}

#[test]
fn static_endpoints_must_be_addresses() {
    let err = PluginConfig::from_json(br#"{"pool":{"endpoints":["10.0.0.1:8000","vllm:8000"]}}"#).unwrap_err();
    assert_eq!(err.path, "pool.endpoints[1]");
}

#[test]
fn mode_and_prefix_settings_are_read() {
    let config = PluginConfig::from_json(
        br#"{"mode":"service-extensions","endpointPickerConfig":{"plugins":[{"type":"prefix-cache-scorer","parameters":{"blockSizeTokens":32,"maxPrefixBlocksToMatch":64,"lruCapacityPerServer":1000}}]}}"#,
    )
    .unwrap();
    assert_eq!(config.mode, Mode::ServiceExtensions);
    assert_eq!(config.prefix.block_size_tokens, 32);
    assert_eq!(config.prefix.max_prefix_blocks, 64);
    assert_eq!(config.prefix.lru_capacity_per_server, 1000);
    assert_eq!(config.prefix.block_bytes, 128);
}

#[test]
fn objectives_give_priorities() {
    let config = PluginConfig::from_json(br#"{"objectives":{"batch":-1,"chat":10},"defaultPriority":0}"#).unwrap();
    assert_eq!(config.priority_of(Some("batch")), -1);
    assert_eq!(config.priority_of(Some("chat")), 10);
    assert_eq!(config.priority_of(Some("other")), 0);
    assert_eq!(config.priority_of(None), 0);
}

#[test]
fn the_prefix_cap_is_what_a_routing_event_carries() {
    let read = |n: usize| {
        PluginConfig::from_json(
            format!(r#"{{"endpointPickerConfig":{{"plugins":[{{"type":"prefix-cache-scorer","parameters":{{"maxPrefixBlocksToMatch":{n}}}}}]}}}}"#)
                .as_bytes(),
        )
    };
    assert_eq!(read(MAX_EVENT_HASHES).unwrap().prefix.max_prefix_blocks, MAX_EVENT_HASHES);
    let err = read(8192).unwrap_err();
    assert!(err.path.ends_with("maxPrefixBlocksToMatch"), "{err}");
    assert!(err.message.contains("480"), "{err}");
}

#[test]
fn unknown_prefix_parameters_are_errors() {
    let err = PluginConfig::from_json(
        br#"{"endpointPickerConfig":{"plugins":[{"type":"prefix-cache-scorer","parameters":{"blockSize":16}}]}}"#,
    )
    .unwrap_err();
    assert_eq!(err.path, "endpointPickerConfig.plugins[0].parameters.blockSize");
}

#[test]
fn the_session_scorer_needs_a_key() {
    let with = |params: &str| {
        PluginConfig::from_json(
            format!(r#"{{"endpointPickerConfig":{{"plugins":[{{"type":"session-affinity-scorer","parameters":{params}}}]}}}}"#).as_bytes(),
        )
    };
    let err = with("{}").unwrap_err();
    assert!(err.message.contains("needs a key"), "{err}");
    assert!(with(r#"{"secret":"short"}"#).unwrap_err().message.contains("at least 16"));
    let err = with(r#"{"secretEnv":"WIS_TEST_UNSET_SESSION_SECRET"}"#).unwrap_err();
    assert!(err.path.ends_with("secretEnv") && err.message.contains("host_env_keys"), "{err}");
    let config = with(r#"{"secret":"0123456789abcdef0123","ttlSeconds":60}"#).unwrap();
    assert_eq!(config.session.map(|k| k.ttl_s), Some(60));
    assert!(PluginConfig::default().session.is_none());
}

#[test]
fn not_json_is_an_error() {
    assert!(PluginConfig::from_json(b"mode: envoy").is_err());
}
