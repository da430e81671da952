//! Service Extensions mode, the pure part: what a stateless plugin on a Google Cloud load balancer
//! can give the load balancer. It has no view of pod metrics and no shared memory, so it extracts
//! the model (GAIE's body-based router does this: a header for HTTPRoute matching) and a
//! prefix-affinity key (the chained hash of the prompt's first blocks) for consistent hashing.

use crate::config::PluginConfig;
use crate::prefix::affinity_key;
use crate::request::SchedulingRequest;

/// The headers a stateless route sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatelessRoute {
    pub model_header: String,
    pub affinity_key: String,
}

pub fn route(request: &SchedulingRequest, config: &PluginConfig) -> StatelessRoute {
    StatelessRoute {
        model_header: request.model.clone(),
        affinity_key: affinity_key(&request.block_hashes, config.limits.affinity_key_blocks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{ApiKind, RequestHeaders, parse_request};

    #[test]
    fn turns_of_one_conversation_share_the_key_and_others_differ() {
        let config = PluginConfig::default();
        let system = "You are a support agent for ACME. ".repeat(20);
        let body = |user: &str| {
            serde_json::json!({"model":"Qwen/Qwen3-0.6B","messages":[{"role":"system","content":system},{"role":"user","content":user}]})
                .to_string()
        };
        let parse =
            |b: String| parse_request(ApiKind::ChatCompletions, b.as_bytes(), &RequestHeaders::default(), &config);
        let turn1 = route(&parse(body("hello")).unwrap(), &config);
        let turn2 = route(&parse(body("hello, and more")).unwrap(), &config);
        assert_eq!(turn1.model_header, "Qwen/Qwen3-0.6B");
        assert_eq!(turn1.affinity_key, turn2.affinity_key);
        let other = parse_request(
            ApiKind::ChatCompletions,
            br#"{"model":"Qwen/Qwen3-0.6B","messages":[{"role":"user","content":"a different conversation entirely, long enough to fill a block or more"}]}"#,
            &RequestHeaders::default(),
            &config,
        )
        .unwrap();
        assert_ne!(route(&other, &config).affinity_key, turn1.affinity_key);
    }
}
