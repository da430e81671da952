//! A scheduling profile, built from llm-d's `EndpointPickerConfig` through the registry, and one
//! decision run in three phases (after GAIE's `SchedulerProfile.Run`): filters, then weighted
//! scorers, then the picker.
//!
//! The profile is the first of `schedulingProfiles` (llm-d's single-profile handler); with none,
//! every configured plugin is used in order with weight 1. With no `endpointPickerConfig` at all,
//! the llm-d guide's default applies: `prefix-cache-scorer` 3, `queue-scorer` 2,
//! `kv-cache-utilization-scorer` 2, `max-score-picker`, without `saturation-filter` (see
//! `plugin/CONFIG.md` for why).

use super::filters::health::HealthFilter;
use super::filters::metrics::MetricsFilter;
use super::filters::model::ModelFilter;
use super::filters::subset::SubsetFilter;
use super::filters::{CandidateSet, Filter, Flags};
use super::pickers::max_score::{MaxScoreParams, MaxScorePicker};
use super::pickers::{PickInput, Picker};
use super::registry::{self, Built};
use super::scorers::Scorer;
use super::{Candidate, Exclusion, SaturationParams, ScheduleError, SchedulingContext, fnv1a};
use crate::config::{
    ConfigError, EndpointPickerConfig, PluginConfig, PluginRef, PluginSpec, ProfileSpec, parse_parameters,
};
use crate::decision::{Decision, DecisionDetail, EndpointScores, ScorerScore};
use crate::prefix::{Matches, affinity_hash};
use crate::request::SchedulingRequest;
use std::cell::RefCell;

struct WeightedScorer {
    name: String,
    weight: f64,
    scorer: Box<dyn Scorer>,
}

/// Buffers reused from one decision to the next, so the steady state allocates nothing per
/// endpoint.
#[derive(Default)]
struct Scratch {
    matches: Matches,
    totals: Vec<f64>,
    scores: Vec<f64>,
    order: Vec<usize>,
}

/// A configured scheduling profile, ready to decide.
pub struct Scheduler {
    profile: String,
    /// Built-in filters first (subset, model, health, metrics), then the configured ones.
    filters: Vec<Box<dyn Filter>>,
    scorers: Vec<WeightedScorer>,
    picker: Box<dyn Picker>,
    /// Thresholds for shedding sheddable requests, from `saturation-filter`'s parameters if configured.
    shedding: SaturationParams,
    fallback_count: usize,
    affinity_key_blocks: usize,
    /// Registered type of every plugin in the profile.
    types: Vec<&'static str>,
    scratch: RefCell<Scratch>,
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

const BASE: &str = "endpointPickerConfig";

impl Scheduler {
    pub fn new(config: &PluginConfig) -> Result<Self, ConfigError> {
        let epc = config.endpoint_picker_config.clone().unwrap_or_else(default_picker_config);
        for (i, plugin) in epc.plugins.iter().enumerate() {
            if registry::lookup(&plugin.plugin_type).is_none() {
                return Err(ConfigError::new(
                    format!("{BASE}.plugins[{i}].type"),
                    format!("unknown plugin type '{}' (known: {})", plugin.plugin_type, registry::names()),
                ));
            }
        }
        let (profile, refs, profile_path) = match epc.scheduling_profiles.first() {
            Some(p) => (p.name.clone(), p.plugins.clone(), format!("{BASE}.schedulingProfiles[0]")),
            None => (
                "default".to_string(),
                epc.plugins.iter().map(|p| PluginRef { plugin_ref: p.reference().to_string(), weight: None }).collect(),
                format!("{BASE}.plugins"),
            ),
        };
        let builtin: Vec<Box<dyn Filter>> = vec![
            Box::new(SubsetFilter),
            Box::new(ModelFilter),
            Box::new(HealthFilter),
            Box::new(MetricsFilter { max_age_ms: config.pool.metrics_staleness_ms }),
        ];
        let mut scheduler = Scheduler {
            profile,
            filters: builtin,
            scorers: Vec::new(),
            picker: Box::new(MaxScorePicker { params: MaxScoreParams::default() }),
            shedding: shedding_thresholds(&epc)?,
            fallback_count: config.limits.fallback_count,
            affinity_key_blocks: config.limits.affinity_key_blocks.max(1),
            types: Vec::new(),
            scratch: RefCell::new(Scratch::default()),
        };
        for (j, reference) in refs.iter().enumerate() {
            scheduler.add(&epc, reference, &format!("{profile_path}.plugins[{j}]"))?;
        }
        Ok(scheduler)
    }

