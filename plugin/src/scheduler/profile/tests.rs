use super::*;
use crate::endpoints::Pool;
use crate::memory::{RoutingEvent, RoutingMemory};
use crate::pool::{Endpoint, EndpointMetrics, PoolSnapshot};
use crate::request::{ApiKind, RequestHeaders, parse_request};

const NOW: u64 = 1_000_000;

fn endpoint(i: usize, waiting: u32, kv: f64) -> Endpoint {
    Endpoint {
        stale: false,
        last_scrape_ms: NOW - 10,
        metrics: EndpointMetrics { waiting_requests: waiting, kv_cache_usage: kv, ..Default::default() },
        ..Endpoint::new(format!("10.0.0.{i}:8000"))
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
        parse_request(ApiKind::ChatCompletions, body.to_string().as_bytes(), &RequestHeaders::default(), &self.config)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn decide_with(&self, r: &SchedulingRequest, seed: u64) -> Result<Decision, ScheduleError> {
        let ctx =
            SchedulingContext { now_ms: NOW, pool: &self.pool, memory: &self.memory, random_seed: seed, detail: true };
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
        self.memory.apply(&RoutingEvent::Routed {
            endpoint,
            held: 0,
            hashes: r.block_hashes.clone(),
            prompt_tokens: 1,
        });
    }
}

/// Every pod of the pool has held `r`'s prompt (routed and released): no pod is new to it.
fn held_everywhere(w: &mut World, r: &SchedulingRequest) {
    for endpoint in w.pool.endpoints().iter().map(|e| e.address.clone()).collect::<Vec<_>>() {
        w.memory.apply(&RoutingEvent::Routed {
            endpoint: endpoint.clone(),
            held: 0,
            hashes: r.block_hashes.clone(),
            prompt_tokens: 1,
        });
        w.memory.apply(&RoutingEvent::Released { endpoint, prompt_tokens: 1 });
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
    let mut w =
        World::new(config, vec![endpoint(0, 4, 0.1), endpoint(1, 0, 0.1), endpoint(2, 2, 0.1), endpoint(3, 3, 0.1)]);
    let r = w.chat("s", "u");
    held_everywhere(&mut w, &r);
    let d = w.decide(&r).unwrap();
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
            w.memory.apply(&RoutingEvent::Routed {
                endpoint: address.into(),
                held: 0,
                hashes: vec![],
                prompt_tokens: 1,
            });
        }
    }
    let r = w.chat("s", "a short question");
    held_everywhere(&mut w, &r);
    let d = w.decide(&r).unwrap();
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

/// The default profile with `max-score-picker`'s `unseenPlacement` set to `mode`.
fn unseen_placement(mode: &str) -> PluginConfig {
    let json = format!(
        r#"{{"endpointPickerConfig":{{"plugins":[{{"type":"prefix-cache-scorer"}},{{"type":"queue-scorer"}},
            {{"type":"kv-cache-utilization-scorer"}},
            {{"type":"max-score-picker","parameters":{{"unseenPlacement":"{mode}"}}}}],
          "schedulingProfiles":[{{"name":"default","plugins":[{{"pluginRef":"prefix-cache-scorer","weight":3}},
            {{"pluginRef":"queue-scorer","weight":2}},{{"pluginRef":"kv-cache-utilization-scorer","weight":2}},
            {{"pluginRef":"max-score-picker"}}]}}]}}}}"#
    );
    PluginConfig::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

/// Conversation `c` at turn `turn`: its own system prompt, then `turn` earlier exchanges, then a
/// new question.
fn conversation(w: &World, c: usize, turn: usize) -> SchedulingRequest {
    let mut messages = vec![serde_json::json!({"role": "system",
        "content": format!("You are assistant number {c}. {}", "Answer with care and cite sources. ".repeat(30))})];
    for t in 0..=turn {
        messages.push(serde_json::json!({"role": "user", "content": format!("Question {t} of conversation {c}: {}", "why? ".repeat(40))}));
        if t < turn {
            messages.push(
                serde_json::json!({"role": "assistant", "content": format!("Answer {t}: {}", "because. ".repeat(50))}),
            );
        }
    }
    let body = serde_json::json!({"model": "m", "messages": messages});
    parse_request(ApiKind::ChatCompletions, body.to_string().as_bytes(), &RequestHeaders::default(), &w.config)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Two gateway replicas, each with its own memory and in-flight counts, take the turns of 12
/// conversations of 5 turns in alternation on 4 pods (turn t of conversation c goes to replica
/// (c + t) mod 2); two conversations start per round, and every round's turns are dispatched
/// before any is released. Each replica scrapes at its own moments, so the queues it sees differ
/// from the other's (0 to 2 waiting, 2 running, per pod and round); no pod is ever over the load
/// bound. Returns, over the follow-up turns that reached a replica holding none of their prompt
/// (the second turn, first seen by the other replica), how many went to the previous turn's pod,
/// and how many there were.
fn alternating_replicas(config: &PluginConfig) -> (usize, usize) {
    let (conversations, turns) = (12, 5);
    let mut replicas = [World::new(config.clone(), idle(4)), World::new(config.clone(), idle(4))];
    let mut pod_of: Vec<Option<String>> = vec![None; conversations];
    let (mut kept, mut follow_ups) = (0, 0);
    for round in 0..conversations / 2 + turns {
        for (g, replica) in replicas.iter_mut().enumerate() {
            let scraped: Vec<Endpoint> = (0..4)
                .map(|i| {
                    let waiting = (crate::scheduler::mix64((round * 8 + g * 4 + i) as u64) % 3) as u32;
                    let mut e = endpoint(i, waiting, 0.1);
                    e.metrics.running_requests = 2;
                    e
                })
                .collect();
            let mut snapshot = PoolSnapshot::empty();
            snapshot.endpoints = scraped;
            replica.pool = replica.memory.install(snapshot);
        }
        let mut routed = Vec::new();
        for (c, pod) in pod_of.iter_mut().enumerate() {
            let Some(turn) = round.checked_sub(c / 2).filter(|&t| t < turns) else { continue };
            let g = (c + turn) % 2;
            let r = conversation(&replicas[g], c, turn);
            let d = replicas[g].decide(&r).unwrap_or_else(|e| panic!("{e}"));
            replicas[g].route(&d, &r);
            let p = replicas[g].primary(&d);
            // The second turn goes to the replica that did not take the first.
            if let Some(previous) = pod.as_ref().filter(|_| turn == 1) {
                follow_ups += 1;
                kept += usize::from(*previous == p);
            }
            *pod = Some(p.clone());
            routed.push((g, p));
        }
        for (g, p) in routed {
            replicas[g].memory.apply(&RoutingEvent::Released { endpoint: p, prompt_tokens: 1 });
        }
    }
    (kept, follow_ups)
}

#[test]
fn two_replicas_taking_turns_agree_on_a_conversation_neither_has_seen_through() {
    let (kept, follow_ups) = alternating_replicas(&unseen_placement("key"));
    assert_eq!(follow_ups, 12, "each conversation's second turn reaches the replica that has not seen it");
    assert_eq!(kept, follow_ups, "placed by the key, whatever each replica's view of the load");
    // Placed by each replica's own load scores, the second replica sends it elsewhere.
    let (kept_off, _) = alternating_replicas(&unseen_placement("load"));
    assert!(kept_off < follow_ups, "placed by load: {kept_off} of {follow_ups}");
    // The default sees the pods report more than its own traffic, and places by key.
    assert_eq!(alternating_replicas(&PluginConfig::default()), (follow_ups, follow_ups));
}
