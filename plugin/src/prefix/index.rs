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
/// A prediction of at least this many blocks answered by zero cached tokens is evidence that the
/// pod's cache was reset (restart, or full eviction).
pub const RESET_MIN_PREDICTED_BLOCKS: u32 = 4;
/// Such zero reports for this many *different* prompts in a row (no report of a hit in between) are
/// what drops the pod's entries. One is not enough: a request that shares a prefix with another
/// still being prefilled on the pod finds nothing cached, which a burst of conversations behind one
/// system prompt does all the time; those reports share their first block, so they count once.
pub const RESET_DISTINCT_PROMPTS: usize = 3;

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
    /// The endpoint's use clock when this entry was last used.
    tick: u64,
    /// The previous block's hash ([`ROOT`] for a first block): lets an event name a held prefix by
    /// its last block alone.
    parent: u64,
    /// A lower bound on the ticks of this entry and of every block before it in its prompt, as of
    /// its last use (the blocks before it only get fresher, so it stays a bound): how fresh the
    /// whole held prefix ending here is, without walking it.
    floor: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct EndpointIndex {
    /// hash → last-use tick and the previous block's hash.
    entries: HashMap<u64, Entry>,
    /// (hash, tick) in use order; an entry whose tick differs from `entries` is stale.
    /// Ticks count uses of this endpoint's entries (so ages are per endpoint, and replicated).
    order: VecDeque<(u64, u64)>,
    /// The pod's KV capacity in tokens (`num_gpu_blocks × block_size`), when it reports it.
    capacity_tokens: Option<u64>,
    /// Learned from feedback, in [MIN_CAPACITY_SCALE, 1].
    scale: f64,
    epoch: Epoch,
    /// First block of each prompt in the current run of zero reports after long predictions.
    zero_streak: Vec<u64>,
    /// Uses of this endpoint's entries so far.
    clock: u64,
    /// The capacity in blocks the last eviction enforced (0 until then: nothing is fresh).
    capacity: usize,
}

impl EndpointIndex {
    /// Uses younger than this need no refresh. An entry used `age` uses ago has at most `age`
    /// entries younger than it, so it is evicted no sooner than `capacity - age` further uses from
    /// now; refreshing it would make that `capacity`. Below a quarter of the capacity the entry keeps
    /// at least three quarters of its lifetime unrefreshed, so moving it to the front changes no
    /// eviction soon (and re-touching a long conversation's hundreds of blocks on every turn was most
    /// of what recording cost). An endpoint far below its capacity evicts nothing, whatever the order.
    fn fresh_uses(&self) -> u64 {
        self.capacity as u64 / 4
    }

    /// Whether the `held` blocks ending at `entry` are all fresh enough to need no refresh. Every
    /// one of them has a tick at or above `entry.floor`, so at most `clock - floor` entries are
    /// younger than the oldest of them, `held - 1` of which are the chain itself: the others are
    /// what refreshing would put the chain in front of again. A long prompt is then no staler than
    /// a short one for having many blocks.
    fn chain_is_fresh(&self, entry: &Entry, held: u32) -> bool {
        let since = self.clock.saturating_sub(entry.floor);
        since.saturating_sub(u64::from(held.saturating_sub(1))) < self.fresh_uses()
    }
}

