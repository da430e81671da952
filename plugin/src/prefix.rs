//! Prefix-block hashing and the approximate prefix index.
//!
//! **Hashing** (after llm-d's prefix-cache scorer): the prompt text is cut into blocks of
//! `block_size_tokens × chars_per_token` bytes (16 × 4 = 64 by default). Block i's hash is
//! `sha256(hash(i−1) ‖ block i)` truncated to 64 bits; the chain's seed is
//! `sha256("wis-prefix-v1" ‖ model ‖ cache_salt)`, so two models (or two LoRA adapters, or two
//! tenants with different `cache_salt`) never share an entry. Because the chain carries the whole
//! history, hash i identifies the entire prefix up to block i: a match at i implies a match of
//! every earlier block on the same pod (vLLM's cache works the same way). Only complete blocks are
//! hashed, as in llm-d; at most `max_blocks` of them, which bounds the cost of a long prompt. A
//! prompt shorter than one block gets a single pseudo-block hash of its whole text, so that even a
//! one-line prompt has an affinity key (it never matches a longer prompt's first block).
//!
//! **Index**: for each endpoint, the block hashes routed there, in LRU order, up to a capacity
//! (from the pod's reported KV block count when known, else `lru_capacity_per_server`), scaled by a
//! correction factor learned from the pod's `cached_tokens` reports; and a global map from hash to
//! the endpoints holding it, so a request's matches on every endpoint are found in one walk over
//! its hashes. Memory is bounded by `max_total_blocks` across all endpoints.

use crate::config::PrefixSettings;
use hashbrown::HashMap;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

/// Chained block hashes of `text` (see the module doc).
pub fn block_hashes(
    model: &str,
    cache_salt: Option<&str>,
    text: &str,
    block_chars: usize,
    max_blocks: usize,
) -> Vec<u64> {
    let block_chars = block_chars.max(1);
    let mut seed = Sha256::new();
    seed.update(b"wis-prefix-v1\0");
    seed.update((model.len() as u64).to_le_bytes());
    seed.update(model.as_bytes());
    if let Some(salt) = cache_salt {
        seed.update(b"\0salt\0");
        seed.update(salt.as_bytes());
    }
    let mut previous: [u8; 32] = seed.finalize().into();
    let bytes = text.as_bytes();
    if bytes.is_empty() || max_blocks == 0 {
        return Vec::new();
    }
    if bytes.len() < block_chars {
        let mut h = Sha256::new();
        h.update(previous);
        h.update(b"\0short\0");
        h.update(bytes);
        let digest: [u8; 32] = h.finalize().into();
        return vec![truncate(&digest)];
    }
    let mut hashes = Vec::with_capacity((bytes.len() / block_chars).min(max_blocks));
    for block in bytes.chunks_exact(block_chars).take(max_blocks) {
        let mut h = Sha256::new();
        h.update(previous);
        h.update(block);
        previous = h.finalize().into();
        hashes.push(truncate(&previous));
    }
    hashes
}

fn truncate(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// A key identifying the first `blocks` blocks of a prompt (or all of them if fewer), as 16 hex
/// characters: what Service Extensions mode gives the load balancer for consistent hashing.
pub fn affinity_key(hashes: &[u64], blocks: usize) -> String {
    match hashes.get(blocks.clamp(1, hashes.len().max(1)) - 1) {
        Some(h) => format!("{h:016x}"),
        None => String::new(),
    }
}

/// Lowest the learned capacity factor may go: a pod that keeps evicting still keeps a quarter of
/// its nominal capacity in our index, so one bad report cannot wipe its affinity.
const MIN_CAPACITY_SCALE: f64 = 0.25;
/// Shrink per over-prediction and growth per confirmed prediction of the capacity factor.
const SCALE_DOWN: f64 = 0.9;
const SCALE_UP: f64 = 1.02;
/// A prediction of at least this many blocks answered by zero cached tokens means the pod's cache
/// was reset (restart, or full eviction): its entries are dropped.
const RESET_MIN_PREDICTED_BLOCKS: u32 = 4;

#[derive(Debug, Clone, PartialEq)]
struct EndpointIndex {
    /// hash → last-use tick.
    entries: HashMap<u64, u64>,
    /// (hash, tick) in use order; an entry whose tick differs from `entries` is stale.
    order: VecDeque<(u64, u64)>,
    /// Nominal capacity in blocks (from the pod's KV block count, else the configured default).
    nominal_capacity: usize,
    /// Learned from `cached_tokens` feedback, in [MIN_CAPACITY_SCALE, 1].
    scale: f64,
}

impl EndpointIndex {
    fn new(capacity: usize) -> Self {
        Self { entries: HashMap::new(), order: VecDeque::new(), nominal_capacity: capacity.max(1), scale: 1.0 }
    }
}

/// The approximate prefix index, per endpoint, bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixIndex {
    settings: PrefixSettings,
    endpoints: HashMap<String, EndpointIndex>,
    /// hash → endpoints holding it.
    holders: HashMap<u64, Vec<String>>,
    tick: u64,
    total: usize,
}

