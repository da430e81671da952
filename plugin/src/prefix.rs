//! Prefix-block hashing and the approximate prefix index.
//!
//! **Hashing** (after llm-d's prefix-cache scorer): the prompt text is cut into blocks of a fixed
//! number of UTF-8 bytes, `blockSizeTokens × limits.charsPerToken` (16 × 4 = 64 by default). The
//! boundaries never move: a ratio learned later only converts between these blocks and the pod's
//! tokens ([`crate::calibration`]); moving the boundaries would invalidate every entry. Block i's hash
//! is xxh3-64 of its bytes seeded with hash(i − 1): fast (about a nanosecond a byte natively), the
//! same in every VM, in the browser build and across versions of this crate (xxh3 is a fixed
//! algorithm; the seed constants below are part of the format). The chain's first seed mixes the
//! model and `cache_salt`, so two models (or two LoRA adapters, or two tenants) never share an entry.
//! Because the chain carries the whole history, hash i identifies the entire prefix up to block i:
//! a match at i implies a match of every earlier block on the same pod (vLLM's cache works the same
//! way). Hashes need speed, not secrecy: nothing here is authenticated (session tokens are, with
//! HMAC-SHA256, in [`crate::session`]).
//!
//! Only complete blocks are hashed, as in llm-d, and at most `maxPrefixBlocksToMatch` of them (256
//! by default, 16 KiB of prompt): the cost of a request is bounded whatever its length; a 400 KB
//! prompt is hashed exactly like its first 16 KiB. Two long prompts that share more than the cap
//! look identical to the index, which is right for placement (they share the whole hashed prefix),
//! and the pod's own cache still sees the rest. A prompt shorter than one block gets a single
//! pseudo-block hash of its whole text, so that even a one-line prompt has an affinity key (it never
//! matches a longer prompt's first block).
//!
//! **Index**: for each endpoint, the block hashes routed there, in LRU order, up to a capacity, and
//! a map from hash to the endpoints holding it, so a request's matches on every endpoint are found in
//! one walk over its hashes. Capacity comes from the pod's own report (`num_gpu_blocks × block_size`
//! tokens, converted to blocks of bytes through the learned bytes-per-token ratio), else
//! `lruCapacityPerServer` blocks, scaled by a correction learned from the pod's `cached_tokens`
//! reports ([`PrefixIndex::correct`]). Memory is bounded by `maxTotalBlocks` across all endpoints.

use crate::config::PrefixSettings;
use crate::endpoints::EndpointId;
use hashbrown::HashMap;
use std::collections::VecDeque;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the chain's first hash ("wis-pfx2"): part of the hash format.
const CHAIN_SEED: u64 = 0x7769_732d_7066_7832;
/// Mixed into the seed of a sub-block prompt's pseudo-block, so it never equals a block hash.
const SHORT_TAG: u64 = 0x5348_4f52_545f_424b;

/// Chained block hashes of `text`, blocks of `block_bytes` bytes (see the module doc).
pub fn block_hashes(
    model: &str,
    cache_salt: Option<&str>,
    text: &str,
    block_bytes: usize,
    max_blocks: usize,
) -> Vec<u64> {
    let mut hashes = Vec::new();
    block_hashes_into(model, cache_salt, text, block_bytes, max_blocks, &mut hashes);
    hashes
}

/// [`block_hashes`] into a caller's buffer (cleared first).
pub fn block_hashes_into(
    model: &str,
    cache_salt: Option<&str>,
    text: &str,
    block_bytes: usize,
    max_blocks: usize,
    out: &mut Vec<u64>,
) {
    out.clear();
    let bytes = text.as_bytes();
    if bytes.is_empty() || max_blocks == 0 {
        return;
    }
    let block_bytes = block_bytes.max(1);
    let mut previous = chain_seed(model, cache_salt);
    if bytes.len() < block_bytes {
        out.push(xxh3_64_with_seed(bytes, previous ^ SHORT_TAG));
        return;
    }
    out.reserve((bytes.len() / block_bytes).min(max_blocks));
    for block in bytes.chunks_exact(block_bytes).take(max_blocks) {
        previous = xxh3_64_with_seed(block, previous);
        out.push(previous);
    }
}

fn chain_seed(model: &str, cache_salt: Option<&str>) -> u64 {
    let mut seed = xxh3_64_with_seed(model.as_bytes(), CHAIN_SEED);
    if let Some(salt) = cache_salt {
        seed = xxh3_64_with_seed(salt.as_bytes(), seed ^ 0x5341_4c54);
    }
    seed
}

