use super::*;

const PROSE: &str = "The scheduler keeps every conversation on the pod that already holds its prefix, \
    so the follow-up turns skip most of their prefill. When a pod restarts, its cache is empty and the \
    router has to learn that quickly, otherwise it keeps sending traffic to a cold replica.";

const CHINESE: &str = "调度器会把每一段对话留在已经缓存其前缀的服务器上，这样后续的轮次可以跳过大部分预填充。\
    当服务器重启时，它的缓存是空的，路由器必须尽快知道这一点。";

fn cl100k() -> Tokenizer {
    Tokenizer::cl100k().expect("the embedded vocabulary loads")
}

#[test]
fn a_prefix_encodes_as_the_full_encoding_but_for_the_word_cut_in_two() {
    let t = cl100k();
    let full = t.encode(PROSE);
    for (cut, _) in PROSE.char_indices().skip(1) {
        let prefix = &PROSE[..cut];
        let pre = t.encode(prefix);
        let common = pre.iter().zip(&full).take_while(|(a, b)| a == b).count();
        // The last word of the prefix (from its last space) may tokenize differently when cut.
        let last_word = &prefix[prefix.rfind(' ').unwrap_or(0)..];
        let allowed = t.encode(last_word).len();
        assert!(
            pre.len() - common <= allowed,
            "cut at {cut} ({prefix:?}): {} of {} tokens differ",
            pre.len() - common,
            pre.len()
        );
    }
}

#[test]
fn cl100k_gives_real_bpe_ratios_on_prose_and_chinese() {
    let t = cl100k();
    let prose = PROSE.chars().count() as f64 / t.count(PROSE) as f64;
    assert!((4.0..=6.5).contains(&prose), "English prose: {prose:.2} characters per token");
    let chinese = CHINESE.chars().count() as f64 / t.count(CHINESE) as f64;
    assert!((0.5..=1.6).contains(&chinese), "Chinese: {chinese:.2} characters per token");
}

#[test]
fn chatml_markers_are_single_special_tokens() {
    let t = cl100k();
    let ids = t.encode("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n");
    let s = t.specials();
    assert_eq!(ids[0], s.im_start);
    assert_eq!(ids.iter().filter(|i| **i == s.im_start).count(), 2);
    assert_eq!(ids.iter().filter(|i| **i == s.im_end).count(), 1);
    // "<|" that starts no marker is ordinary text.
    assert!(!t.encode("a <|b|> c").contains(&s.im_start));
    assert_eq!(t.encode("x<|endoftext|>"), [t.encode("x"), vec![s.end_of_text]].concat());
}

#[test]
fn a_repeated_message_is_served_from_the_cache_with_the_same_ids() {
    let t = cl100k();
    let prompt = format!("<|im_start|>system\n{PROSE}<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n");
    let first = t.encode(&prompt);
    assert_eq!(t.cache_stats().hits, 0);
    assert_eq!(t.encode(&prompt), first);
    let s = t.cache_stats();
    assert_eq!((s.hits, s.misses, s.entries), (1, 1, 1), "the long system message is cached, the short ones are not");
    assert_eq!(first, Tokenizer::cl100k().unwrap().encode(&prompt), "a fresh tokenizer agrees");
}

#[test]
fn chars_1_5_gives_one_and_a_half_characters_per_token_on_cjk_text() {
    let t = Tokenizer::from_flags("chars:1.5", None).unwrap();
    let text: String = CHINESE.chars().cycle().take(300).collect();
    assert_eq!(t.count(&text), 200);
    // Prefix-stable: a prefix's tokens are the text's, but for the last (possibly shorter) one.
    let full = t.encode(&text);
    let prefix: String = text.chars().take(151).collect();
    let pre = t.encode(&prefix);
    assert_eq!(pre.len(), 101);
    assert_eq!(pre[..100], full[..100]);
}

