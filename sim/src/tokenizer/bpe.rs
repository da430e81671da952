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

/// Longest stretch of text handed to the BPE at once. tiktoken's merge loop is quadratic in the
/// length of a regex piece, and a piece is a whole run of letters: a 1 MB prompt of one "word" would
/// take minutes. Longer text is cut where a letter or digit is followed by anything else (a space,
/// `，`, `(`): the split patterns cut there too, so the tokens are the same; only a kilobyte with no
/// such place is cut at a character boundary. Cuts depend only on the text before them, so encoding
/// stays prefix-stable.
const MAX_CHUNK_BYTES: usize = 1024;

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
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        for chunk in chunks(text) {
            ids.extend(self.tables.core.encode_ordinary(chunk));
        }
        ids
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

/// `text` in pieces of at most [`MAX_CHUNK_BYTES`], cut where the split patterns cut anyway.
fn chunks(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = if rest.len() <= MAX_CHUNK_BYTES { rest.len() } else { chunk_end(rest) };
        let (chunk, tail) = rest.split_at(cut);
        rest = tail;
        Some(chunk)
    })
}

/// Where the first chunk of a long `text` ends: the last place within the limit where a letter or
/// digit is followed by something else, else the last character boundary within it.
fn chunk_end(text: &str) -> usize {
    let mut last_cut = None;
    let mut last_boundary = 0;
    let mut prev_alnum = false;
    for (i, c) in text.char_indices() {
        if i > MAX_CHUNK_BYTES {
            break;
        }
        if i > 0 {
            last_boundary = i;
            if prev_alnum && !c.is_alphanumeric() {
                last_cut = Some(i);
            }
        }
        prev_alnum = c.is_alphanumeric();
    }
    last_cut.unwrap_or(last_boundary.max(1))
}

/// The bytes of ranks `0..=max_rank` (ranks the vocabulary lacks get none).
fn decoder_table(core: &CoreBPE, max_rank: u32) -> Vec<Vec<u8>> {
    (0..=max_rank).map(|r| core.decode_bytes(&[r]).unwrap_or_default()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_before_a_space_and_tokenized_as_a_whole() {
        let bpe = Bpe::cl100k().unwrap();
        let text = "The quick brown fox jumps over the lazy dog, again and again. ".repeat(300);
        assert!(text.len() > 4 * MAX_CHUNK_BYTES);
        assert!(chunks(&text).all(|c| c.len() <= MAX_CHUNK_BYTES));
        assert!(chunks(&text).skip(1).all(|c| c.starts_with([' ', ',', '.'])));
        assert_eq!(bpe.encode(&text), bpe.tables.core.encode_ordinary(&text));
    }

    #[test]
    fn chinese_is_cut_at_its_punctuation_and_tokenized_as_a_whole() {
        let bpe = Bpe::cl100k().unwrap();
        let text = "缓存服务器重启以后，路由器必须尽快知道。".repeat(200); // 11 KB, no whitespace
        assert!(chunks(&text).skip(1).all(|c| c.starts_with(['，', '。'])));
        assert_eq!(bpe.encode(&text), bpe.tables.core.encode_ordinary(&text));
    }

    #[test]
    fn a_run_of_letters_is_cut_at_characters_and_stays_prefix_stable() {
        let bpe = Bpe::cl100k().unwrap();
        let text = "缓存服务器".repeat(2000); // 30 KB of letters: one regex piece
        assert!(chunks(&text).all(|c| c.len() <= MAX_CHUNK_BYTES));
        assert_eq!(chunks(&text).map(str::len).sum::<usize>(), text.len());
        let full = bpe.encode(&text);
        let half: String = text.chars().take(5_001).collect();
        let prefix = bpe.encode(&half);
        let common = prefix.iter().zip(&full).take_while(|(a, b)| a == b).count();
        assert!(prefix.len() - common <= 2, "{} of {} differ", prefix.len() - common, prefix.len());
        assert!(!bpe.encode(&"a".repeat(100_000)).is_empty());
    }
}