impl PrefixIndex {
    pub fn new(settings: PrefixSettings) -> Self {
        Self { settings, endpoints: HashMap::new(), holders: HashMap::new(), tick: 0, total: 0 }
    }

    /// Blocks held in total across endpoints.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Blocks held for one endpoint.
    pub fn endpoint_len(&self, endpoint: &str) -> usize {
        self.endpoints.get(endpoint).map_or(0, |e| e.entries.len())
    }

    /// Sets an endpoint's nominal capacity in blocks (from the pod's reported KV block count).
    pub fn set_capacity(&mut self, endpoint: &str, blocks: usize) {
        let default = self.settings.lru_capacity_per_server;
        let index = self.endpoints.entry(endpoint.to_string()).or_insert_with(|| EndpointIndex::new(default));
        index.nominal_capacity = blocks.max(1);
        self.evict_to_capacity(endpoint);
    }

    /// The number of leading blocks of `hashes` that `endpoint` holds.
    pub fn matched_blocks(&self, hashes: &[u64], endpoint: &str) -> u32 {
        let Some(index) = self.endpoints.get(endpoint) else { return 0 };
        hashes.iter().take_while(|h| index.entries.contains_key(*h)).count() as u32
    }

    /// Leading-block matches of `hashes` on every endpoint holding any of them, in one walk.
    pub fn matches(&self, hashes: &[u64]) -> HashMap<&str, u32> {
        let mut matched: HashMap<&str, u32> = HashMap::new();
        for (i, hash) in hashes.iter().enumerate() {
            let Some(holders) = self.holders.get(hash) else { break };
            let mut advanced = false;
            for endpoint in holders {
                let m = matched.entry(endpoint.as_str()).or_insert(0);
                if *m as usize == i {
                    *m += 1;
                    advanced = true;
                }
            }
            if !advanced {
                break;
            }
        }
        matched.retain(|_, m| *m > 0);
        matched
    }

    /// Records that `endpoint` now holds every block of `hashes` (most recently used).
    pub fn record(&mut self, endpoint: &str, hashes: &[u64]) {
        if hashes.is_empty() {
            return;
        }
        let default = self.settings.lru_capacity_per_server;
        let index = self.endpoints.entry(endpoint.to_string()).or_insert_with(|| EndpointIndex::new(default));
        for &hash in hashes {
            self.tick += 1;
            if index.entries.insert(hash, self.tick).is_none() {
                self.total += 1;
                self.holders.entry(hash).or_default().push(endpoint.to_string());
            }
            index.order.push_back((hash, self.tick));
        }
        self.evict_to_capacity(endpoint);
        self.enforce_total_bound();
    }

    /// Feedback from the pod: it reported `observed` cached blocks where we predicted `predicted`.
    pub fn correct(&mut self, endpoint: &str, hashes: &[u64], predicted: u32, observed: u32) {
        let Some(index) = self.endpoints.get_mut(endpoint) else { return };
        if observed >= predicted {
            if predicted > 0 {
                index.scale = (index.scale * SCALE_UP).min(1.0);
            }
            return;
        }
        if observed == 0 && predicted >= RESET_MIN_PREDICTED_BLOCKS {
            // The pod lost its cache; after this request it holds this prompt's blocks only.
            self.forget_endpoint(endpoint);
            self.record(endpoint, hashes);
            return;
        }
        index.scale = (index.scale * SCALE_DOWN).max(MIN_CAPACITY_SCALE);
        self.evict_to_capacity(endpoint);
    }

