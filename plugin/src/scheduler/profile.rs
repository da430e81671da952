//! Builds a [`Scheduler`] from llm-d's `EndpointPickerConfig` and runs one decision.
//!
//! The profile is the first of `schedulingProfiles` (llm-d's single-profile handler); with none,
//! every configured plugin is used in order with weight 1. With no `endpointPickerConfig` at all,
//! the llm-d guide's default applies: `prefix-cache-scorer` 3, `queue-scorer` 2,
//! `kv-cache-utilization-scorer` 2, `max-score-picker`. The `saturation-filter` is not in it (as in
//! the guide): dropping every pod whose queue passed 5 sends a prefix away from the pod holding it as
//! soon as the pool is busy, which under saturation cost most of the prefix-cache hits in our
//! benchmark. Its thresholds still decide when sheddable requests are refused.

use super::pickers::{MaxScoreParams, Picker};
use super::saturation::SaturationParams;
use super::scorers::{self, SCORER_TYPES, Scorer};
use super::{Candidate, ScheduleError, SchedulingContext, fnv1a};
use crate::config::{
    ConfigError, EndpointPickerConfig, PluginConfig, PluginRef, PluginSpec, ProfileSpec, parse_parameters,
};
use crate::decision::{Decision, EndpointScores, ScorerScore};
use crate::request::SchedulingRequest;

const FILTER_TYPES: &[&str] = &["saturation-filter"];
const PICKER_TYPES: &[&str] = &["max-score-picker", "random-picker", "weighted-random-picker"];
/// llm-d plugin types that have no effect in a single-profile, in-proxy picker; accepted so an
/// llm-d configuration carries over unchanged.
const ACCEPTED_NO_OP_TYPES: &[&str] = &["single-profile-handler"];

struct WeightedScorer {
    name: String,
    weight: f64,
    scorer: Box<dyn Scorer>,
}

/// A configured scheduling profile, ready to decide.
pub struct Scheduler {
    profile: String,
    saturation: SaturationParams,
    saturation_filter: bool,
    scorers: Vec<WeightedScorer>,
    picker: Picker,
    fallback_count: usize,
    affinity_key_blocks: usize,
}

fn default_picker_config() -> EndpointPickerConfig {
    let plugin = |t: &str| PluginSpec { plugin_type: t.into(), name: None, parameters: serde_json::Value::Null };
    let reference = |r: &str, weight: Option<f64>| PluginRef { plugin_ref: r.into(), weight };
    EndpointPickerConfig {
        api_version: None,
        kind: None,
        plugins: vec![
            plugin("prefix-cache-scorer"),
            plugin("queue-scorer"),
            plugin("kv-cache-utilization-scorer"),
            plugin("max-score-picker"),
        ],
        scheduling_profiles: vec![ProfileSpec {
            name: "default".into(),
            plugins: vec![
                reference("prefix-cache-scorer", Some(3.0)),
                reference("queue-scorer", Some(2.0)),
                reference("kv-cache-utilization-scorer", Some(2.0)),
                reference("max-score-picker", None),
            ],
        }],
    }
}

