//! What a simulated model "says": text drawn from the request's own prompt, so a reply reads like the
//! conversation it belongs to (English prose, code and JSON, Chinese) and a client that appends it
//! to the next turn keeps that kind of text, with its characters-per-token ratio.
//!
//! A reply is spans of the prompt's text (20-90 characters each, starting at a word when the text has
//! spaces, anywhere in text without them such as Chinese) chosen by a seed from the prompt's token
//! ids, so the same prompt always gets the same reply, like greedy decoding. It is tokenized with the
//! pod's tokenizer and cut to the requested number of tokens; a reply that stops on its own (no
//! `max_tokens`) ends with `<|im_end|>`, which has no text, as a chat model's EOS. Streaming sends
//! each token's text, holding back bytes of a character split between two byte-level tokens until
//! the character is complete (what vLLM's incremental detokenizer does).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::tokenizer::Tokenizer;

/// Said when the prompt has no text to draw from (a prompt of token ids).
const FALLBACK_TEXT: &str = "The answer depends on the configuration of the service and the load it sees. \
    Check the logs of each replica first, then compare the latency of the requests that failed with \
    the ones that succeeded, and retry with a smaller batch if the queue keeps growing.";
/// Span lengths in characters.
const SPAN_CHARS: (usize, usize) = (20, 90);
/// A text is "spaced" (words separated by whitespace) when at least this share of its characters is
/// whitespace; English prose has ~17 %, code more, Chinese almost none.
const SPACED_MIN_SHARE: f64 = 0.05;
/// Rounds of "draw more text" before giving up on reaching the length (each doubles the draw).
const MAX_DRAW_ROUNDS: usize = 12;
/// Spans drawn per round at most: a source of nothing but whitespace runs gives empty spans.
const MAX_SPANS_PER_ROUND: usize = 1_000;

/// A planned reply: its token ids and the text each one streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ids: Vec<u32>,
    /// The whole reply text.
    pub text: String,
    /// `text[cuts[i-1]..cuts[i]]` is what token i streams (`cuts[-1]` = 0); always char boundaries.
    cuts: Vec<usize>,
}