    /// Builds the plugin a profile entry refers to and puts it in its phase.
    fn add(&mut self, epc: &EndpointPickerConfig, reference: &PluginRef, ref_path: &str) -> Result<(), ConfigError> {
        let Some((i, plugin)) = epc.plugins.iter().enumerate().find(|(_, p)| p.reference() == reference.plugin_ref)
        else {
            return Err(ConfigError::new(
                format!("{ref_path}.pluginRef"),
                format!("no plugin named '{}' in {BASE}.plugins", reference.plugin_ref),
            ));
        };
        let Some(kind) = registry::lookup(&plugin.plugin_type) else {
            return Err(ConfigError::new(format!("{BASE}.plugins[{i}].type"), "unknown plugin type"));
        };
        self.types.push(kind.name);
        match (kind.build)(&plugin.parameters, &format!("{BASE}.plugins[{i}].parameters"))? {
            Built::Filter(filter) => self.filters.push(filter),
            Built::Scorer(scorer) => {
                let weight = reference.weight.unwrap_or(1.0);
                if !weight.is_finite() || weight < 0.0 {
                    return Err(ConfigError::new(format!("{ref_path}.weight"), "must be a finite number ≥ 0"));
                }
                self.scorers.push(WeightedScorer { name: reference.plugin_ref.clone(), weight, scorer });
            }
            Built::Picker(picker) => self.picker = picker,
            Built::ProfileHandler => {}
        }
        Ok(())
    }

    /// Whether a plugin of this registered type is in the profile.
    pub fn uses(&self, plugin_type: &str) -> bool {
        self.types.contains(&plugin_type)
    }

    pub fn profile_name(&self) -> &str {
        &self.profile
    }

    pub fn picker_name(&self) -> &'static str {
        self.picker.name()
    }

