//! The approximate prefix index: per endpoint, the block hashes routed there in LRU order up to a
//! capacity, and a map from hash to holders (see the parent module's doc for the model).

use crate::config::PrefixSettings;
use crate::endpoints::EndpointId;
use hashbrown::HashMap;
use std::collections::VecDeque;

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

/// The parent of a prompt's first block.
const ROOT: u64 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tick: u64,
    /// The previous block's hash ([`ROOT`] for a first block): lets an event name a held prefix by
    /// its last block alone.
    parent: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct EndpointIndex {
    /// hash → last-use tick and the previous block's hash.
    entries: HashMap<u64, Entry>,
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

    /// Records that `id` now holds every block of `hashes`, a whole prompt's (most recently used).
    pub fn record(&mut self, id: EndpointId, hashes: &[u64], bytes_per_token: f64) {
        self.record_after(id, ROOT, hashes, bytes_per_token);
    }

    /// Records a prompt whose first `held` blocks `id` was believed to hold: `hashes[0]` is the last
    /// of them and the rest follow it. The held chain is refreshed by walking parents back from
    /// `hashes[0]` (oldest first, as [`record`](Self::record) would touch it), so an event need not
    /// carry it. With `held == 0`, `hashes` is the whole prompt.
    pub fn record_held(&mut self, id: EndpointId, held: u32, hashes: &[u64], bytes_per_token: f64) {
        let Some((&anchor, rest)) = hashes.split_first().filter(|_| held > 0) else {
            return self.record(id, hashes, bytes_per_token);
        };
        let mut chain = Vec::with_capacity(held as usize);
        if let Some(index) = self.index(id) {
            let mut at = anchor;
            while chain.len() < held as usize
                && let Some(entry) = index.entries.get(&at)
            {
                chain.push((at, entry.parent));
                if entry.parent == ROOT {
                    break;
                }
                at = entry.parent;
            }
        }
        self.index_mut(id);
        for &(hash, parent) in chain.iter().rev() {
            self.touch(id, hash, parent);
        }
        self.record_after(id, anchor, rest, bytes_per_token);
    }

    fn record_after(&mut self, id: EndpointId, first_parent: u64, hashes: &[u64], bytes_per_token: f64) {
        if hashes.is_empty() {
            return;
        }
        self.index_mut(id);
        let mut parent = first_parent;
        for &hash in hashes {
            self.touch(id, hash, parent);
            parent = hash;
        }
        self.evict_to_capacity(id, bytes_per_token);
        self.enforce_total_bound(bytes_per_token);
    }

    /// Marks `hash` (whose parent is `parent`) most recently used at `id`, adding it if new.
    fn touch(&mut self, id: EndpointId, hash: u64, parent: u64) {
        let Some(Some(index)) = self.endpoints.get_mut(id.index()) else { return };
        self.tick += 1;
        if index.entries.insert(hash, Entry { tick: self.tick, parent }).is_none() {
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
            if index.entries.get(&hash).map(|e| e.tick) == Some(tick) {
                index.entries.remove(&hash);
                evicted.push(hash);
            }
        }
        // Keep the use-order queue proportional to the live entries.
        if index.order.len() > 2 * index.entries.len() + 64 {
            let entries = &index.entries;
            index.order.retain(|(h, t)| entries.get(h).map(|e| e.tick) == Some(*t));
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
    fn a_held_prefix_is_refreshed_from_its_last_block_alone() {
        let mut full = PrefixIndex::new(settings(6, 1000));
        let mut anchored = PrefixIndex::new(settings(6, 1000));
        for index in [&mut full, &mut anchored] {
            index.record(id(0), &[1, 2, 3, 4], BPT);
            index.record(id(0), &[7, 8], BPT); // newer: 1..4 are now the least recently used
        }
        // The follow-up turn 1,2,3,4,5: one index gets all five hashes, the other the held four
        // named by their last block (4) and the new one.
        full.record(id(0), &[1, 2, 3, 4, 5], BPT);
        anchored.record_held(id(0), 4, &[4, 5], BPT);
        for index in [&full, &anchored] {
            assert_eq!(index.matched_blocks(&[1, 2, 3, 4, 5], id(0)), 5);
            assert_eq!(index.matched_blocks(&[7], id(0)), 0, "capacity 6: the older turn went, not the held prefix");
        }
        assert_eq!(full.held(id(0)), anchored.held(id(0)));
        // An anchor the index does not hold refreshes nothing but still records what follows.
        anchored.record_held(id(1), 3, &[99, 100], BPT);
        assert_eq!(anchored.matched_blocks(&[100], id(1)), 1);
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
