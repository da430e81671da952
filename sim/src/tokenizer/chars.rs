//! `chars:N`: a fixed ratio of N characters per token, prefix-stable.
//!
//! Token k of a segment covers characters `[floor(k·N), floor((k+1)·N))`, so boundaries depend only
//! on a character's position: a prefix of a text is tokenized exactly like the start of the text
//! (but for its last, possibly shorter, token). A segment of C characters has ceil(C / N) tokens.
//! A token's id is FNV-1a of its bytes folded into Qwen's 151,643 ordinary ranks.

use super::Encoding;

/// Ratios accepted: at least one character per token (no empty tokens), at most 32 (beyond any
/// real tokenizer).
const RATIO_RANGE: std::ops::RangeInclusive<f64> = 1.0..=32.0;
/// Qwen's ordinary vocabulary size, so ids look like a real model's.
const VOCAB: u64 = 151_643;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixedRatio {
    chars_per_token: f64,
}

impl FixedRatio {
    pub fn parse(ratio: &str) -> Result<FixedRatio, String> {
        let n: f64 = ratio.trim().parse().map_err(|_| {
            format!("--tokenizer chars:{ratio}: {ratio:?} is not a number; expected e.g. chars:1.5 or chars:3")
        })?;
        if !RATIO_RANGE.contains(&n) {
            return Err(format!(
                "--tokenizer chars:{ratio}: expected {} to {} characters per token",
                RATIO_RANGE.start(),
                RATIO_RANGE.end()
            ));
        }
        Ok(FixedRatio { chars_per_token: n })
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_with_ends(text).ids
    }

    pub fn encode_with_ends(&self, text: &str) -> Encoding {
        let mut out = Encoding::default();
        let mut start = 0usize; // byte offset where the current token starts
        let mut k = 1u64; // index of the next boundary
        let mut next = self.boundary(k);
        for (i, (at, _)) in text.char_indices().enumerate().skip(1) {
            if i >= next {
                out.push_piece(&text[start..at], at);
                start = at;
                while self.boundary(k) <= i {
                    k += 1;
                }
                next = self.boundary(k);
            }
        }
        if start < text.len() {
            out.push_piece(&text[start..], text.len());
        }
        out
    }

    /// Character index where token `k` starts.
    fn boundary(&self, k: u64) -> usize {
        (k as f64 * self.chars_per_token).floor() as usize
    }
}

impl Encoding {
    fn push_piece(&mut self, piece: &str, end: usize) {
        self.ids.push(piece_id(piece));
        self.ends.push(end);
    }
}

/// FNV-1a (64-bit) of the piece's bytes, folded into the vocabulary.
fn piece_id(piece: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in piece.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % VOCAB) as u32
}
