//! Byte-pair encoding through `tiktoken-rs`'s `CoreBPE`: the embedded `cl100k_base`, or a
//! `.tiktoken` ranks file.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustc_hash::FxHashMap;
use tiktoken_rs::CoreBPE;

use super::Encoding;

/// Qwen's pre-tokenizer split pattern, as written in `PAT_STR` of `dashscope/tokenizers/qwen_tokenizer.py`
/// (the `dashscope` wheel on PyPI, which also ships `qwen.tiktoken`); Qwen2 and Qwen3's
/// `tokenizer.json` use the same pattern. Unlike cl100k's it splits every digit on its own.
pub const QWEN_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Longest ranks file accepted (Qwen's is 2.6 MB; o200k's 3.6 MB): anything larger is not a vocabulary.
const MAX_RANKS_FILE_BYTES: usize = 64 * 1024 * 1024;

/// A BPE vocabulary with its split pattern (shared: the tables are tens of megabytes).
#[derive(Clone)]
pub struct Bpe {
    tables: Arc<Tables>,
}

struct Tables {
    core: CoreBPE,
    /// Bytes of each rank (to know where each token ends).
    token_bytes: Vec<Vec<u8>>,
}

/// `cl100k_base`, parsed once per process (about 0.1 s).
static CL100K: OnceLock<Result<Bpe, String>> = OnceLock::new();

/// `cl100k_base`'s ordinary ranks are 0..=100,255.
const CL100K_MAX_RANK: u32 = 100_255;

impl Bpe {
    /// The embedded `cl100k_base`.
    pub fn cl100k() -> Result<Bpe, String> {
        CL100K
            .get_or_init(|| {
                let core = tiktoken_rs::cl100k_base().map_err(|e| format!("the embedded cl100k_base: {e}"))?;
                let token_bytes = decoder_table(&core, CL100K_MAX_RANK);
                Ok(Bpe { tables: Arc::new(Tables { core, token_bytes }) })
            })
            .clone()
    }

    /// A `.tiktoken` file's ranks with `pattern`.
    pub fn from_ranks(text: &str, pattern: &str) -> Result<Bpe, String> {
        if text.len() > MAX_RANKS_FILE_BYTES {
            return Err(format!("{} bytes is too large for a ranks file (limit {MAX_RANKS_FILE_BYTES})", text.len()));
        }
        let mut encoder: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
        let mut token_bytes: Vec<Vec<u8>> = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = |why: &str| format!("line {}: {why}; expected `<base64 token> <rank>`", i + 1);
            let mut parts = line.split_whitespace();
            let (Some(b64), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("not two fields"));
            };
            let bytes = STANDARD.decode(b64).map_err(|e| bad(&format!("bad base64 ({e})")))?;
            let rank: u32 = rank.parse().map_err(|_| bad("the rank is not a number"))?;
            if rank as usize != token_bytes.len() {
                return Err(bad(&format!("rank {rank} out of order (expected {})", token_bytes.len())));
            }
            token_bytes.push(bytes.clone());
            if encoder.insert(bytes, rank).is_some() {
                return Err(bad("this token appears twice"));
            }
        }
        if token_bytes.len() < 256 {
            return Err(format!(
                "only {} ranks; a byte-level BPE has at least the 256 single bytes",
                token_bytes.len()
            ));
        }
        let core = CoreBPE::new(encoder, FxHashMap::default(), pattern).map_err(|e| format!("bad pattern: {e}"))?;
        Ok(Bpe { tables: Arc::new(Tables { core, token_bytes }) })
    }

    pub fn num_ranks(&self) -> u32 {
        self.tables.token_bytes.len() as u32
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.tables.core.encode_ordinary(text)
    }

    pub fn encode_with_ends(&self, text: &str) -> Encoding {
        let ids = self.encode(text);
        let mut ends = Vec::with_capacity(ids.len());
        let mut at = 0usize;
        for id in &ids {
            at += self.tables.token_bytes.get(*id as usize).map_or(0, Vec::len);
            ends.push(at);
        }
        Encoding { ids, ends }
    }
}

/// The bytes of ranks `0..=max_rank` (ranks the vocabulary lacks get none).
fn decoder_table(core: &CoreBPE, max_rank: u32) -> Vec<Vec<u8>> {
    (0..=max_rank).map(|r| core.decode_bytes(&[r]).unwrap_or_default()).collect()
}