/// The chained hash covering the first `blocks` blocks of a prompt (or all of them if fewer): what
/// identifies a conversation as it grows. `None` for an empty prompt.
pub fn affinity_hash(hashes: &[u64], blocks: usize) -> Option<u64> {
    hashes.get(blocks.clamp(1, hashes.len().max(1)) - 1).copied()
}

/// [`affinity_hash`] as 16 hex characters: what Service Extensions mode gives the load balancer.
pub fn affinity_key(hashes: &[u64], blocks: usize) -> String {
    affinity_hash(hashes, blocks).map(|h| format!("{h:016x}")).unwrap_or_default()
}

/// Lowest the learned capacity scale goes: even a pod that keeps evicting keeps a quarter of its
/// nominal capacity in the index (its most recent prefixes), so placement stays sticky.
pub const MIN_CAPACITY_SCALE: f64 = 0.25;
/// Reports per correction epoch: the scale moves once per epoch, on the epoch's average, so
/// per-request noise (block-boundary rounding, a prompt that changed mid-block) cannot move it.
pub const CORRECTION_EPOCH_REPORTS: u32 = 16;
/// Average fill at or above which an epoch counts as confirming the capacity (the scale grows back).
pub const CONFIRMING_FILL: f64 = 0.9;
/// Blocks of rounding forgiven per report: a block boundary in bytes and one in tokens rarely agree,
/// so a prediction one block above what the pod reports is a confirmation, not an error.
pub const ROUNDING_TOLERANCE_BLOCKS: u32 = 1;
/// A prediction of at least this many blocks answered by zero cached tokens means the pod's cache was
/// reset (restart, or full eviction): its entries are dropped.
pub const RESET_MIN_PREDICTED_BLOCKS: u32 = 4;

/// What one `cached_tokens` report did to the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correction {
    /// Nothing was predicted, or the endpoint is unknown.
    None,
    /// The pod had what was predicted (within the rounding tolerance).
    Confirmed,
    /// The pod had less than predicted; counted toward the epoch.
    OverPredicted,
    /// The pod reported nothing cached for a long prediction: its entries were dropped.
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Epoch {
    reports: u32,
    fill_sum: f64,
}

#[derive(Debug, Clone, PartialEq)]
struct EndpointIndex {
    /// hash → last-use tick.
    entries: HashMap<u64, u64>,
    /// (hash, tick) in use order; an entry whose tick differs from `entries` is stale.
    order: VecDeque<(u64, u64)>,
    /// The pod's KV capacity in tokens (`num_gpu_blocks × block_size`), when it reports it.
    capacity_tokens: Option<u64>,
    /// Learned from feedback, in [MIN_CAPACITY_SCALE, 1].
    scale: f64,
    epoch: Epoch,
}

impl EndpointIndex {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity_tokens: None,
            scale: 1.0,
            epoch: Epoch { reports: 0, fill_sum: 0.0 },
        }
    }
}

/// Endpoints holding one hash: almost always one, so no allocation for it.
#[derive(Debug, Clone, PartialEq)]
enum Holders {
    One(EndpointId),
    Many(Vec<EndpointId>),
}

impl Holders {
    fn as_slice(&self) -> &[EndpointId] {
        match self {
            Self::One(id) => std::slice::from_ref(id),
            Self::Many(ids) => ids,
        }
    }
}

/// The approximate prefix index, per endpoint, bounded.
#[derive(Debug, Clone)]
pub struct PrefixIndex {
    settings: PrefixSettings,
    /// By endpoint id; `None` for ids never used or freed.
    endpoints: Vec<Option<EndpointIndex>>,
    holders: HashMap<u64, Holders>,
    tick: u64,
    total: usize,
    live: usize,
}

/// Dense per-endpoint match counts for one request, reused across requests (no allocation in the
/// steady state).
#[derive(Debug, Default, Clone)]
pub struct Matches {
    counts: Vec<u32>,
    touched: Vec<EndpointId>,
}

impl Matches {
    /// Leading blocks matched on `id` by the last [`PrefixIndex::matches_into`].
    pub fn get(&self, id: EndpointId) -> u32 {
        self.counts.get(id.index()).copied().unwrap_or(0)
    }