    /// Drops everything known about an endpoint.
    pub fn forget_endpoint(&mut self, endpoint: &str) {
        if let Some(index) = self.endpoints.remove(endpoint) {
            for hash in index.entries.keys() {
                self.remove_holder(*hash, endpoint);
            }
            self.total -= index.entries.len();
        }
    }

    /// Keeps only the listed endpoints (the pool's current members).
    pub fn retain_endpoints(&mut self, keep: &[&str]) {
        let gone: Vec<String> = self.endpoints.keys().filter(|e| !keep.contains(&e.as_str())).cloned().collect();
        for endpoint in gone {
            self.forget_endpoint(&endpoint);
        }
    }

    fn capacity_of(&self, index: &EndpointIndex) -> usize {
        let scaled = (index.nominal_capacity as f64 * index.scale) as usize;
        let share = self.settings.max_total_blocks / self.endpoints.len().max(1);
        scaled.min(share).max(1)
    }

    fn evict_to_capacity(&mut self, endpoint: &str) {
        let Some(index) = self.endpoints.get(endpoint) else { return };
        let capacity = self.capacity_of(index);
        let Some(index) = self.endpoints.get_mut(endpoint) else { return };
        let mut evicted = Vec::new();
        while index.entries.len() > capacity {
            let Some((hash, tick)) = index.order.pop_front() else { break };
            if index.entries.get(&hash) == Some(&tick) {
                index.entries.remove(&hash);
                evicted.push(hash);
            }
        }
        // Keep the use-order queue proportional to the live entries.
        if index.order.len() > 2 * index.entries.len() + 64 {
            let entries = &index.entries;
            index.order.retain(|(h, t)| entries.get(h) == Some(t));
        }
        self.total -= evicted.len();
        for hash in evicted {
            self.remove_holder(hash, endpoint);
        }
    }

    fn enforce_total_bound(&mut self) {
        if self.total <= self.settings.max_total_blocks {
            return;
        }
        let endpoints: Vec<String> = self.endpoints.keys().cloned().collect();
        for endpoint in endpoints {
            self.evict_to_capacity(&endpoint);
        }
    }

