//! A deterministic tokenizer stand-in: about four characters a token, prefix-stable.
//!
//! Real BPE tokenizers (Qwen3's has 151,643 entries) average roughly four characters of English per
//! token and start most tokens at a word boundary (`" word"`). This stand-in keeps those two traits
//! and nothing else:
//! - a new token starts when the current one already holds [`MAX_TOKEN_CHARS`] characters, or when a
//!   whitespace character follows a non-whitespace one (so `" word"` pieces form, as in BPE);
//! - a token's id is FNV-1a of its UTF-8 bytes, folded into the vocabulary size.
//!
//! Tokenizing a text prefix gives the prefix of the text's tokens (except possibly the last piece),
//! which is what makes prefix caching work on real servers. It deliberately differs from the plugin's
//! fixed four-character blocks, so agreement between the two is evidence, not construction.

/// Longest token in characters; with word-boundary splits the mean lands near 3.5-4 characters.
pub const MAX_TOKEN_CHARS: usize = 4;
/// Qwen3's vocabulary size (config.json `vocab_size`), so ids look like a real model's.
pub const VOCAB_SIZE: u32 = 151_936;

/// One token: its id and the text it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: u32,
    pub text: String,
}

/// Splits `text` into token pieces (see the module comment for the rule).
pub fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::with_capacity(text.len() / 3 + 1);
    let mut start = 0usize;
    let mut chars_in_piece = 0usize;
    let mut prev_ws = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        let boundary = chars_in_piece > 0 && (chars_in_piece == MAX_TOKEN_CHARS || (ws && !prev_ws));
        if boundary {
            out.push(&text[start..i]);
            start = i;
            chars_in_piece = 0;
        }
        chars_in_piece += 1;
        prev_ws = ws;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// The token id of one piece: FNV-1a (64-bit) of its bytes, folded into the vocabulary.
pub fn piece_id(piece: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in piece.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(VOCAB_SIZE)) as u32
}

/// Token ids of `text`.
pub fn encode(text: &str) -> Vec<u32> {
    pieces(text).into_iter().map(piece_id).collect()
}

/// Number of tokens in `text` without allocating ids.
pub fn count(text: &str) -> usize {
    pieces(text).len()
}

/// Words the simulated model "generates": each is one token (at most four characters with its
/// leading space), so a reply of N tokens is N words and re-tokenizes to the same pieces.
const OUTPUT_WORDS: [&str; 32] = [
    " the", " of", " and", " to", " in", " is", " it", " for", " on", " we", " can", " use", " a", " new", " key",
    " set", " run", " low", " map", " pod", " way", " one", " two", " so", " as", " by", " at", " or", " be", " all",
    " any", " may",
];

/// The `index`-th generated token of a request whose generation seed is `seed` (deterministic).
pub fn output_token(seed: u64, index: u32) -> Token {
    let mut x = seed ^ (u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // SplitMix64 finaliser: spreads consecutive indexes over the word list.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let word = OUTPUT_WORDS[(x % OUTPUT_WORDS.len() as u64) as usize];
    Token { id: piece_id(word), text: word.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split_at_word_starts_and_four_chars() {
        assert_eq!(pieces("hello world"), vec!["hell", "o", " wor", "ld"]);
        assert_eq!(pieces("a  b"), vec!["a", "  b"]);
        assert_eq!(pieces(""), Vec::<&str>::new());
    }

    #[test]
    fn encoding_is_deterministic_and_prefix_stable() {
        let long = "You are a helpful assistant. Answer briefly and cite the policy number.";
        let short = &long[..40];
        let a = encode(long);
        let b = encode(short);
        assert_eq!(a, encode(long));
        // All but the last piece of the prefix agree with the full text's tokens.
        assert_eq!(&a[..b.len() - 1], &b[..b.len() - 1]);
        let chars_per_token = long.chars().count() as f64 / a.len() as f64;
        assert!((3.0..=4.0).contains(&chars_per_token), "{chars_per_token}");
    }

    #[test]
    fn generated_words_are_single_tokens() {
        for i in 0..64 {
            let t = output_token(42, i);
            assert_eq!(encode(&t.text), vec![t.id]);
        }
    }
}