    /// Endpoints with a match of at least one block.
    pub fn matched(&self) -> impl Iterator<Item = (EndpointId, u32)> + '_ {
        self.touched.iter().map(|&id| (id, self.get(id))).filter(|(_, m)| *m > 0)
    }

    fn reset(&mut self, capacity: usize) {
        for id in self.touched.drain(..) {
            if let Some(c) = self.counts.get_mut(id.index()) {
                *c = 0;
            }
        }
        if self.counts.len() < capacity {
            self.counts.resize(capacity, 0);
        }
    }
}

impl PrefixIndex {
    pub fn new(settings: PrefixSettings) -> Self {
        Self { settings, endpoints: Vec::new(), holders: HashMap::new(), tick: 0, total: 0, live: 0 }
    }

    pub fn settings(&self) -> &PrefixSettings {
        &self.settings
    }

    /// Blocks held in total across endpoints.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Blocks held for one endpoint.
    pub fn endpoint_len(&self, id: EndpointId) -> usize {
        self.index(id).map_or(0, |e| e.entries.len())
    }

    /// The learned capacity scale of an endpoint (1 until feedback shows the pod holds less).
    pub fn scale(&self, id: EndpointId) -> f64 {
        self.index(id).map_or(1.0, |e| e.scale)
    }

    /// Sets an endpoint's KV capacity in tokens as the pod reports it (`None`: not reported).
    pub fn set_capacity_tokens(&mut self, id: EndpointId, tokens: Option<u64>, bytes_per_token: f64) {
        self.index_mut(id).capacity_tokens = tokens;
        self.evict_to_capacity(id, bytes_per_token);
    }

    /// How many blocks the index keeps for `id`: the pod's capacity converted to blocks of bytes at
    /// `bytes_per_token`, or the configured default, times the learned scale, within the endpoint's
    /// share of `maxTotalBlocks`.
    pub fn capacity_blocks(&self, id: EndpointId, bytes_per_token: f64) -> usize {
        let Some(index) = self.index(id) else { return 0 };
        let nominal = match index.capacity_tokens {
            Some(tokens) => tokens as f64 * bytes_per_token / self.settings.block_bytes.max(1) as f64,
            None => self.settings.lru_capacity_per_server as f64,
        };
        let share = self.settings.max_total_blocks / self.live.max(1);
        ((nominal * index.scale) as usize).min(share).max(1)
    }

    /// Leading-block matches of `hashes` on every endpoint holding any of them, in one walk, into
    /// `out` (dense by id).
    pub fn matches_into(&self, hashes: &[u64], out: &mut Matches) {
        out.reset(self.endpoints.len());
        for (i, hash) in hashes.iter().enumerate() {
            let Some(holders) = self.holders.get(hash) else { break };
            let mut advanced = false;
            for &id in holders.as_slice() {
                let count = &mut out.counts[id.index()];
                if *count as usize == i {
                    if i == 0 {
                        out.touched.push(id);
                    }
                    *count += 1;
                    advanced = true;
                }
            }
            if !advanced {
                break;
            }
        }
    }

    /// The number of leading blocks of `hashes` that `id` holds.
    pub fn matched_blocks(&self, hashes: &[u64], id: EndpointId) -> u32 {
        let Some(index) = self.index(id) else { return 0 };
        hashes.iter().take_while(|h| index.entries.contains_key(*h)).count() as u32
    }

    /// Records that `id` now holds every block of `hashes` (most recently used).
    pub fn record(&mut self, id: EndpointId, hashes: &[u64], bytes_per_token: f64) {
        if hashes.is_empty() {
            return;
        }
        self.index_mut(id);
        let Some(Some(index)) = self.endpoints.get_mut(id.index()) else { return };
        for &hash in hashes {
            self.tick += 1;
            if index.entries.insert(hash, self.tick).is_none() {
                self.total += 1;
                match self.holders.get_mut(&hash) {
                    None => {
                        self.holders.insert(hash, Holders::One(id));
                    }
                    Some(Holders::One(other)) => {
                        let other = *other;
                        self.holders.insert(hash, Holders::Many(vec![other, id]));
                    }
                    Some(Holders::Many(ids)) => ids.push(id),
                }
            }
            index.order.push_back((hash, self.tick));
        }
        self.evict_to_capacity(id, bytes_per_token);
        self.enforce_total_bound(bytes_per_token);
    }

