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
    /// Σ weight × score over the scorers that do not measure load.
    affinity: Vec<f64>,
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
            affinity: &scratch.affinity,
            candidates: &candidates,
            key,
            continues: request.continues,
            seed: ctx.random_seed,
            total_weight: self.scorers.iter().map(|s| s.weight).sum(),
        };
        scratch.order.clear();
        let placed_by_key = self.picker.pick(&input, self.fallback_count, &mut scratch.order);
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
            placed_by_key,
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
                model_hash: pool.model_hash(i as u32),
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

    /// Phase 2: Σ weight × score per candidate into `scratch.totals` (and over the scorers that do
    /// not measure load into `scratch.affinity`); each scorer's own scores too
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
        scratch.affinity.clear();
        scratch.affinity.resize(n, 0.0);
        let mut per_scorer = Vec::new();
        for scorer in &self.scorers {
            // Every scorer writes every entry: only the length needs setting, not the contents.
            scratch.scores.resize(n, 0.0);
            scorer.scorer.score(request, candidates, &mut scratch.scores);
            for (total, score) in scratch.totals.iter_mut().zip(scratch.scores.iter_mut()) {
                *score = if score.is_finite() { score.clamp(0.0, 1.0) } else { 0.0 };
                *total += scorer.weight * *score;
            }
            if !scorer.scorer.measures_load() {
                for (a, score) in scratch.affinity.iter_mut().zip(&scratch.scores) {
                    *a += scorer.weight * score;
                }
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
mod tests;