impl Scheduler {
    pub fn new(config: &PluginConfig) -> Result<Self, ConfigError> {
        let epc = config.endpoint_picker_config.clone().unwrap_or_else(default_picker_config);
        let base = "endpointPickerConfig";
        for (i, plugin) in epc.plugins.iter().enumerate() {
            let t = plugin.plugin_type.as_str();
            let known = SCORER_TYPES.contains(&t)
                || FILTER_TYPES.contains(&t)
                || PICKER_TYPES.contains(&t)
                || ACCEPTED_NO_OP_TYPES.contains(&t);
            if !known {
                let mut all: Vec<&str> = [SCORER_TYPES, FILTER_TYPES, PICKER_TYPES].concat();
                all.sort_unstable();
                return Err(ConfigError::new(
                    format!("{base}.plugins[{i}].type"),
                    format!("unknown plugin type '{t}' (known: {})", all.join(", ")),
                ));
            }
        }
        let (profile_name, refs, profile_path) = match epc.scheduling_profiles.first() {
            Some(profile) => (profile.name.clone(), profile.plugins.clone(), format!("{base}.schedulingProfiles[0]")),
            None => (
                "default".to_string(),
                epc.plugins.iter().map(|p| PluginRef { plugin_ref: p.reference().to_string(), weight: None }).collect(),
                format!("{base}.plugins"),
            ),
        };
        let mut scheduler = Scheduler {
            profile: profile_name,
            saturation: SaturationParams::default(),
            saturation_filter: false,
            scorers: Vec::new(),
            picker: Picker::MaxScore(MaxScoreParams::default()),
            fallback_count: config.limits.fallback_count,
            affinity_key_blocks: config.limits.affinity_key_blocks.max(1),
        };
        // The saturation thresholds also govern shedding, whether or not the filter is in the profile.
        for (i, plugin) in epc.plugins.iter().enumerate() {
            if plugin.plugin_type == "saturation-filter" {
                scheduler.saturation =
                    parse_parameters(&plugin.parameters, &format!("{base}.plugins[{i}].parameters"))?;
            }
        }
        for (j, reference) in refs.iter().enumerate() {
            let ref_path = format!("{profile_path}.plugins[{j}]");
            let Some((i, plugin)) = epc.plugins.iter().enumerate().find(|(_, p)| p.reference() == reference.plugin_ref)
            else {
                return Err(ConfigError::new(
                    format!("{ref_path}.pluginRef"),
                    format!("no plugin named '{}' in {base}.plugins", reference.plugin_ref),
                ));
            };
            let params_path = format!("{base}.plugins[{i}].parameters");
            let t = plugin.plugin_type.as_str();
            if let Some(scorer) = scorers::build(t, &plugin.parameters, &params_path)? {
                let weight = reference.weight.unwrap_or(1.0);
                if !weight.is_finite() || weight < 0.0 {
                    return Err(ConfigError::new(format!("{ref_path}.weight"), "must be a finite number ≥ 0"));
                }
                scheduler.scorers.push(WeightedScorer { name: reference.plugin_ref.clone(), weight, scorer });
            } else if t == "saturation-filter" {
                scheduler.saturation_filter = true;
            } else if t == "max-score-picker" {
                scheduler.picker = Picker::MaxScore(parse_parameters(&plugin.parameters, &params_path)?);
            } else if t == "random-picker" {
                scheduler.picker = Picker::Random;
            } else if t == "weighted-random-picker" {
                scheduler.picker = Picker::WeightedRandom;
            }
        }
        Ok(scheduler)
    }

    pub fn profile_name(&self) -> &str {
        &self.profile
    }

    /// (scorer name, weight) in profile order.
    pub fn weights(&self) -> Vec<(String, f64)> {
        self.scorers.iter().map(|s| (s.name.clone(), s.weight)).collect()
    }