    /// Feedback from the pod: it reported `observed` cached blocks (already converted to the index's
    /// blocks of bytes) where the index predicted `predicted`.
    ///
    /// The correction is statistical and bounded: each report adds its fill, min(1, (observed +
    /// [`ROUNDING_TOLERANCE_BLOCKS`]) / predicted), to the endpoint's epoch; every
    /// [`CORRECTION_EPOCH_REPORTS`] reports the capacity scale is multiplied by the epoch's mean fill
    /// over [`CONFIRMING_FILL`] (so a mean at or above it grows the scale back toward 1, a pod that
    /// holds half of what the index thinks halves it), within [[`MIN_CAPACITY_SCALE`], 1]. Only a
    /// report of nothing cached after a long prediction acts at once: the pod lost its cache.
    pub fn correct(
        &mut self,
        id: EndpointId,
        hashes: &[u64],
        predicted: u32,
        observed: u32,
        bytes_per_token: f64,
    ) -> Correction {
        if predicted == 0 || self.index(id).is_none() {
            return Correction::None;
        }
        if observed == 0 && predicted >= RESET_MIN_PREDICTED_BLOCKS {
            // After this request the pod holds this prompt's blocks only.
            self.forget(id);
            self.record(id, hashes, bytes_per_token);
            return Correction::Reset;
        }
        let fill = (f64::from(observed.saturating_add(ROUNDING_TOLERANCE_BLOCKS)) / f64::from(predicted)).min(1.0);
        let index = self.index_mut(id);
        index.epoch.reports += 1;
        index.epoch.fill_sum += fill;
        if index.epoch.reports >= CORRECTION_EPOCH_REPORTS {
            let mean = index.epoch.fill_sum / f64::from(index.epoch.reports);
            index.scale = (index.scale * mean / CONFIRMING_FILL).clamp(MIN_CAPACITY_SCALE, 1.0);
            index.epoch = Epoch { reports: 0, fill_sum: 0.0 };
            self.evict_to_capacity(id, bytes_per_token);
        }
        if fill >= 1.0 { Correction::Confirmed } else { Correction::OverPredicted }
    }

    /// Drops everything known about an endpoint but keeps its capacity and scale.
    pub fn forget(&mut self, id: EndpointId) {
        let Some(Some(index)) = self.endpoints.get_mut(id.index()) else { return };
        let entries = std::mem::take(&mut index.entries);
        index.order.clear();
        self.total -= entries.len();
        for hash in entries.keys() {
            self.remove_holder(*hash, id);
        }
    }

    /// Drops an endpoint entirely (it left the pool; its id may be reused).
    pub fn remove(&mut self, id: EndpointId) {
        self.forget(id);
        if let Some(slot) = self.endpoints.get_mut(id.index())
            && slot.take().is_some()
        {
            self.live -= 1;
        }
    }

    /// Per-endpoint LRU queues' total length (bounded at about twice the entries).
    pub fn queued(&self) -> usize {
        self.endpoints.iter().flatten().map(|e| e.order.len()).sum()
    }