impl Reply {
    /// The text token `index` streams (empty for a held-back partial character or `<|im_end|>`).
    pub fn piece(&self, index: usize) -> &str {
        let end = self.cuts.get(index).copied().unwrap_or(self.text.len());
        let start = if index == 0 { 0 } else { self.cuts.get(index - 1).copied().unwrap_or(self.text.len()) };
        self.text.get(start..end).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The deterministic seed of a reply: FNV-1a of the prompt's token ids.
pub fn generation_seed(prompt: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in prompt {
        h ^= u64::from(*t);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A reply of exactly `len` tokens drawn from `source`; `stops` ends it with `<|im_end|>`.
pub fn plan(tokenizer: &Tokenizer, source: &str, seed: u64, len: usize, stops: bool) -> Reply {
    let source = if source.trim().is_empty() { FALLBACK_TEXT } else { source };
    let text_tokens = if stops { len.saturating_sub(1) } else { len };
    let mut rng = SmallRng::seed_from_u64(seed);
    let spaced = is_spaced(source);
    // About 4 characters a token to start with; draw twice as much each round until long enough.
    let mut want_chars = text_tokens * 4 + SPAN_CHARS.1;
    let mut text = String::new();
    let mut chars = 0usize;
    let mut enc = tokenizer.encode_with_ends("");
    for _ in 0..MAX_DRAW_ROUNDS {
        for _ in 0..MAX_SPANS_PER_ROUND {
            if chars >= want_chars {
                break;
            }
            chars += draw_span(source, spaced, &mut rng, &mut text);
        }
        if chars == 0 {
            break; // nothing but whitespace to draw from
        }
        enc = tokenizer.encode_with_ends(&text);
        if enc.ids.len() >= text_tokens {
            break;
        }
        want_chars *= 2;
    }
    if enc.ids.len() < text_tokens && source != FALLBACK_TEXT {
        return plan(tokenizer, FALLBACK_TEXT, seed, len, stops);
    }
    enc.ids.truncate(text_tokens);
    enc.ends.truncate(text_tokens);
    let end = enc.ends.last().copied().unwrap_or(0);
    text.truncate(floor_char_boundary(&text, end));
    let mut cuts: Vec<usize> = enc.ends.iter().map(|&e| floor_char_boundary(&text, e)).collect();
    if let Some(last) = cuts.last_mut() {
        *last = text.len(); // the last text token flushes whatever was held back
    }
    let mut ids = enc.ids;
    if stops && len > 0 {
        ids.push(tokenizer.specials().im_end);
        cuts.push(text.len());
    }
    Reply { ids, text, cuts }
}

/// Whether words in `text` are separated by whitespace.
fn is_spaced(text: &str) -> bool {
    let (mut ws, mut all) = (0usize, 0usize);
    for c in text.chars().take(4096) {
        all += 1;
        ws += usize::from(c.is_whitespace());
    }
    all > 0 && ws as f64 / all as f64 >= SPACED_MIN_SHARE
}

/// Appends one span of `source`: from a random word start (spaced text) or character, 20-90
/// characters long, ending before a space in spaced text. Returns the characters appended.
fn draw_span(source: &str, spaced: bool, rng: &mut SmallRng, out: &mut String) -> usize {
    let at = floor_char_boundary(source, rng.random_range(0..source.len()));
    let start = if spaced {
        match source[at..].find(char::is_whitespace) {
            Some(off) => at + off,
            None => 0,
        }
    } else {
        at
    };
    let want = rng.random_range(SPAN_CHARS.0..=SPAN_CHARS.1);
    let rest = &source[start..];
    let mut end = rest.char_indices().nth(want).map_or(rest.len(), |(i, _)| i);
    if spaced && let Some(off) = rest[end..].find(char::is_whitespace) {
        end += off;
    }
    let span = if out.is_empty() { rest[..end].trim_start() } else { &rest[..end] };
    out.push_str(span);
    span.chars().count()
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHINESE: &str = "服务器重启以后缓存是空的，路由器必须尽快知道这一点，否则它会继续把请求发往冷的副本。\
        调度器会把每一段对话留在已经缓存其前缀的服务器上。";

    fn cl100k() -> Tokenizer {
        Tokenizer::cl100k().unwrap()
    }

    #[test]
    fn a_reply_has_exactly_the_requested_tokens_and_streams_its_whole_text() {
        let t = cl100k();
        for (source, len, stops) in [(FALLBACK_TEXT, 64, false), (CHINESE, 37, true), ("", 5, false)] {
            let r = plan(&t, source, 9, len, stops);
            assert_eq!(r.len(), len, "{source:?}");
            let streamed: String = (0..r.len()).map(|i| r.piece(i)).collect();
            assert_eq!(streamed, r.text);
            assert_eq!(r.ids.last() == Some(&t.specials().im_end), stops);
        }
    }

    #[test]
    fn a_character_split_between_byte_level_tokens_streams_with_its_second_token() {
        let r = plan(&cl100k(), CHINESE, 4, 60, false);
        let held_back = (0..r.len()).filter(|&i| r.piece(i).is_empty()).count();
        assert!(held_back > 0, "cl100k splits some Chinese characters into two tokens");
        assert!((0..r.len()).all(|i| r.piece(i).chars().all(|c| CHINESE.contains(c))));
    }

    #[test]
    fn a_reply_is_made_of_the_prompts_own_text() {
        let t = cl100k();
        let r = plan(&t, CHINESE, 3, 40, false);
        assert!(r.text.chars().all(|c| CHINESE.contains(c)), "{}", r.text);
        let english = plan(&t, FALLBACK_TEXT, 3, 40, false);
        assert!(english.text.split_whitespace().all(|w| FALLBACK_TEXT.contains(w)), "{}", english.text);
    }

    #[test]
    fn the_same_prompt_gets_the_same_reply_and_another_seed_another() {
        let t = cl100k();
        assert_eq!(plan(&t, FALLBACK_TEXT, 1, 30, true), plan(&t, FALLBACK_TEXT, 1, 30, true));
        assert_ne!(plan(&t, FALLBACK_TEXT, 1, 30, true).text, plan(&t, FALLBACK_TEXT, 2, 30, true).text);
    }

    #[test]
    fn re_tokenizing_a_reply_gives_back_its_tokens_but_for_the_word_cut_at_the_end() {
        // What lets a follow-up turn hit the blocks the reply was generated into.
        let t = cl100k();
        for seed in 0..20 {
            let r = plan(&t, FALLBACK_TEXT, seed, 50, false);
            let again = t.encode(&r.text);
            let common = again.iter().zip(&r.ids).take_while(|(a, b)| a == b).count();
            assert!(common + 2 >= r.len(), "seed {seed}: {common} of {} tokens agree", r.len());
        }
    }

    #[test]
    fn a_source_of_whitespace_runs_still_gives_a_reply() {
        let t = cl100k();
        let source = format!("x{}", " ".repeat(200));
        assert_eq!(plan(&t, &source, 1, 8, false).len(), 8);
    }
}