    /// Chooses the endpoint for one request.
    pub fn schedule(&self, request: &SchedulingRequest, ctx: &SchedulingContext) -> Result<Decision, ScheduleError> {
        let pool = &ctx.snapshot.endpoints;
        if pool.is_empty() {
            return Err(ScheduleError::NoEndpoints(
                "the inference pool has no endpoints (no snapshot from the scraper and no static endpoints)".into(),
            ));
        }
        let matches = ctx.memory.prefix.matches(&request.block_hashes);
        let mut rows: Vec<EndpointScores> = Vec::with_capacity(pool.len());
        let mut candidates: Vec<Candidate> = Vec::with_capacity(pool.len());
        let mut row_of: Vec<usize> = Vec::with_capacity(pool.len());
        let (mut healthy, mut in_subset) = (0usize, 0usize);
        for endpoint in pool {
            let candidate = Candidate {
                endpoint,
                in_flight: ctx.memory.in_flight(&endpoint.address),
                prefix_matched: matches.get(endpoint.address.as_str()).copied().unwrap_or(0),
                metrics_age_ms: endpoint.metrics_age_ms(ctx.now_ms),
            };
            let outside_subset = request.subset.as_ref().is_some_and(|s| !s.contains(&endpoint.address));
            let wrong_model = request.lora_adapter.is_none()
                && !endpoint.models.is_empty()
                && !endpoint.models.contains(&request.model);
            healthy += usize::from(endpoint.healthy);
            in_subset += usize::from(endpoint.healthy && !outside_subset);
            let reason = if !endpoint.healthy {
                Some("unhealthy".to_string())
            } else if outside_subset {
                Some("not in the subset hint".to_string())
            } else if wrong_model {
                Some(format!("does not serve model '{}'", request.model))
            } else {
                None
            };
            let row = EndpointScores::new(&candidate, reason.clone());
            if reason.is_none() {
                row_of.push(rows.len());
                candidates.push(candidate);
            }
            rows.push(row);
        }
        if candidates.is_empty() {
            let why = if healthy == 0 {
                format!("no ready endpoint: none of the pool's {} endpoints is healthy", pool.len())
            } else if in_subset == 0 {
                "the subset hint names no ready endpoint of the pool".to_string()
            } else {
                format!("no ready endpoint serves the model '{}'", request.model)
            };
            return Err(ScheduleError::NoEndpoints(why));
        }
        if request.priority < 0 && candidates.iter().all(|c| self.saturation.overloaded(c)) {
            return Err(ScheduleError::Shed(format!(
                "the pool is saturated and this request is sheddable (priority {} < 0); retry later",
                request.priority
            )));
        }
        let mut fell_back_to_all = false;
        if self.saturation_filter {
            let reasons: Vec<Option<String>> = candidates.iter().map(|c| self.saturation.reason(c)).collect();
            if reasons.iter().all(Option::is_some) {
                fell_back_to_all = true;
            } else {
                let mut kept = Vec::with_capacity(candidates.len());
                let mut kept_rows = Vec::with_capacity(candidates.len());
                for ((candidate, row), reason) in candidates.into_iter().zip(row_of).zip(reasons) {
                    match reason {
                        Some(reason) => rows[row].filtered_out = Some(reason),
                        None => {
                            kept.push(candidate);
                            kept_rows.push(row);
                        }
                    }
                }
                candidates = kept;
                row_of = kept_rows;
            }
        }
        let mut totals = vec![0.0; candidates.len()];
        let mut out = vec![0.0; candidates.len()];
        for scorer in &self.scorers {
            scorer.scorer.score(request, &candidates, &mut out);
            for (i, &score) in out.iter().enumerate() {
                let score = if score.is_finite() { score.clamp(0.0, 1.0) } else { 0.0 };
                totals[i] += scorer.weight * score;
                rows[row_of[i]].scores.push(ScorerScore { scorer: scorer.name.clone(), score, weight: scorer.weight });
            }
        }
        for (i, total) in totals.iter().enumerate() {
            rows[row_of[i]].total = *total;
        }
        let total_weight: f64 = self.scorers.iter().map(|s| s.weight).sum();
        let order = self.picker.order(&totals, &candidates, self.affinity_key(request), ctx.random_seed, total_weight);
        let Some(&first) = order.first() else {
            return Err(ScheduleError::NoEndpoints("no candidate endpoint left to pick".into()));
        };
        let primary = &candidates[first];
        Ok(Decision {
            primary: primary.endpoint.address.clone(),
            fallbacks: order
                .iter()
                .skip(1)
                .take(self.fallback_count)
                .map(|&i| candidates[i].endpoint.address.clone())
                .collect(),
            profile: self.profile.clone(),
            picker: self.picker.name().to_string(),
            predicted_cached_blocks: primary.prefix_matched,
            total_blocks: request.block_hashes.len() as u32,
            fell_back_to_all,
            scores: rows,
        })
    }