#[test]
fn chars_3_gives_three_characters_per_token_and_token_ends_cover_the_text() {
    let t = Tokenizer::from_flags("chars:3", None).unwrap();
    let code = "fn main() { println!(\"héllo\"); }";
    let e = t.encode_with_ends(code);
    assert_eq!(e.ids.len(), code.chars().count().div_ceil(3));
    assert_eq!(*e.ends.last().unwrap(), code.len());
    assert!(e.ends.iter().all(|&end| code.is_char_boundary(end)));
}

#[test]
fn bad_tokenizer_flags_are_refused_with_the_reason() {
    for (tokenizer, vocab, expect) in [
        ("sentencepiece", None, "unknown --tokenizer"),
        ("chars:0.5", None, "1 to 32"),
        ("chars:many", None, "not a number"),
        ("chars:2", Some("/x"), "--vocab goes with --tokenizer bpe"),
        ("bpe", Some("/nonexistent/qwen.tiktoken"), "cannot read"),
    ] {
        let e = Tokenizer::from_flags(tokenizer, vocab).unwrap_err();
        assert!(e.contains(expect), "{tokenizer} {vocab:?}: {e}");
    }
}

/// A small ranks file: the 256 single bytes, then a few merges.
fn ranks_file(extra: &[&str]) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut lines: Vec<String> = (0..=255u8).map(|b| format!("{} {b}", b64(&[b]))).collect();
    for (i, m) in extra.iter().enumerate() {
        lines.push(format!("{} {}", b64(m.as_bytes()), 256 + i));
    }
    lines.join("\n") + "\n"
}

fn write_temp(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("vllm-sim-tokenizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_ranks_file_loads_with_qwens_pattern_and_specials_after_its_ranks() {
    let path = write_temp("small.tiktoken", &ranks_file(&["he", "ll", "hell", "hello", " w", " wor"]));
    let t = Tokenizer::from_flags("bpe", Some(&path)).unwrap();
    assert_eq!(t.specials(), Specials::after(262));
    // "hello" merges to one rank; Qwen's pattern splits digits one by one.
    assert_eq!(t.encode("hello"), vec![259]);
    assert_eq!(t.encode("2024").len(), 4);
    assert_eq!(t.encode("<|im_start|>hello"), vec![263, 259]);
}

#[test]
fn a_malformed_ranks_file_names_the_line() {
    let mut text = ranks_file(&[]);
    text.push_str("aGk= x\n");
    let e = Tokenizer::from_flags("bpe", Some(&write_temp("bad-rank.tiktoken", &text))).unwrap_err();
    assert!(e.contains("line 257") && e.contains("not a number"), "{e}");
    let e = Tokenizer::from_flags("bpe", Some(&write_temp("short.tiktoken", "aGk= 0\n"))).unwrap_err();
    assert!(e.contains("at least the 256 single bytes"), "{e}");
}

/// Qwen's real vocabulary, when `scripts/common.sh ensure_qwen_vocab` has fetched it:
/// `source scripts/common.sh && ensure_qwen_vocab && cargo test -p vllm-sim -- --ignored`.
#[test]
#[ignore = "needs WIS_QWEN_VOCAB (scripts/common.sh ensure_qwen_vocab downloads it)"]
fn qwens_vocabulary_encodes_as_qwen_does() {
    let path = std::env::var("WIS_QWEN_VOCAB").expect("WIS_QWEN_VOCAB names qwen.tiktoken");
    let t = Tokenizer::from_flags("bpe", Some(&path)).unwrap();
    assert_eq!(t.specials(), Specials::QWEN);
    assert_eq!(t.encode("Hello world"), vec![9707, 1879]);
    assert_eq!(t.encode("<|im_start|>user\n"), vec![151_644, 872, 198]);
    let chinese = CHINESE.chars().count() as f64 / t.count(CHINESE) as f64;
    assert!((1.3..=2.0).contains(&chinese), "Chinese: {chinese:.2} characters per token");
}
