//! The pods' tokenizer: a real BPE vocabulary by default, or a fixed-ratio profile.
//!
//! - `bpe` (default): OpenAI's `cl100k_base`, embedded by the `tiktoken-rs` crate; Qwen's own
//!   vocabulary was built from it. With `--vocab FILE` it is any `.tiktoken` ranks file instead,
//!   split with Qwen's pattern, e.g. Qwen's `qwen.tiktoken` (151,643 ranks; `scripts/common.sh
//!   ensure_qwen_vocab` fetches it). Qwen's BPE gives about 5 characters per token on English prose,
//!   3.5 to 4.8 on code and JSON, about 1.7 on Chinese (sim/README.md has the measured ratios).
//! - `chars:N`: exactly N characters per token (fractional allowed: 1.5 for CJK-like text, 3 for
//!   code), for the extremes a test wants to pin.
//!
//! Either way the ChatML markers `<|im_start|>`, `<|im_end|>` and `<|endoftext|>` are single special
//! tokens (as Hugging Face tokenizers treat added tokens in text), and the text between them is
//! encoded segment by segment. A chat prompt's segments are its messages (`role\ncontent`), and
//! conversations resend the same messages, so encoded segments are kept in an LRU bounded in bytes
//! ([`cache::SegmentCache`]): BPE is the simulator's hot path.
//!
//! Prefix stability, which prefix caching rests on: encoding a prefix of a text gives the text's
//! tokens except the last few (those of the word cut in two). The simulator shares no code with the
//! plugin, which cuts prompts into blocks of bytes.

mod bpe;
mod cache;
mod chars;

use std::sync::{Arc, Mutex};

pub use bpe::QWEN_PATTERN;
use cache::SegmentCache;

/// Bytes of encoded segments kept per tokenizer by default (`--tokenizer-cache-mb 64`): ~15,000
/// distinct 2 KB messages with their ids, far more than a fleet's conversations in flight resend.
pub const SEGMENT_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Segments shorter than this are encoded every time: the lookup would cost about as much.
const MIN_CACHED_SEGMENT_BYTES: usize = 64;

/// The special tokens of a vocabulary (ChatML, as Qwen's chat template uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Specials {
    pub end_of_text: u32,
    pub im_start: u32,
    pub im_end: u32,
}

impl Specials {
    /// Qwen's ids: right after its 151,643 ranks, in the order `<|endoftext|>`, `<|im_start|>`,
    /// `<|im_end|>` (dashscope's `qwen_tokenizer.py`, `SPECIAL_START_ID`).
    pub const QWEN: Specials = Specials { end_of_text: 151_643, im_start: 151_644, im_end: 151_645 };
    /// `cl100k_base`'s `<|endoftext|>` and the ChatML ids of tiktoken's `cl100k_im` extension.
    pub const CL100K: Specials = Specials { end_of_text: 100_257, im_start: 100_264, im_end: 100_265 };

    /// Specials that follow a ranks file of `n` entries, in Qwen's order.
    pub fn after(n: u32) -> Specials {
        Specials { end_of_text: n, im_start: n + 1, im_end: n + 2 }
    }
}

/// The special token strings a prompt may contain.
pub const END_OF_TEXT: &str = "<|endoftext|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// How ordinary text becomes tokens.
enum Model {
    Bpe(bpe::Bpe),
    Chars(chars::FixedRatio),
}

/// A tokenizer with its segment cache; share one per fleet (`Arc`).
pub struct Tokenizer {
    model: Model,
    specials: Specials,
    name: String,
    cache: Mutex<SegmentCache>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("name", &self.name).finish_non_exhaustive()
    }
}

/// What the segment cache did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub bytes: usize,
}

/// Token ids of a text with, for each token, the byte offset where it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub ends: Vec<usize>,
}

impl Tokenizer {
    /// `--tokenizer bpe|chars:N` with an optional `--vocab FILE` (only with `bpe`).
    pub fn from_flags(tokenizer: &str, vocab: Option<&str>) -> Result<Tokenizer, String> {
        match (tokenizer, vocab) {
            ("bpe", None) => Tokenizer::cl100k(),
            ("bpe", Some(path)) => Tokenizer::from_vocab_file(path),
            (t, None) if t.starts_with("chars:") => Tokenizer::chars(&t["chars:".len()..]),
            (t, Some(_)) if t.starts_with("chars:") => {
                Err("--vocab goes with --tokenizer bpe (a ranks file is a BPE vocabulary), not chars:N".into())
            }
            (other, _) => Err(format!("unknown --tokenizer {other:?}; expected bpe or chars:N (e.g. chars:1.5)")),
        }
    }