impl EndpointIndex {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity_tokens: None,
            scale: 1.0,
            epoch: Epoch { reports: 0, fill_sum: 0.0 },
            zero_streak: Vec::new(),
            clock: 0,
            capacity: 0,
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
    total: usize,
    live: usize,
    /// Scratch for walking a held chain back to its first block: one for the whole index, kept to
    /// reuse its allocation.
    walk: Vec<(u64, u64)>,
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
        Self { settings, endpoints: Vec::new(), holders: HashMap::new(), total: 0, live: 0, walk: Vec::new() }
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
    /// carry it; a chain still fresh as a whole is not walked at all (see [`chain_is_fresh`]). With
    /// `held == 0`, `hashes` is the whole prompt.
    ///
    /// [`chain_is_fresh`]: EndpointIndex::chain_is_fresh
    pub fn record_held(&mut self, id: EndpointId, held: u32, hashes: &[u64], bytes_per_token: f64) {
        let Some((&anchor, rest)) = hashes.split_first().filter(|_| held > 0) else {
            return self.record(id, hashes, bytes_per_token);
        };
        self.index_mut(id);
        let Some(Some(index)) = self.endpoints.get_mut(id.index()) else { return };
        if let Some(entry) = index.entries.get(&anchor)
            && index.chain_is_fresh(entry, held)
        {
            return self.record_after(id, anchor, rest, bytes_per_token);
        }
        // Walk back to the first block (or as far as the index holds the chain), then touch it
        // root first. The walk reuses one buffer, so the steady state allocates nothing.
        let mut chain = std::mem::take(&mut self.walk);
        chain.clear();
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
        for &(hash, parent) in chain.iter().rev() {
            self.touch(id, hash, parent);
        }
        self.walk = chain;
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

    /// Marks `hash` (whose parent is `parent`) most recently used at `id`, adding it if new. An
    /// entry still fresh keeps its place; either way its floor follows its parent's.
    fn touch(&mut self, id: EndpointId, hash: u64, parent: u64) {
        let Some(Some(index)) = self.endpoints.get_mut(id.index()) else { return };
        let parent_floor = if parent == ROOT { None } else { index.entries.get(&parent).map(|p| p.floor) };
        let fresh_uses = index.fresh_uses();
        let clock = index.clock;
        if let Some(entry) = index.entries.get_mut(&hash)
            && clock.saturating_sub(entry.tick) < fresh_uses
        {
            entry.floor = parent_floor.map_or(entry.tick, |f| f.min(entry.tick));
            return;
        }
        index.clock += 1;
        let tick = index.clock;
        let floor = parent_floor.map_or(tick, |f| f.min(tick));
        if index.entries.insert(hash, Entry { tick, parent, floor }).is_none() {
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
        index.order.push_back((hash, tick));
    }

    /// Feedback from the pod: it reported `observed` cached blocks (already converted to the index's
    /// blocks of bytes) where the index predicted `predicted`.
    ///
    /// The correction is statistical and bounded: each report adds its fill, min(1, (observed +
    /// [`ROUNDING_TOLERANCE_BLOCKS`]) / predicted), to the endpoint's epoch; every
    /// [`CORRECTION_EPOCH_REPORTS`] reports the capacity scale is multiplied by the epoch's mean fill
    /// over [`CONFIRMING_FILL`] (so a mean at or above it grows the scale back toward 1, a pod that
    /// holds half of what the index thinks halves it), within [[`MIN_CAPACITY_SCALE`], 1]. Reports
    /// of nothing cached after long predictions for [`RESET_DISTINCT_PROMPTS`] different prompts in a
    /// row mean the pod lost its cache: its entries are dropped.
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
        if self.zero_report(id, hashes, predicted, observed) {
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

    /// Counts a report toward the run of zero reports; true when the run proves a reset.
    fn zero_report(&mut self, id: EndpointId, hashes: &[u64], predicted: u32, observed: u32) -> bool {
        let index = self.index_mut(id);
        if observed > 0 {
            index.zero_streak.clear();
            return false;
        }
        let (Some(&first), true) = (hashes.first(), predicted >= RESET_MIN_PREDICTED_BLOCKS) else { return false };
        if !index.zero_streak.contains(&first) {
            index.zero_streak.push(first);
        }
        if index.zero_streak.len() < RESET_DISTINCT_PROMPTS {
            return false;
        }
        index.zero_streak.clear();
        true
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
        index.capacity = capacity;
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
#[path = "index_tests.rs"]
mod tests;