    fn remove_holder(&mut self, hash: u64, endpoint: &str) {
        if let Some(holders) = self.holders.get_mut(&hash) {
            holders.retain(|e| e != endpoint);
            if holders.is_empty() {
                self.holders.remove(&hash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(capacity: usize, total: usize) -> PrefixSettings {
        PrefixSettings { lru_capacity_per_server: capacity, max_total_blocks: total, ..PrefixSettings::default() }
    }

    #[test]
    fn hashes_are_chained_and_seeded() {
        let text = "a".repeat(64 * 3 + 10);
        let h = block_hashes("m", None, &text, 64, 256);
        assert_eq!(h.len(), 3, "only complete blocks");
        // Same first block text, different history → different second hash.
        let other = format!("{}{}", "b".repeat(64), "a".repeat(128));
        let h2 = block_hashes("m", None, &other, 64, 256);
        assert_ne!(h[1], h2[1]);
        assert_ne!(block_hashes("m2", None, &text, 64, 256)[0], h[0], "model seeds the chain");
        assert_ne!(block_hashes("m", Some("tenant"), &text, 64, 256)[0], h[0], "cache_salt seeds the chain");
        assert_eq!(block_hashes("m", None, &text, 64, 256), h, "deterministic");
        assert_eq!(block_hashes("m", None, &text, 64, 2).len(), 2, "bounded");
    }

    #[test]
    fn short_prompts_get_one_pseudo_block() {
        let h = block_hashes("m", None, "hi", 64, 256);
        assert_eq!(h.len(), 1);
        assert_eq!(affinity_key(&h, 8).len(), 16);
        assert!(block_hashes("m", None, "", 64, 256).is_empty());
        assert_eq!(affinity_key(&[], 8), "");
    }

    #[test]
    fn a_prefix_extended_by_later_turns_keeps_its_leading_hashes() {
        let turn1 = "s".repeat(64 * 4);
        let turn2 = format!("{turn1}{}", "q".repeat(64 * 2));
        let a = block_hashes("m", None, &turn1, 64, 256);
        let b = block_hashes("m", None, &turn2, 64, 256);
        assert_eq!(&b[..4], &a[..]);
        assert_eq!(affinity_key(&a, 4), affinity_key(&b, 4));
    }

    #[test]
    fn matches_count_leading_blocks_per_endpoint() {
        let mut index = PrefixIndex::new(settings(100, 1000));
        index.record("a", &[1, 2, 3]);
        index.record("b", &[1, 2]);
        index.record("c", &[2, 3]);
        let m = index.matches(&[1, 2, 3, 4]);
        assert_eq!(m.get("a"), Some(&3));
        assert_eq!(m.get("b"), Some(&2));
        assert_eq!(m.get("c"), None, "a match must start at the first block");
        assert_eq!(index.matched_blocks(&[1, 2, 3, 4], "a"), 3);
    }

    #[test]
    fn lru_evicts_least_recently_used_per_endpoint() {
        let mut index = PrefixIndex::new(settings(3, 1000));
        index.record("a", &[1, 2, 3]);
        index.record("a", &[1]); // touch 1
        index.record("a", &[4]); // evicts 2, the least recently used
        assert_eq!(index.endpoint_len("a"), 3);
        assert_eq!(index.matched_blocks(&[1], "a"), 1);
        assert_eq!(index.matched_blocks(&[2], "a"), 0);
        assert_eq!(index.matched_blocks(&[4], "a"), 1);
    }

    #[test]
    fn memory_is_bounded_under_heavy_traffic() {
        let mut index = PrefixIndex::new(settings(31_250, 20_000));
        for i in 0..100_000u64 {
            let endpoint = format!("10.0.0.{}:8000", i % 4);
            index.record(&endpoint, &[i * 3, i * 3 + 1, i * 3 + 2]);
        }
        assert!(index.len() <= 20_000, "{}", index.len());
        let queued: usize = index.endpoints.values().map(|e| e.order.len()).sum();
        assert!(queued <= 2 * 20_000 + 4 * 64 + 4 * 3, "use-order queues stay bounded: {queued}");
        assert!(index.holders.len() <= 20_000);
    }

    #[test]
    fn reported_capacity_limits_an_endpoint() {
        let mut index = PrefixIndex::new(settings(1000, 100_000));
        index.set_capacity("a", 2);
        index.record("a", &[1, 2, 3]);
        assert_eq!(index.endpoint_len("a"), 2);
    }

    #[test]
    fn feedback_shrinks_capacity_and_detects_resets() {
        let mut index = PrefixIndex::new(settings(100, 100_000));
        let hashes: Vec<u64> = (1..=10).collect();
        index.record("a", &hashes);
        index.record("a", &[50, 51, 52]);
        // Predicted 10, the pod had 0: its cache was reset; only this prompt remains.
        index.correct("a", &hashes, 10, 0);
        assert_eq!(index.endpoint_len("a"), 10);
        assert_eq!(index.matched_blocks(&[50], "a"), 0);
        // Repeated over-prediction shrinks the learned capacity (bounded below).
        for _ in 0..50 {
            index.correct("a", &hashes, 10, 5);
        }
        let e = &index.endpoints["a"];
        assert!((e.scale - MIN_CAPACITY_SCALE).abs() < 1e-9);
        assert!(index.endpoint_len("a") <= 25);
        // Confirmed predictions let it recover.
        index.correct("a", &hashes, 5, 5);
        assert!(index.endpoints["a"].scale > MIN_CAPACITY_SCALE);
    }

    #[test]
    fn forgetting_and_retaining_endpoints() {
        let mut index = PrefixIndex::new(settings(100, 1000));
        index.record("a", &[1, 2]);
        index.record("b", &[1, 2]);
        index.retain_endpoints(&["b"]);
        assert_eq!(index.len(), 2);
        assert_eq!(index.matches(&[1, 2]).get("a"), None);
        assert_eq!(index.matches(&[1, 2]).get("b"), Some(&2));
    }
}
