//! An LRU of encoded segments, bounded in bytes (the text as key plus 4 bytes per token id).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Bookkeeping per entry besides its text and ids (map slots, the order index, the `Arc`).
const ENTRY_OVERHEAD_BYTES: usize = 96;

struct Entry {
    ids: Arc<[u32]>,
    /// Position in the recency order (larger = used more recently).
    tick: u64,
}

/// Segment text → token ids, least recently used evicted first.
pub struct SegmentCache {
    entries: HashMap<Box<str>, Entry>,
    /// tick → key, oldest first.
    order: BTreeMap<u64, Box<str>>,
    next_tick: u64,
    bytes: usize,
    capacity_bytes: usize,
    hits: u64,
    misses: u64,
}

impl SegmentCache {
    pub fn new(capacity_bytes: usize) -> Self {
        SegmentCache {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_tick: 0,
            bytes: 0,
            capacity_bytes,
            hits: 0,
            misses: 0,
        }
    }

    fn cost(text: &str, ids: &[u32]) -> usize {
        // The key is stored twice (map and order index).
        2 * text.len() + 4 * ids.len() + ENTRY_OVERHEAD_BYTES
    }

    pub fn get(&mut self, text: &str) -> Option<Arc<[u32]>> {
        let tick = self.next_tick;
        let Some(entry) = self.entries.get_mut(text) else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        self.next_tick += 1;
        let key = self.order.remove(&entry.tick);
        entry.tick = tick;
        if let Some(k) = key {
            self.order.insert(tick, k);
        }
        Some(entry.ids.clone())
    }

    /// Keeps `ids` for `text`, evicting the least recently used entries to stay within capacity.
    /// A segment larger than the whole capacity is not kept.
    pub fn insert(&mut self, text: &str, ids: Arc<[u32]>) {
        let cost = Self::cost(text, &ids);
        if cost > self.capacity_bytes || self.entries.contains_key(text) {
            return;
        }
        while self.bytes + cost > self.capacity_bytes {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= Self::cost(&oldest, &e.ids);
            }
        }
        let tick = self.next_tick;
        self.next_tick += 1;
        self.order.insert(tick, text.into());
        self.entries.insert(text.into(), Entry { ids, tick });
        self.bytes += cost;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn hits(&self) -> u64 {
        self.hits
    }

    pub fn misses(&self) -> u64 {
        self.misses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u32) -> Arc<[u32]> {
        (0..n).collect::<Vec<_>>().into()
    }

    #[test]
    fn the_least_recently_used_segment_goes_first_and_bytes_stay_bounded() {
        let text = |c: char| c.to_string().repeat(100);
        let one = SegmentCache::cost(&text('a'), &ids(25));
        let mut cache = SegmentCache::new(3 * one);
        for c in ['a', 'b', 'c'] {
            cache.insert(&text(c), ids(25));
        }
        assert!(cache.get(&text('a')).is_some(), "a is used again, so b is now the oldest");
        cache.insert(&text('d'), ids(25));
        assert_eq!(cache.len(), 3);
        assert!(cache.bytes() <= 3 * one);
        assert!(cache.get(&text('b')).is_none());
        for c in ['a', 'c', 'd'] {
            assert_eq!(cache.get(&text(c)).as_deref(), Some(&ids(25)[..]), "{c}");
        }
        assert_eq!((cache.hits(), cache.misses()), (4, 1));
    }

    #[test]
    fn a_segment_larger_than_the_cache_is_not_kept() {
        let mut cache = SegmentCache::new(200);
        cache.insert(&"x".repeat(500), ids(10));
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.bytes(), 0);
    }
}