    /// Ids with an index, in id order.
    pub fn ids(&self) -> impl Iterator<Item = EndpointId> + '_ {
        self.endpoints.iter().enumerate().filter(|(_, e)| e.is_some()).map(|(i, _)| EndpointId(i as u32))
    }

    /// The hashes `id` holds, sorted (for comparing two indexes).
    pub fn held(&self, id: EndpointId) -> Vec<u64> {
        let mut held: Vec<u64> = self.index(id).map(|e| e.entries.keys().copied().collect()).unwrap_or_default();
        held.sort_unstable();
        held
    }

    fn index(&self, id: EndpointId) -> Option<&EndpointIndex> {
        self.endpoints.get(id.index()).and_then(Option::as_ref)
    }

    fn index_mut(&mut self, id: EndpointId) -> &mut EndpointIndex {
        if self.endpoints.len() <= id.index() {
            self.endpoints.resize_with(id.index() + 1, || None);
        }
        let slot = &mut self.endpoints[id.index()];
        if slot.is_none() {
            *slot = Some(EndpointIndex::new());
            self.live += 1;
        }
        slot.get_or_insert_with(EndpointIndex::new)
    }

    fn evict_to_capacity(&mut self, id: EndpointId, bytes_per_token: f64) {
        let capacity = self.capacity_blocks(id, bytes_per_token);
        let Some(Some(index)) = self.endpoints.get_mut(id.index()) else { return };
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
            self.remove_holder(hash, id);
        }
    }

    fn enforce_total_bound(&mut self, bytes_per_token: f64) {
        if self.total <= self.settings.max_total_blocks {
            return;
        }
        let ids: Vec<EndpointId> = self.ids().collect();
        for id in ids {
            self.evict_to_capacity(id, bytes_per_token);
        }
    }

    fn remove_holder(&mut self, hash: u64, id: EndpointId) {
        let remove = match self.holders.get_mut(&hash) {
            Some(Holders::One(holder)) => *holder == id,
            Some(Holders::Many(ids)) => {
                ids.retain(|h| *h != id);
                if let [only] = ids[..] {
                    self.holders.insert(hash, Holders::One(only));
                    false
                } else {
                    ids.is_empty()
                }
            }
            None => false,
        };
        if remove {
            self.holders.remove(&hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BPT: f64 = 4.0;

    fn settings(capacity: usize, total: usize) -> PrefixSettings {
        PrefixSettings { lru_capacity_per_server: capacity, max_total_blocks: total, ..PrefixSettings::default() }
    }

    fn id(i: u32) -> EndpointId {
        EndpointId(i)
    }

    fn matches(index: &PrefixIndex, hashes: &[u64]) -> Vec<(u32, u32)> {
        let mut m = Matches::default();
        index.matches_into(hashes, &mut m);
        let mut all: Vec<(u32, u32)> = m.matched().map(|(id, n)| (id.0, n)).collect();
        all.sort_unstable();
        all
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
    fn the_hash_format_is_pinned() {
        // The same bytes must hash the same in every VM, in the browser build and in every version
        // of this crate that shares a routing log: a change here is a format change.
        let h = block_hashes("Qwen/Qwen3-0.6B", None, &"0123456789abcdef".repeat(8), 64, 256);
        assert_eq!(h.len(), 2);
        assert_eq!(
            h,
            vec![
                xxh3_64_with_seed(&[b"0123456789abcdef".as_slice(); 4].concat(), chain_seed("Qwen/Qwen3-0.6B", None)),
                h[1]
            ]
        );
        assert_eq!(h[1], xxh3_64_with_seed(&[b"0123456789abcdef".as_slice(); 4].concat(), h[0]));
        assert_eq!(chain_seed("m", None), xxh3_64_with_seed(b"m", 0x7769_732d_7066_7832));
    }

    #[test]
    fn a_very_long_prompt_costs_no_more_than_the_cap() {
        let long = "x".repeat(400_000);
        let h = block_hashes("m", None, &long, 64, 256);
        assert_eq!(h.len(), 256);
        assert_eq!(h, block_hashes("m", None, &long[..64 * 256], 64, 256));
    }

    #[test]
    fn short_prompts_get_one_pseudo_block() {
        let h = block_hashes("m", None, "hi", 64, 256);
        assert_eq!(h.len(), 1);
        assert_eq!(affinity_key(&h, 8).len(), 16);
        assert!(block_hashes("m", None, "", 64, 256).is_empty());
        assert_eq!(affinity_key(&[], 8), "");
        let long = block_hashes("m", None, &format!("hi{}", "x".repeat(100)), 64, 256);
        assert_ne!(long[0], h[0], "a short prompt never matches a longer one's first block");
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
        index.record(id(0), &[1, 2, 3], BPT);
        index.record(id(1), &[1, 2], BPT);
        index.record(id(2), &[2, 3], BPT);
        assert_eq!(matches(&index, &[1, 2, 3, 4]), vec![(0, 3), (1, 2)], "a match must start at the first block");
        assert_eq!(index.matched_blocks(&[1, 2, 3, 4], id(0)), 3);
        // The buffer is reused: a second walk does not see the first one's counts.
        let mut m = Matches::default();
        index.matches_into(&[1, 2, 3], &mut m);
        index.matches_into(&[9], &mut m);
        assert_eq!(m.matched().count(), 0);
        assert_eq!(m.get(id(0)), 0);
    }

    #[test]
    fn lru_evicts_least_recently_used_per_endpoint() {
        let mut index = PrefixIndex::new(settings(3, 1000));
        index.record(id(0), &[1, 2, 3], BPT);
        index.record(id(0), &[1], BPT); // touch 1
        index.record(id(0), &[4], BPT); // evicts 2, the least recently used
        assert_eq!(index.endpoint_len(id(0)), 3);
        assert_eq!(index.matched_blocks(&[1], id(0)), 1);
        assert_eq!(index.matched_blocks(&[2], id(0)), 0);
        assert_eq!(index.matched_blocks(&[4], id(0)), 1);
    }

    #[test]
    fn memory_is_bounded_under_heavy_traffic() {
        let mut index = PrefixIndex::new(settings(31_250, 20_000));
        for i in 0..100_000u64 {
            index.record(id((i % 4) as u32), &[i * 3, i * 3 + 1, i * 3 + 2], BPT);
        }
        assert!(index.len() <= 20_000, "{}", index.len());
        assert!(index.queued() <= 2 * 20_000 + 4 * 64 + 4 * 3, "use-order queues stay bounded: {}", index.queued());
        assert!(index.holders.len() <= 20_000);
    }

    #[test]
    fn capacity_follows_the_pods_tokens_through_the_ratio() {
        let mut index = PrefixIndex::new(settings(1000, 1_000_000));
        // 800 KV blocks of 16 tokens = 12,800 tokens. At 5 bytes a token that is 64,000 bytes, 1,000
        // blocks of 64 bytes; at 4 bytes a token, 800.
        index.set_capacity_tokens(id(0), Some(800 * 16), 5.0);
        assert_eq!(index.capacity_blocks(id(0), 5.0), 1000);
        assert_eq!(index.capacity_blocks(id(0), 4.0), 800);
        index.set_capacity_tokens(id(1), None, 5.0);
        assert_eq!(index.capacity_blocks(id(1), 5.0), 1000, "no report: the configured default");
        index.set_capacity_tokens(id(2), Some(2 * 16), 4.0);
        index.record(id(2), &[1, 2, 3], 4.0);
        assert_eq!(index.endpoint_len(id(2)), 2);
    }

    #[test]
    fn rounding_noise_never_shrinks_the_capacity() {
        let mut index = PrefixIndex::new(settings(1000, 1_000_000));
        let hashes: Vec<u64> = (1..=20).collect();
        index.record(id(0), &hashes, BPT);
        for i in 0..10 * CORRECTION_EPOCH_REPORTS {
            // Half the reports one block short: block boundaries in bytes and tokens disagree.
            let observed = if i % 2 == 0 { 20 } else { 19 };
            index.correct(id(0), &hashes, 20, observed, BPT);
        }
        assert_eq!(index.scale(id(0)), 1.0);
    }

    #[test]
    fn a_pod_that_holds_less_shrinks_the_capacity_statistically_and_recovers() {
        let mut index = PrefixIndex::new(settings(1000, 1_000_000));
        let hashes: Vec<u64> = (1..=20).collect();
        index.record(id(0), &hashes, BPT);
        for _ in 0..CORRECTION_EPOCH_REPORTS - 1 {
            assert_eq!(index.correct(id(0), &hashes, 20, 9, BPT), Correction::OverPredicted);
            assert_eq!(index.scale(id(0)), 1.0, "no single report moves the scale");
        }
        index.correct(id(0), &hashes, 20, 9, BPT);
        let shrunk = index.scale(id(0));
        assert!((shrunk - 0.5 / CONFIRMING_FILL).abs() < 1e-9, "{shrunk}");
        for _ in 0..20 * CORRECTION_EPOCH_REPORTS {
            index.correct(id(0), &hashes, 20, 9, BPT);
        }
        assert_eq!(index.scale(id(0)), MIN_CAPACITY_SCALE, "bounded below");
        for _ in 0..20 * CORRECTION_EPOCH_REPORTS {
            index.correct(id(0), &hashes, 20, 20, BPT);
        }
        assert_eq!(index.scale(id(0)), 1.0, "confirmed predictions grow it back");
    }

    #[test]
    fn a_reset_pod_is_forgotten_but_for_this_prompt() {
        let mut index = PrefixIndex::new(settings(100, 100_000));
        let hashes: Vec<u64> = (1..=10).collect();
        index.record(id(0), &hashes, BPT);
        index.record(id(0), &[50, 51, 52], BPT);
        assert_eq!(index.correct(id(0), &hashes, 10, 0, BPT), Correction::Reset);
        assert_eq!(index.endpoint_len(id(0)), 10);
        assert_eq!(index.matched_blocks(&[50], id(0)), 0);
        assert_eq!(index.correct(id(0), &hashes, 2, 0, BPT), Correction::OverPredicted, "short: not a reset");
    }

    #[test]
    fn removing_endpoints_frees_their_entries() {
        let mut index = PrefixIndex::new(settings(100, 1000));
        index.record(id(0), &[1, 2], BPT);
        index.record(id(1), &[1, 2], BPT);
        index.remove(id(0));
        assert_eq!(index.len(), 2);
        assert_eq!(matches(&index, &[1, 2]), vec![(1, 2)]);
        assert_eq!(index.ids().collect::<Vec<_>>(), vec![id(1)]);
    }
}