    /// What identifies the conversation for rendezvous placement: the chained hash covering the
    /// prompt's first `affinityKeyBlocks` blocks (stable as a conversation grows), else the session
    /// or user, else the model.
    fn affinity_key(&self, request: &SchedulingRequest) -> u64 {
        let hashes = &request.block_hashes;
        if let Some(h) = hashes.get(self.affinity_key_blocks.min(hashes.len()).wrapping_sub(1)) {
            return *h;
        }
        let fallback = request.session_endpoint.as_deref().or(request.user.as_deref()).unwrap_or(&request.model);
        fnv1a(fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{RoutingEvent, RoutingMemory};
    use crate::pool::{Endpoint, EndpointMetrics, PoolSnapshot};
    use crate::request::{ApiKind, RequestHeaders, parse_request};

    const NOW: u64 = 1_000_000;

    fn endpoint(i: usize, waiting: u32, kv: f64) -> Endpoint {
        Endpoint {
            address: format!("10.0.0.{i}:8000"),
            healthy: true,
            stale: false,
            last_scrape_ms: NOW - 10,
            consecutive_failures: 0,
            models: vec![],
            metrics: EndpointMetrics { waiting_requests: waiting, kv_cache_usage: kv, ..Default::default() },
            last_error: None,
        }
    }

    fn pool(endpoints: Vec<Endpoint>) -> PoolSnapshot {
        let mut s = PoolSnapshot::empty();
        s.endpoints = endpoints;
        s
    }

    fn chat(config: &PluginConfig, system: &str, user: &str) -> SchedulingRequest {
        let body = serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": user}]});
        parse_request(ApiKind::ChatCompletions, body.to_string().as_bytes(), &RequestHeaders::default(), config)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn decide(
        config: &PluginConfig,
        snapshot: &PoolSnapshot,
        memory: &RoutingMemory,
        r: &SchedulingRequest,
    ) -> Result<Decision, ScheduleError> {
        let scheduler = Scheduler::new(config).unwrap_or_else(|e| panic!("{e}"));
        scheduler.schedule(r, &SchedulingContext { now_ms: NOW, snapshot, memory, random_seed: 1 })
    }

    fn route(memory: &mut RoutingMemory, d: &Decision, r: &SchedulingRequest) {
        memory.apply(&RoutingEvent::Routed {
            endpoint: d.primary.clone(),
            hashes: r.block_hashes.clone(),
            prompt_tokens: 1,
        });
    }

    #[test]
    fn default_profile_is_the_llm_d_guide() {
        let s = Scheduler::new(&PluginConfig::default()).unwrap();
        assert_eq!(
            s.weights(),
            vec![
                ("prefix-cache-scorer".into(), 3.0),
                ("queue-scorer".into(), 2.0),
                ("kv-cache-utilization-scorer".into(), 2.0)
            ]
        );
        assert!(!s.saturation_filter, "the guide's profile has no saturation filter");
        assert_eq!(s.picker.name(), "max-score-picker");
    }

    #[test]
    fn the_prefix_holder_wins_when_load_is_equal() {
        let config = PluginConfig::default();
        let snapshot = pool((0..4).map(|i| endpoint(i, 0, 0.1)).collect());
        let mut memory = RoutingMemory::new(&config);
        let long = "You are a careful assistant. ".repeat(60);
        let first = chat(&config, &long, "first question");
        let d1 = decide(&config, &snapshot, &memory, &first).unwrap();
        route(&mut memory, &d1, &first);
        memory.apply(&RoutingEvent::Released { endpoint: d1.primary.clone(), prompt_tokens: 1 });
        let follow_up = chat(&config, &long, "first question, and a follow-up");
        let d2 = decide(&config, &snapshot, &memory, &follow_up).unwrap();
        assert_eq!(d2.primary, d1.primary);
        assert!(d2.predicted_cached_blocks > 0);
    }

    /// The default profile with the saturation filter in front.
    fn with_saturation_filter() -> PluginConfig {
        PluginConfig::from_json(
            br#"{"endpointPickerConfig":{"plugins":[{"type":"saturation-filter"},{"type":"prefix-cache-scorer"},
                {"type":"queue-scorer"},{"type":"kv-cache-utilization-scorer"},{"type":"max-score-picker"}],
              "schedulingProfiles":[{"name":"default","plugins":[{"pluginRef":"saturation-filter"},
                {"pluginRef":"prefix-cache-scorer","weight":3},{"pluginRef":"queue-scorer","weight":2},
                {"pluginRef":"kv-cache-utilization-scorer","weight":2},{"pluginRef":"max-score-picker"}]}]}}"#,
        )
        .unwrap()
    }