    /// `cl100k_base` with its own split pattern (embedded; the default).
    pub fn cl100k() -> Result<Tokenizer, String> {
        Ok(Tokenizer::new(Model::Bpe(bpe::Bpe::cl100k()?), Specials::CL100K, "bpe cl100k_base".into()))
    }

    /// A `.tiktoken` ranks file (`base64-token rank` per line) split with Qwen's pattern.
    pub fn from_vocab_file(path: &str) -> Result<Tokenizer, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--vocab {path}: cannot read: {e}"))?;
        let bpe = bpe::Bpe::from_ranks(&text, QWEN_PATTERN).map_err(|e| format!("--vocab {path}: {e}"))?;
        let specials = Specials::after(bpe.num_ranks());
        let name = format!("bpe {} ({} ranks, Qwen's pattern)", path, bpe.num_ranks());
        Ok(Tokenizer::new(Model::Bpe(bpe), specials, name))
    }

    /// `chars:N`: N characters per token (1 ≤ N ≤ 32, fractional allowed).
    pub fn chars(ratio: &str) -> Result<Tokenizer, String> {
        let model = chars::FixedRatio::parse(ratio)?;
        let name = format!("chars:{ratio}");
        Ok(Tokenizer::new(Model::Chars(model), Specials::QWEN, name))
    }

    fn new(model: Model, specials: Specials, name: String) -> Tokenizer {
        Tokenizer { model, specials, name, cache: Mutex::new(SegmentCache::new(SEGMENT_CACHE_BYTES)) }
    }

    /// The same tokenizer with a segment cache of `bytes` (0 = no cache).
    pub fn with_cache_bytes(self, bytes: usize) -> Tokenizer {
        Tokenizer { cache: Mutex::new(SegmentCache::new(bytes)), ..self }
    }

    /// What the fleet's start-up line prints: `bpe cl100k_base`, `chars:1.5`, ...
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn specials(&self) -> Specials {
        self.specials
    }

    /// Token ids of a prompt: special markers become their ids, every segment between them is
    /// encoded (through the cache when it is long enough to be worth keeping).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 4);
        for segment in segments(text, self.specials) {
            match segment {
                Segment::Special(id) => ids.push(id),
                Segment::Text(t) if t.len() < MIN_CACHED_SEGMENT_BYTES => ids.extend(self.encode_ordinary(t)),
                Segment::Text(t) => ids.extend_from_slice(&self.encode_cached(t)),
            }
        }
        ids
    }

    /// Number of tokens of `text` (specials count one each).
    pub fn count(&self, text: &str) -> usize {
        self.encode(text).len()
    }

    /// Ordinary text (no special markers) with every token's end offset: for generated replies.
    pub fn encode_with_ends(&self, text: &str) -> Encoding {
        match &self.model {
            Model::Bpe(b) => b.encode_with_ends(text),
            Model::Chars(c) => c.encode_with_ends(text),
        }
    }

    fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        match &self.model {
            Model::Bpe(b) => b.encode(text),
            Model::Chars(c) => c.encode(text),
        }
    }

    fn encode_cached(&self, text: &str) -> Arc<[u32]> {
        if let Some(ids) = self.lock_cache().get(text) {
            return ids;
        }
        // Encode outside the lock: other pods' requests keep going meanwhile.
        let ids: Arc<[u32]> = self.encode_ordinary(text).into();
        self.lock_cache().insert(text, ids.clone());
        ids
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, SegmentCache> {
        // The cache holds no invariant a panic could break halfway; keep using it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The segment cache's counters so far (for tests and the README's measurements).
    pub fn cache_stats(&self) -> CacheStats {
        let c = self.lock_cache();
        CacheStats { hits: c.hits(), misses: c.misses(), entries: c.len(), bytes: c.bytes() }
    }
}

/// A piece of a prompt: a special marker or the text between markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Special(u32),
    Text(&'a str),
}

/// Splits `text` at the special markers.
fn segments(text: &str, specials: Specials) -> Vec<Segment<'_>> {
    let markers = [(IM_START, specials.im_start), (IM_END, specials.im_end), (END_OF_TEXT, specials.end_of_text)];
    let mut out = Vec::new();
    let mut start = 0; // where the current run of ordinary text starts
    let mut pos = 0; // where to look for the next marker
    while let Some(off) = text[pos..].find("<|") {
        let at = pos + off;
        match markers.iter().find(|(m, _)| text[at..].starts_with(m)) {
            Some((m, id)) => {
                if at > start {
                    out.push(Segment::Text(&text[start..at]));
                }
                out.push(Segment::Special(*id));
                start = at + m.len();
                pos = start;
            }
            None => pos = at + 2, // "<|" that starts no marker is ordinary text
        }
    }
    if start < text.len() {
        out.push(Segment::Text(&text[start..]));
    }
    out
}

#[cfg(test)]
mod tests;
