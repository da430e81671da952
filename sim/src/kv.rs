//! The KV cache: a fixed pool of token blocks with vLLM V1's prefix caching.
//!
//! What it copies from vLLM (`vllm/v1/core/block_pool.py`, `kv_cache_manager.py`, `kv_cache_utils.py`):
//! - Block 0 is a permanent null block; usage = 1 − free / (num_blocks − 1).
//! - Only **full** blocks are hashed. A block's hash chains its parent's hash, its token ids and the
//!   extra keys (the LoRA adapter name), so equal hashes mean equal prefixes.
//! - Free blocks sit in one queue. Allocation pops from the head; popping a block that still has a
//!   hash evicts it from the hash map (lazy eviction). Freed hashed blocks go to the **tail** (evicted
//!   last, i.e. LRU); freed unhashed blocks go to the **head** (reused first). A request frees its
//!   blocks in reverse order, so its tail blocks are evicted first.
//! - A hit on a free cached block takes it out of the queue (`touch`) and raises its ref count.
//! - Cached-but-free blocks count as free in the usage gauge.
//!
//! What it does not copy: the hash function. vLLM pickles and SHA-256s; we use FNV-1a over the token
//! ids, independent of the plugin's hashing.

use std::collections::{BTreeMap, HashMap};

/// A block's chained hash.
pub type BlockHash = u64;

/// The parent hash of a request's first block (vLLM's NONE_HASH seed; fixed here so runs repeat).
pub const NONE_HASH: BlockHash = 0x5eed_0f00_d15c_a5e5;

/// Chains one full block: FNV-1a over (parent, token ids, extra key bytes).
pub fn hash_block(parent: BlockHash, tokens: &[u32], extra_key: Option<&str>) -> BlockHash {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&parent.to_le_bytes());
    for t in tokens {
        eat(&t.to_le_bytes());
    }
    if let Some(k) = extra_key {
        eat(&[0xff]);
        eat(k.as_bytes());
    }
    h
}

/// Hashes of every full block of `tokens`, chained from the seed.
pub fn block_hashes(tokens: &[u32], block_size: usize, extra_key: Option<&str>) -> Vec<BlockHash> {
    let mut parent = NONE_HASH;
    tokens
        .chunks_exact(block_size)
        .map(|chunk| {
            parent = hash_block(parent, chunk, extra_key);
            parent
        })
        .collect()
}

#[derive(Debug, Clone, Default)]
struct Block {
    ref_cnt: u32,
    hash: Option<BlockHash>,
    /// Position key in the free queue while the block is free.
    queue_key: Option<i64>,
}

/// The pool of KV blocks of one simulated GPU.
#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<Block>,
    /// Free queue ordered by key: head = smallest key. Prepends take decreasing keys, appends increasing.
    free: BTreeMap<i64, usize>,
    next_tail: i64,
    next_head: i64,
    cached: HashMap<BlockHash, usize>,
    evictions: u64,
}