    /// Filter names in the order they run (built-in ones first).
    pub fn filter_names(&self) -> Vec<&'static str> {
        self.filters.iter().map(|f| f.name()).collect()
    }

    /// (scorer name, weight) in profile order.
    pub fn weights(&self) -> Vec<(String, f64)> {
        self.scorers.iter().map(|s| (s.name.clone(), s.weight)).collect()
    }

    /// Chooses the endpoint for one request: candidates, filters, scorers, picker.
    pub fn schedule(&self, request: &SchedulingRequest, ctx: &SchedulingContext) -> Result<Decision, ScheduleError> {
        let mut fresh = Scratch::default();
        let mut guard = self.scratch.try_borrow_mut();
        let scratch = match &mut guard {
            Ok(scratch) => &mut **scratch,
            Err(_) => &mut fresh,
        };
        let mut candidates = self.candidates(request, ctx, &mut scratch.matches)?;
        let mut excluded = Vec::new();
        let flags = self.filter(request, &mut candidates, ctx.detail.then_some(&mut excluded))?;
        if request.priority < 0 && candidates.iter().all(|c| self.shedding.overloaded(c)) {
            return Err(ScheduleError::Shed { priority: request.priority });
        }
        let per_scorer = self.score(request, &candidates, scratch, ctx.detail);
        let key = self.affinity_key(request);
        let input = PickInput {
            totals: &scratch.totals,
            candidates: &candidates,
            key,
            seed: ctx.random_seed,
            total_weight: self.scorers.iter().map(|s| s.weight).sum(),
        };
        scratch.order.clear();
        self.picker.pick(&input, self.fallback_count, &mut scratch.order);
        let Some(&first) = scratch.order.first() else {
            return Err(ScheduleError::EmptyPool);
        };
        let primary = &candidates[first];
        let detail = ctx.detail.then(|| self.detail(ctx, &candidates, &scratch.totals, &per_scorer, &excluded));
        Ok(Decision {
            primary: primary.position,
            fallbacks: scratch.order[1..].iter().map(|&i| candidates[i].position).collect(),
            predicted_cached_blocks: primary.prefix_matched,
            total_blocks: request.block_hashes.len() as u32,
            fell_back_to_all: flags.fell_back_to_all,
            no_healthy_endpoint: flags.no_healthy_endpoint,
            primary_metrics_known: primary.metrics_known,
            unknown_metrics: flags.unknown_metrics,
            detail,
        })
    }

    /// Every pool member, with what the gateway knows of it.
    fn candidates<'a>(
        &self,
        request: &SchedulingRequest,
        ctx: &SchedulingContext<'a>,
        matches: &mut Matches,
    ) -> Result<Vec<Candidate<'a>>, ScheduleError> {
        let pool = ctx.pool;
        if pool.is_empty() {
            return Err(ScheduleError::EmptyPool);
        }
        ctx.memory.prefix.matches_into(&request.block_hashes, matches);
        Ok(pool
            .endpoints()
            .iter()
            .zip(pool.ids())
            .enumerate()
            .map(|(i, (endpoint, &id))| Candidate {
                position: i as u32,
                id,
                endpoint,
                in_flight: ctx.memory.in_flight(id),
                prefix_matched: matches.get(id),
                metrics_age_ms: endpoint.metrics_age_ms(ctx.now_ms),
                metrics_known: true,
                address_hash: pool.address_hash(i as u32),
            })
            .collect())
    }

    /// Phase 1: every filter in order; the candidates left, or why none are.
    fn filter(
        &self,
        request: &SchedulingRequest,
        candidates: &mut Vec<Candidate>,
        excluded: Option<&mut Vec<(u32, Exclusion)>>,
    ) -> Result<Flags, ScheduleError> {
        let mut flags = Flags::default();
        let mut set = CandidateSet::new(candidates, excluded, &mut flags);
        for filter in &self.filters {
            filter.filter(request, &mut set)?;
        }
        Ok(flags)
    }

    /// Phase 2: Σ weight × score per candidate into `scratch.totals`; each scorer's own scores too
    /// when the detail is wanted.
    fn score(
        &self,
        request: &SchedulingRequest,
        candidates: &[Candidate],
        scratch: &mut Scratch,
        detail: bool,
    ) -> Vec<Vec<f64>> {
        let n = candidates.len();
        scratch.totals.clear();
        scratch.totals.resize(n, 0.0);
        let mut per_scorer = Vec::new();
        for scorer in &self.scorers {
            scratch.scores.clear();
            scratch.scores.resize(n, 0.0);
            scorer.scorer.score(request, candidates, &mut scratch.scores);
            for (total, score) in scratch.totals.iter_mut().zip(scratch.scores.iter_mut()) {
                *score = if score.is_finite() { score.clamp(0.0, 1.0) } else { 0.0 };
                *total += scorer.weight * *score;
            }
            if detail {
                per_scorer.push(scratch.scores.clone());
            }
        }
        per_scorer
    }

    /// The per-endpoint rows, from the phases' outputs.
    fn detail(
        &self,
        ctx: &SchedulingContext,
        candidates: &[Candidate],
        totals: &[f64],
        per_scorer: &[Vec<f64>],
        excluded: &[(u32, Exclusion)],
    ) -> Box<DecisionDetail> {
        let pool = ctx.pool;
        let mut rows: Vec<EndpointScores> = pool
            .endpoints()
            .iter()
            .zip(pool.ids())
            .map(|(endpoint, &id)| EndpointScores {
                address: endpoint.address.clone(),
                filtered_out: None,
                metrics_known: endpoint.metrics_known(ctx.now_ms, u64::MAX),
                scores: Vec::new(),
                total: 0.0,
                prefix_matched_blocks: 0,
                in_flight: ctx.memory.in_flight(id).requests,
                effective_queue: 0,
                kv_cache_usage: endpoint.metrics.kv_cache_usage,
            })
            .collect();
        for (i, c) in candidates.iter().enumerate() {
            let row = &mut rows[c.position as usize];
            row.metrics_known = c.metrics_known;
            row.total = totals[i];
            row.prefix_matched_blocks = c.prefix_matched;
            row.effective_queue = c.effective_queue();
            row.scores = self
                .scorers
                .iter()
                .zip(per_scorer)
                .map(|(s, scores)| ScorerScore { scorer: s.name.clone(), score: scores[i], weight: s.weight })
                .collect();
        }
        for (position, reason) in excluded {
            rows[*position as usize].filtered_out = Some(reason.to_string());
        }
        Box::new(DecisionDetail { profile: self.profile.clone(), picker: self.picker.name().to_string(), scores: rows })
    }

    /// What identifies the conversation for rendezvous placement: the chained hash covering the
    /// prompt's first `affinityKeyBlocks` blocks (stable as a conversation grows), else the session
    /// or user, else the model.
    fn affinity_key(&self, request: &SchedulingRequest) -> u64 {
        if let Some(h) = affinity_hash(&request.block_hashes, self.affinity_key_blocks) {
            return h;
        }
        fnv1a(request.session_endpoint.as_deref().or(request.user.as_deref()).unwrap_or(&request.model))
    }
}