    /// A long prompt routed on an idle pool of two, then the same prompt again once the pod that
    /// took it has 9 waiting requests: (first decision, second decision, the holder's index).
    fn reroute_after_the_holder_gets_busy(config: &PluginConfig) -> (Decision, Decision, usize) {
        let long = "Shared context. ".repeat(100);
        let r = chat(config, &long, "q");
        let mut memory = RoutingMemory::new(config);
        let idle = pool((0..2).map(|i| endpoint(i, 0, 0.1)).collect());
        let d = decide(config, &idle, &memory, &r).unwrap();
        route(&mut memory, &d, &r);
        let holder: usize = if d.primary.ends_with(".0:8000") { 0 } else { 1 };
        let mut busy = idle.clone();
        busy.endpoints[holder].metrics.waiting_requests = 9;
        let d2 = decide(config, &busy, &memory, &r).unwrap();
        (d, d2, holder)
    }

    #[test]
    fn by_default_a_busy_prefix_holder_keeps_its_prefix() {
        let (d, d2, _) = reroute_after_the_holder_gets_busy(&PluginConfig::default());
        assert_eq!(d2.primary, d.primary, "a full prefix (3) outweighs the longest queue (2)");
        assert!(d2.scores.iter().all(|row| row.filtered_out.is_none()));
    }

    #[test]
    fn a_saturated_prefix_holder_loses_to_an_idle_pod() {
        let (d, d2, holder) = reroute_after_the_holder_gets_busy(&with_saturation_filter());
        assert_ne!(d2.primary, d.primary);
        assert!(d2.scores[holder].filtered_out.as_deref().unwrap_or("").contains("queue"));
    }

    #[test]
    fn stale_metrics_saturate_and_all_saturated_falls_back_to_all() {
        let config = with_saturation_filter();
        let mut endpoints: Vec<Endpoint> = (0..3).map(|i| endpoint(i, 0, 0.1)).collect();
        endpoints[0].last_scrape_ms = NOW - 5_000;
        let r = chat(&config, "s", "u");
        let memory = RoutingMemory::new(&config);
        let d = decide(&config, &pool(endpoints.clone()), &memory, &r).unwrap();
        assert_ne!(d.primary, "10.0.0.0:8000");
        assert!(d.scores[0].filtered_out.as_deref().unwrap_or("").contains("ms old"));
        for e in &mut endpoints {
            e.last_scrape_ms = 0;
        }
        let d = decide(&config, &pool(endpoints), &memory, &r).unwrap();
        assert!(d.fell_back_to_all);
        assert_eq!(d.fallbacks.len(), 2);
    }