impl BlockPool {
    /// A pool of `num_blocks` blocks (block 0 is the null block and is never handed out).
    pub fn new(num_blocks: usize) -> Self {
        let num_blocks = num_blocks.max(2);
        let mut pool = BlockPool {
            blocks: vec![Block::default(); num_blocks],
            free: BTreeMap::new(),
            next_tail: 0,
            next_head: -1,
            cached: HashMap::new(),
            evictions: 0,
        };
        for id in 1..num_blocks {
            pool.push_tail(id);
        }
        pool
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Number of cached blocks evicted so far (a hashed block reused for new content).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// vLLM's `BlockPool.get_usage()`: 1 − free / (num_blocks − 1).
    pub fn usage(&self) -> f64 {
        1.0 - self.free.len() as f64 / (self.blocks.len() - 1) as f64
    }

    /// Whether a block with this hash is cached (held or free-but-not-yet-evicted).
    pub fn is_cached(&self, hash: BlockHash) -> bool {
        self.cached.contains_key(&hash)
    }

    fn push_tail(&mut self, id: usize) {
        let key = self.next_tail;
        self.next_tail += 1;
        self.free.insert(key, id);
        self.blocks[id].queue_key = Some(key);
    }

    fn push_head(&mut self, id: usize) {
        let key = self.next_head;
        self.next_head -= 1;
        self.free.insert(key, id);
        self.blocks[id].queue_key = Some(key);
    }

    /// Number of leading blocks of `hashes` that are cached, vLLM's `find_longest_cache_hit`.
    pub fn longest_hit(&self, hashes: &[BlockHash]) -> usize {
        hashes.iter().take_while(|h| self.cached.contains_key(h)).count()
    }

    /// Takes a reference on the cached blocks of `hashes` (all must be cached); returns their ids.
    pub fn touch(&mut self, hashes: &[BlockHash]) -> Vec<usize> {
        let mut ids = Vec::with_capacity(hashes.len());
        for h in hashes {
            let Some(&id) = self.cached.get(h) else { break };
            let block = &mut self.blocks[id];
            if block.ref_cnt == 0
                && let Some(key) = block.queue_key.take()
            {
                self.free.remove(&key);
            }
            self.blocks[id].ref_cnt += 1;
            ids.push(id);
        }
        ids
    }

    /// Pops `n` blocks from the head of the free queue, evicting their old hashes. None if too few.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<usize>> {
        if n > self.free.len() {
            return None;
        }
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let (_, id) = self.free.pop_first()?;
            let block = &mut self.blocks[id];
            block.queue_key = None;
            block.ref_cnt = 1;
            if let Some(h) = block.hash.take() {
                if self.cached.get(&h) == Some(&id) {
                    self.cached.remove(&h);
                }
                self.evictions += 1;
            }
            ids.push(id);
        }
        Some(ids)
    }

    /// Marks a held block full with content `hash` (vLLM's `cache_full_blocks`). An identical block
    /// already cached keeps the map entry: identical blocks are not de-duplicated.
    pub fn cache_full_block(&mut self, id: usize, hash: BlockHash) {
        if self.blocks[id].hash.is_some() {
            return;
        }
        self.blocks[id].hash = Some(hash);
        self.cached.entry(hash).or_insert(id);
    }

    /// Drops one reference on each block, in reverse order (tail blocks are evicted first).
    pub fn free_blocks(&mut self, ids: &[usize]) {
        for &id in ids.iter().rev() {
            let block = &mut self.blocks[id];
            block.ref_cnt = block.ref_cnt.saturating_sub(1);
            if block.ref_cnt == 0 {
                if block.hash.is_some() {
                    self.push_tail(id);
                } else {
                    self.push_head(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(seed: u32, n: usize) -> Vec<u32> {
        (0..n as u32).map(|i| seed * 1000 + i).collect()
    }

    #[test]
    fn hashes_chain_so_a_changed_first_block_changes_every_hash() {
        let a = block_hashes(&toks(1, 48), 16, None);
        let mut other = toks(1, 48);
        other[0] = 999_999;
        let b = block_hashes(&other, 16, None);
        assert_eq!(a.len(), 3);
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
        // The LoRA name is part of the key.
        assert_ne!(a, block_hashes(&toks(1, 48), 16, Some("sql-lora")));
        // A partial block is not hashed.
        assert_eq!(block_hashes(&toks(1, 47), 16, None).len(), 2);
    }

    #[test]
    fn usage_excludes_the_null_block_and_counts_cached_free_blocks_as_free() {
        let mut pool = BlockPool::new(11);
        assert_eq!(pool.num_free(), 10);
        let ids = pool.allocate(4).unwrap();
        assert!((pool.usage() - 0.4).abs() < 1e-12);
        let hashes = block_hashes(&toks(2, 64), 16, None);
        for (id, h) in ids.iter().zip(&hashes) {
            pool.cache_full_block(*id, *h);
        }
        pool.free_blocks(&ids);
        assert_eq!(pool.usage(), 0.0);
        assert_eq!(pool.longest_hit(&hashes), 4);
    }

    #[test]
    fn a_full_pool_evicts_the_least_recently_freed_block_first() {
        let mut pool = BlockPool::new(5); // 4 usable blocks
        let old = block_hashes(&toks(1, 32), 16, None);
        let new = block_hashes(&toks(2, 32), 16, None);
        for hashes in [&old, &new] {
            let ids = pool.allocate(2).unwrap();
            for (id, h) in ids.iter().zip(hashes.iter()) {
                pool.cache_full_block(*id, *h);
            }
            pool.free_blocks(&ids);
        }
        // Reuse `old` (touch moves it out of the queue, freeing puts it back at the tail).
        let ids = pool.touch(&old);
        pool.free_blocks(&ids);
        // Two fresh blocks must come from `new`, now the least recently used.
        pool.allocate(2).unwrap();
        assert_eq!(pool.longest_hit(&old), 2);
        assert_eq!(pool.longest_hit(&new), 0);
        assert_eq!(pool.evictions(), 2);
    }

    #[test]
    fn a_request_frees_in_reverse_so_its_last_block_is_evicted_first() {
        let mut pool = BlockPool::new(4); // 3 usable
        let hashes = block_hashes(&toks(3, 48), 16, None);
        let ids = pool.allocate(3).unwrap();
        for (id, h) in ids.iter().zip(&hashes) {
            pool.cache_full_block(*id, *h);
        }
        pool.free_blocks(&ids);
        pool.allocate(1).unwrap();
        // The prefix (first two blocks) survives, the last block went.
        assert_eq!(pool.longest_hit(&hashes), 2);
    }

    #[test]
    fn held_blocks_are_never_handed_out() {
        let mut pool = BlockPool::new(3);
        let _held = pool.allocate(2).unwrap();
        assert!(pool.allocate(1).is_none());
        assert_eq!(pool.usage(), 1.0);
    }
}
