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
//!
//! **Refresh**: LRU order is kept lazily, so a request costs its new blocks, not its whole prompt.
//! An entry used fewer than a quarter of the endpoint's capacity uses ago is not moved again (it
//! still has at least three quarters of its lifetime left). A follow-up turn names the prefix its
//! pod already holds by the last block alone, and each entry carries a lower bound on the ticks of
//! its whole chain, so a held chain whose other traffic since is under that quarter is skipped whole,
//! however long it is; only a stale chain is walked back and refreshed, oldest block first.

mod index;

pub use index::{
    CONFIRMING_FILL, CORRECTION_EPOCH_REPORTS, Correction, MIN_CAPACITY_SCALE, Matches, PrefixIndex,
    RESET_MIN_PREDICTED_BLOCKS, ROUNDING_TOLERANCE_BLOCKS,
};
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