/// The saturation thresholds govern shedding whether or not the filter is in the profile.
fn shedding_thresholds(epc: &EndpointPickerConfig) -> Result<SaturationParams, ConfigError> {
    match epc.plugins.iter().enumerate().find(|(_, p)| p.plugin_type == "saturation-filter") {
        Some((i, plugin)) => parse_parameters(&plugin.parameters, &format!("{BASE}.plugins[{i}].parameters")),
        None => Ok(SaturationParams::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::Pool;
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

    /// A configuration, its scheduler, a routing memory and the pool installed in it.
    struct World {
        config: PluginConfig,
        scheduler: Scheduler,
        memory: RoutingMemory,
        pool: Pool,
    }

    impl World {
        fn new(config: PluginConfig, endpoints: Vec<Endpoint>) -> Self {
            let scheduler = Scheduler::new(&config).unwrap_or_else(|e| panic!("{e}"));
            let mut memory = RoutingMemory::new(&config);
            let mut snapshot = PoolSnapshot::empty();
            snapshot.endpoints = endpoints;
            let pool = memory.install(snapshot);
            Self { config, scheduler, memory, pool }
        }

        fn pool(mut self, endpoints: Vec<Endpoint>) -> Self {
            let mut snapshot = PoolSnapshot::empty();
            snapshot.endpoints = endpoints;
            self.pool = self.memory.install(snapshot);
            self
        }

        fn chat(&self, system: &str, user: &str) -> SchedulingRequest {
            let body = serde_json::json!({"model": "m", "messages": [
                {"role": "system", "content": system}, {"role": "user", "content": user}]});
            parse_request(
                ApiKind::ChatCompletions,
                body.to_string().as_bytes(),
                &RequestHeaders::default(),
                &self.config,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        }

        fn decide_with(&self, r: &SchedulingRequest, seed: u64) -> Result<Decision, ScheduleError> {
            let ctx = SchedulingContext {
                now_ms: NOW,
                pool: &self.pool,
                memory: &self.memory,
                random_seed: seed,
                detail: true,
            };
            self.scheduler.schedule(r, &ctx)
        }

        fn decide(&self, r: &SchedulingRequest) -> Result<Decision, ScheduleError> {
            self.decide_with(r, 1)
        }

        fn primary(&self, d: &Decision) -> String {
            d.primary_address(&self.pool).to_string()
        }

        fn row(&self, d: &Decision, position: usize) -> crate::decision::EndpointScores {
            d.detail.as_ref().map(|detail| detail.scores[position].clone()).unwrap_or_else(|| panic!("no detail"))
        }

        fn route(&mut self, d: &Decision, r: &SchedulingRequest) {
            let endpoint = self.primary(d);
            self.memory.apply(&RoutingEvent::Routed { endpoint, hashes: r.block_hashes.clone(), prompt_tokens: 1 });
        }
    }

    fn idle(n: usize) -> Vec<Endpoint> {
        (0..n).map(|i| endpoint(i, 0, 0.1)).collect()
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
        assert_eq!(s.filter_names(), vec!["subset", "model", "health", "metrics"], "no saturation filter");
        assert_eq!(s.picker_name(), "max-score-picker");
    }

    #[test]
    fn the_prefix_holder_wins_when_load_is_equal() {
        let mut w = World::new(PluginConfig::default(), idle(4));
        let long = "You are a careful assistant. ".repeat(60);
        let first = w.chat(&long, "first question");
        let d1 = w.decide(&first).unwrap();
        w.route(&d1, &first);
        w.memory.apply(&RoutingEvent::Released { endpoint: w.primary(&d1), prompt_tokens: 1 });
        let follow_up = w.chat(&long, "first question, and a follow-up");
        let d2 = w.decide(&follow_up).unwrap();
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
    /// took it has 9 waiting requests: (world, first decision, second decision, the holder's index).
    fn reroute_after_the_holder_gets_busy(config: PluginConfig) -> (World, Decision, Decision, usize) {
        let mut w = World::new(config, idle(2));
        let r = w.chat(&"Shared context. ".repeat(100), "q");
        let d = w.decide(&r).unwrap();
        w.route(&d, &r);
        let holder = d.primary as usize;
        let mut busy = idle(2);
        busy[holder].metrics.waiting_requests = 9;
        let w = w.pool(busy);
        let d2 = w.decide(&r).unwrap();
        (w, d, d2, holder)
    }

    #[test]
    fn by_default_a_busy_prefix_holder_keeps_its_prefix() {
        let (w, d, d2, _) = reroute_after_the_holder_gets_busy(PluginConfig::default());
        assert_eq!(w.primary(&d2), w.primary(&d), "a full prefix (3) outweighs the longest queue (2)");
        assert!(d2.detail.unwrap().scores.iter().all(|row| row.filtered_out.is_none()));
    }

    #[test]
    fn a_saturated_prefix_holder_loses_to_an_idle_pod() {
        let (w, d, d2, holder) = reroute_after_the_holder_gets_busy(with_saturation_filter());
        assert_ne!(w.primary(&d2), w.primary(&d));
        assert!(w.row(&d2, holder).filtered_out.unwrap_or_default().contains("queue"));
    }

    #[test]
    fn stale_metrics_saturate_and_all_saturated_falls_back_to_all() {
        let mut endpoints = idle(3);
        endpoints[0].last_scrape_ms = NOW - 5_000;
        let w = World::new(with_saturation_filter(), endpoints.clone());
        let r = w.chat("s", "u");
        let d = w.decide(&r).unwrap();
        assert_ne!(w.primary(&d), "10.0.0.0:8000");
        assert!(w.row(&d, 0).filtered_out.unwrap_or_default().contains("ms old"));
        for e in &mut endpoints {
            e.last_scrape_ms = 0;
        }
        let w = w.pool(endpoints);
        let d = w.decide(&r).unwrap();
        assert!(d.fell_back_to_all);
        assert_eq!(d.fallbacks.len(), 2);
    }

    #[test]
    fn new_conversations_spread_and_independent_replicas_agree() {
        let a = World::new(PluginConfig::default(), idle(4));
        let b = World::new(PluginConfig::default(), idle(4));
        let mut counts = std::collections::HashMap::new();
        for i in 0..200 {
            let r = a.chat(&format!("Conversation {i} system prompt. {}", "x".repeat(600)), "hi");
            let (da, db) = (a.decide(&r).unwrap(), b.decide(&r).unwrap());
            assert_eq!(a.primary(&da), b.primary(&db), "replicas without shared memory agree");
            *counts.entry(a.primary(&da)).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|&n| n >= 25), "{counts:?}");
    }

    #[test]
    fn one_short_shared_system_prompt_does_not_capture_all_traffic() {
        let mut w = World::new(PluginConfig::default(), idle(4));
        let mut counts = std::collections::HashMap::new();
        for i in 0..80 {
            let r = w.chat("You are a helpful assistant.", &format!("Question number {i}: {}", "y".repeat(300)));
            let d = w.decide(&r).unwrap();
            w.route(&d, &r);
            *counts.entry(w.primary(&d)).or_insert(0) += 1;
        }
        assert!(counts.values().all(|&n| n < 40), "{counts:?}");
    }

    #[test]
    fn subset_hint_restricts_and_an_outside_subset_is_an_error() {
        let w = World::new(PluginConfig::default(), idle(4));
        let mut r = w.chat("s", "u");
        r.subset = Some(vec!["10.0.0.2:8000".into()]);
        let d = w.decide(&r).unwrap();
        assert_eq!(w.primary(&d), "10.0.0.2:8000");
        assert!(d.fallbacks.is_empty());
        r.subset = Some(vec!["192.168.9.9:8000".into()]);
        assert_eq!(w.decide(&r), Err(ScheduleError::SubsetNamesNoMember));
    }

    #[test]
    fn fallbacks_are_distinct_ordered_and_bounded() {
        let mut config = PluginConfig::default();
        config.limits.fallback_count = 2;
        let w = World::new(
            config,
            vec![endpoint(0, 4, 0.1), endpoint(1, 0, 0.1), endpoint(2, 2, 0.1), endpoint(3, 3, 0.1)],
        );
        let d = w.decide(&w.chat("s", "u")).unwrap();
        assert_eq!(w.primary(&d), "10.0.0.1:8000");
        assert_eq!(d.fallback_addresses(&w.pool), vec!["10.0.0.2:8000", "10.0.0.3:8000"]);
        assert_eq!(d.header_value(&w.pool), "10.0.0.1:8000,10.0.0.2:8000,10.0.0.3:8000");
    }

    #[test]
    fn an_empty_pool_is_503_and_sheddable_load_is_429() {
        let w = World::new(PluginConfig::default(), vec![]);
        let r = w.chat("s", "u");
        assert_eq!(w.decide(&r), Err(ScheduleError::EmptyPool));
        let w = w.pool(vec![endpoint(0, 9, 0.9), endpoint(1, 0, 0.95)]);
        let mut sheddable = r.clone();
        sheddable.priority = -1;
        assert_eq!(w.decide(&sheddable), Err(ScheduleError::Shed { priority: -1 }));
        assert!(w.decide(&r).is_ok(), "critical requests are still served");
    }

    #[test]
    fn a_pool_with_no_reachable_member_still_routes_among_all() {
        let mut sick = idle(3);
        for e in &mut sick {
            e.healthy = false;
        }
        let w = World::new(PluginConfig::default(), sick);
        let d = w.decide(&w.chat("s", "u")).unwrap();
        assert!(d.no_healthy_endpoint);
        assert_eq!(d.fallbacks.len(), 2, "Envoy's retries walk the others");
        let mut mixed = idle(3);
        mixed[0].healthy = false;
        mixed[1].healthy = false;
        let w = w.pool(mixed);
        let d = w.decide(&w.chat("s", "u")).unwrap();
        assert_eq!(w.primary(&d), "10.0.0.2:8000");
        assert!(!d.no_healthy_endpoint);
        assert!(w.row(&d, 0).filtered_out.unwrap_or_default().contains("unhealthy"));
    }

    #[test]
    fn unreadable_metrics_keep_a_pod_a_candidate_scored_on_in_flight_counts() {
        // Every pod's metrics are unreadable (stale, never scraped): the least loaded by the
        // gateway's own count wins, and the decision says the metrics were unknown.
        let mut endpoints = idle(3);
        for e in &mut endpoints {
            e.stale = true;
            e.last_scrape_ms = 0;
            e.metrics.waiting_requests = 0;
        }
        let mut w = World::new(PluginConfig::default(), endpoints);
        for (address, n) in [("10.0.0.0:8000", 3), ("10.0.0.1:8000", 1), ("10.0.0.2:8000", 2)] {
            for _ in 0..n {
                w.memory.apply(&RoutingEvent::Routed { endpoint: address.into(), hashes: vec![], prompt_tokens: 1 });
            }
        }
        let d = w.decide(&w.chat("s", "a short question")).unwrap();
        assert_eq!(w.primary(&d), "10.0.0.1:8000");
        assert!(!d.primary_metrics_known);
        assert_eq!(d.unknown_metrics, 3);
        assert!(!w.row(&d, 0).metrics_known);
    }

    #[test]
    fn metrics_older_than_the_staleness_limit_are_unknown_but_not_excluded() {
        let mut endpoints = idle(2);
        endpoints[0].last_scrape_ms = NOW - 5_000;
        endpoints[0].metrics.waiting_requests = 50; // an old reading must not count against it
        let w = World::new(PluginConfig::default(), endpoints);
        let d = w.decide(&w.chat("s", "u")).unwrap();
        assert_eq!(d.unknown_metrics, 1);
        assert!(w.row(&d, 0).filtered_out.is_none());
        assert!(!w.row(&d, 0).metrics_known && w.row(&d, 1).metrics_known);
        assert_eq!(w.row(&d, 0).effective_queue, 0, "judged on its (empty) in-flight count");
    }

    #[test]
    fn endpoints_that_do_not_serve_the_model_are_skipped_and_none_serving_is_404() {
        let mut other = endpoint(0, 0, 0.1);
        other.models = vec!["other-model".into()];
        let mut ours = endpoint(1, 5, 0.5);
        ours.models = vec!["m".into()];
        let w = World::new(PluginConfig::default(), vec![other.clone(), ours]);
        let d = w.decide(&w.chat("s", "u")).unwrap();
        assert_eq!(w.primary(&d), "10.0.0.1:8000");
        let w = w.pool(vec![other]);
        assert_eq!(w.decide(&w.chat("s", "u")), Err(ScheduleError::ModelNotServed("m".into())));
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
        let w = World::new(config, vec![full, with_adapter]);
        let body = br#"{"model":"sql","prompt":"select"}"#;
        let r = parse_request(ApiKind::Completions, body, &RequestHeaders::default(), &w.config).unwrap();
        let d = w.decide(&r).unwrap();
        assert_eq!(w.primary(&d), "10.0.0.1:8000");
        assert_eq!(d.detail.unwrap().profile, "lora");
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
        let w = World::new(config, idle(3));
        let r = w.chat("s", "u");
        let picks: std::collections::HashSet<String> =
            (0..60).map(|seed| w.primary(&w.decide_with(&r, seed).unwrap())).collect();
        assert_eq!(picks.len(), 3);
    }

    #[test]
    fn without_detail_nothing_per_endpoint_is_built() {
        let w = World::new(PluginConfig::default(), idle(4));
        let r = w.chat("s", "u");
        let ctx = SchedulingContext { now_ms: NOW, pool: &w.pool, memory: &w.memory, random_seed: 1, detail: false };
        let d = w.scheduler.schedule(&r, &ctx).unwrap();
        assert!(d.detail.is_none());
        assert_eq!(d.primary, w.decide(&r).unwrap().primary, "the detail does not change the decision");
    }
}