    #[test]
    fn new_conversations_spread_and_independent_replicas_agree() {
        let config = PluginConfig::default();
        let snapshot = pool((0..4).map(|i| endpoint(i, 0, 0.1)).collect());
        let fresh_a = RoutingMemory::new(&config);
        let fresh_b = RoutingMemory::new(&config);
        let mut counts = std::collections::HashMap::new();
        for i in 0..200 {
            let r = chat(&config, &format!("Conversation {i} system prompt. {}", "x".repeat(600)), "hi");
            let a = decide(&config, &snapshot, &fresh_a, &r).unwrap();
            let b = decide(&config, &snapshot, &fresh_b, &r).unwrap();
            assert_eq!(a.primary, b.primary, "replicas without shared memory agree");
            *counts.entry(a.primary).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|&n| n >= 25), "{counts:?}");
    }

    #[test]
    fn one_short_shared_system_prompt_does_not_capture_all_traffic() {
        let config = PluginConfig::default();
        let snapshot = pool((0..4).map(|i| endpoint(i, 0, 0.1)).collect());
        let mut memory = RoutingMemory::new(&config);
        let mut counts = std::collections::HashMap::new();
        for i in 0..80 {
            let r = chat(&config, "You are a helpful assistant.", &format!("Question number {i}: {}", "y".repeat(300)));
            let d = decide(&config, &snapshot, &memory, &r).unwrap();
            route(&mut memory, &d, &r);
            *counts.entry(d.primary).or_insert(0) += 1;
        }
        assert!(counts.values().all(|&n| n < 40), "{counts:?}");
    }

    #[test]
    fn subset_hint_restricts_and_an_outside_subset_is_an_error() {
        let config = PluginConfig::default();
        let snapshot = pool((0..4).map(|i| endpoint(i, 0, 0.1)).collect());
        let memory = RoutingMemory::new(&config);
        let mut r = chat(&config, "s", "u");
        r.subset = Some(vec!["10.0.0.2:8000".into()]);
        let d = decide(&config, &snapshot, &memory, &r).unwrap();
        assert_eq!(d.primary, "10.0.0.2:8000");
        assert!(d.fallbacks.is_empty());
        r.subset = Some(vec!["192.168.9.9:8000".into()]);
        assert!(
            matches!(decide(&config, &snapshot, &memory, &r), Err(ScheduleError::NoEndpoints(m)) if m.contains("subset"))
        );
    }

    #[test]
    fn fallbacks_are_distinct_ordered_and_bounded() {
        let mut config = PluginConfig::default();
        config.limits.fallback_count = 2;
        let snapshot = pool(vec![endpoint(0, 4, 0.1), endpoint(1, 0, 0.1), endpoint(2, 2, 0.1), endpoint(3, 3, 0.1)]);
        let memory = RoutingMemory::new(&config);
        let d = decide(&config, &snapshot, &memory, &chat(&config, "s", "u")).unwrap();
        assert_eq!(d.primary, "10.0.0.1:8000");
        assert_eq!(d.fallbacks, vec!["10.0.0.2:8000", "10.0.0.3:8000"]);
        assert_eq!(d.header_value(), "10.0.0.1:8000,10.0.0.2:8000,10.0.0.3:8000");
    }

    #[test]
    fn empty_or_unhealthy_pools_are_503_and_sheddable_load_is_429() {
        let config = PluginConfig::default();
        let memory = RoutingMemory::new(&config);
        let r = chat(&config, "s", "u");
        assert!(matches!(decide(&config, &pool(vec![]), &memory, &r), Err(ScheduleError::NoEndpoints(_))));
        let mut sick = endpoint(0, 0, 0.1);
        sick.healthy = false;
        assert!(
            matches!(decide(&config, &pool(vec![sick]), &memory, &r), Err(ScheduleError::NoEndpoints(m)) if m.contains("healthy"))
        );
        let saturated = pool(vec![endpoint(0, 9, 0.9), endpoint(1, 0, 0.95)]);
        let mut sheddable = r.clone();
        sheddable.priority = -1;
        assert!(matches!(decide(&config, &saturated, &memory, &sheddable), Err(ScheduleError::Shed(_))));
        assert!(decide(&config, &saturated, &memory, &r).is_ok(), "critical requests are still served");
    }

    #[test]
    fn endpoints_that_do_not_serve_the_model_are_skipped() {
        let config = PluginConfig::default();
        let mut other = endpoint(0, 0, 0.1);
        other.models = vec!["other-model".into()];
        let mut ours = endpoint(1, 5, 0.5);
        ours.models = vec!["m".into()];
        let memory = RoutingMemory::new(&config);
        let d = decide(&config, &pool(vec![other, ours]), &memory, &chat(&config, "s", "u")).unwrap();
        assert_eq!(d.primary, "10.0.0.1:8000");
    }

    #[test]
    fn lora_requests_prefer_pods_running_the_adapter() {
        let config = PluginConfig::from_json(
            br#"{"models":{"adapters":["sql"]},"endpointPickerConfig":{"plugins":[{"type":"lora-affinity-scorer"},{"type":"queue-scorer"}],
                "schedulingProfiles":[{"name":"lora","plugins":[{"pluginRef":"lora-affinity-scorer","weight":5},{"pluginRef":"queue-scorer","weight":1}]}]}}"#,
        )
        .unwrap();
        let mut with_adapter = endpoint(1, 1, 0.1);
        with_adapter.metrics.lora =
            Some(crate::pool::LoraState { running: vec!["sql".into()], waiting: vec![], max_loras: 2 });
        let mut full = endpoint(0, 0, 0.1);
        full.metrics.lora =
            Some(crate::pool::LoraState { running: vec!["a".into(), "b".into()], waiting: vec![], max_loras: 2 });
        let body = br#"{"model":"sql","prompt":"select"}"#;
        let r = parse_request(ApiKind::Completions, body, &RequestHeaders::default(), &config).unwrap();
        let d = decide(&config, &pool(vec![full, with_adapter]), &RoutingMemory::new(&config), &r).unwrap();
        assert_eq!(d.primary, "10.0.0.1:8000");
        assert_eq!(d.profile, "lora");
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let bad_type = PluginConfig::from_json(
            br#"{"endpointPickerConfig":{"plugins":[{"type":"queue-scorer"},{"type":"magic-scorer"}]}}"#,
        )
        .unwrap();
        let err = Scheduler::new(&bad_type).err().unwrap();
        assert_eq!(err.path, "endpointPickerConfig.plugins[1].type");
        assert!(err.message.contains("magic-scorer"));
        let bad_ref = PluginConfig::from_json(
            br#"{"endpointPickerConfig":{"plugins":[{"type":"queue-scorer"}],"schedulingProfiles":[{"name":"p","plugins":[{"pluginRef":"queue"}]}]}}"#,
        )
        .unwrap();
        assert_eq!(
            Scheduler::new(&bad_ref).err().unwrap().path,
            "endpointPickerConfig.schedulingProfiles[0].plugins[0].pluginRef"
        );
        let bad_param = PluginConfig::from_json(
            br#"{"endpointPickerConfig":{"plugins":[{"type":"saturation-filter","parameters":{"queueThreshold":"x"}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            Scheduler::new(&bad_param).err().unwrap().path,
            "endpointPickerConfig.plugins[0].parameters.queueThreshold"
        );
        let bad_weight = PluginConfig::from_json(
            br#"{"endpointPickerConfig":{"plugins":[{"type":"queue-scorer"}],"schedulingProfiles":[{"name":"p","plugins":[{"pluginRef":"queue-scorer","weight":-1}]}]}}"#,
        )
        .unwrap();
        assert_eq!(
            Scheduler::new(&bad_weight).err().unwrap().path,
            "endpointPickerConfig.schedulingProfiles[0].plugins[0].weight"
        );
    }

    #[test]
    fn random_picker_profile() {
        let config = PluginConfig::from_json(
            br#"{"endpointPickerConfig":{"plugins":[{"type":"queue-scorer"},{"type":"random-picker"}]}}"#,
        )
        .unwrap();
        let snapshot = pool((0..3).map(|i| endpoint(i, 0, 0.1)).collect());
        let memory = RoutingMemory::new(&config);
        let scheduler = Scheduler::new(&config).unwrap();
        let r = chat(&config, "s", "u");
        let picks: std::collections::HashSet<String> = (0..60)
            .map(|seed| {
                scheduler
                    .schedule(
                        &r,
                        &SchedulingContext { now_ms: NOW, snapshot: &snapshot, memory: &memory, random_seed: seed },
                    )
                    .unwrap()
                    .primary
            })
            .collect();
        assert_eq!(picks.len(), 3);
    }
}
