//! Tests of the prefix index.

use super::*;

const BPT: f64 = 4.0;

fn settings(capacity: usize, total: usize) -> PrefixSettings {
    PrefixSettings { lru_capacity_per_server: capacity, max_total_blocks: total, ..PrefixSettings::default() }
}

fn id(i: u32) -> EndpointId {
    EndpointId(i)
}

fn matches(index: &PrefixIndex, hashes: &[u64]) -> Vec<(u32, u32)> {
    let mut m = Matches::default();
    index.matches_into(hashes, &mut m);
    let mut all: Vec<(u32, u32)> = m.matched().map(|(id, n)| (id.0, n)).collect();
    all.sort_unstable();
    all
}

#[test]
fn matches_count_leading_blocks_per_endpoint() {
    let mut index = PrefixIndex::new(settings(100, 1000));
    index.record(id(0), &[1, 2, 3], BPT);
    index.record(id(1), &[1, 2], BPT);
    index.record(id(2), &[2, 3], BPT);
    assert_eq!(matches(&index, &[1, 2, 3, 4]), vec![(0, 3), (1, 2)], "a match must start at the first block");
    assert_eq!(index.matched_blocks(&[1, 2, 3, 4], id(0)), 3);
    // The buffer is reused: a second walk does not see the first one's counts.
    let mut m = Matches::default();
    index.matches_into(&[1, 2, 3], &mut m);
    index.matches_into(&[9], &mut m);
    assert_eq!(m.matched().count(), 0);
    assert_eq!(m.get(id(0)), 0);
}

#[test]
fn lru_evicts_least_recently_used_per_endpoint() {
    let mut index = PrefixIndex::new(settings(3, 1000));
    index.record(id(0), &[1, 2, 3], BPT);
    index.record(id(0), &[1], BPT); // touch 1
    index.record(id(0), &[4], BPT); // evicts 2, the least recently used
    assert_eq!(index.endpoint_len(id(0)), 3);
    assert_eq!(index.matched_blocks(&[1], id(0)), 1);
    assert_eq!(index.matched_blocks(&[2], id(0)), 0);
    assert_eq!(index.matched_blocks(&[4], id(0)), 1);
}

#[test]
fn memory_is_bounded_under_heavy_traffic() {
    let mut index = PrefixIndex::new(settings(31_250, 20_000));
    for i in 0..100_000u64 {
        index.record(id((i % 4) as u32), &[i * 3, i * 3 + 1, i * 3 + 2], BPT);
    }
    assert!(index.len() <= 20_000, "{}", index.len());
    assert!(index.queued() <= 2 * 20_000 + 4 * 64 + 4 * 3, "use-order queues stay bounded: {}", index.queued());
    assert!(index.holders.len() <= 20_000);
}

#[test]
fn capacity_follows_the_pods_tokens_through_the_ratio() {
    let mut index = PrefixIndex::new(settings(1000, 1_000_000));
    // 800 KV blocks of 16 tokens = 12,800 tokens. At 5 bytes a token that is 64,000 bytes, 1,000
    // blocks of 64 bytes; at 4 bytes a token, 800.
    index.set_capacity_tokens(id(0), Some(800 * 16), 5.0);
    assert_eq!(index.capacity_blocks(id(0), 5.0), 1000);
    assert_eq!(index.capacity_blocks(id(0), 4.0), 800);
    index.set_capacity_tokens(id(1), None, 5.0);
    assert_eq!(index.capacity_blocks(id(1), 5.0), 1000, "no report: the configured default");
    index.set_capacity_tokens(id(2), Some(2 * 16), 4.0);
    index.record(id(2), &[1, 2, 3], 4.0);
    assert_eq!(index.endpoint_len(id(2)), 2);
}

#[test]
fn rounding_noise_never_shrinks_the_capacity() {
    let mut index = PrefixIndex::new(settings(1000, 1_000_000));
    let hashes: Vec<u64> = (1..=20).collect();
    index.record(id(0), &hashes, BPT);
    for i in 0..10 * CORRECTION_EPOCH_REPORTS {
        // Half the reports one block short: block boundaries in bytes and tokens disagree.
        let observed = if i % 2 == 0 { 20 } else { 19 };
        index.correct(id(0), &hashes, 20, observed, BPT);
    }
    assert_eq!(index.scale(id(0)), 1.0);
}

#[test]
fn a_pod_that_holds_less_shrinks_the_capacity_statistically_and_recovers() {
    let mut index = PrefixIndex::new(settings(1000, 1_000_000));
    let hashes: Vec<u64> = (1..=20).collect();
    index.record(id(0), &hashes, BPT);
    for _ in 0..CORRECTION_EPOCH_REPORTS - 1 {
        assert_eq!(index.correct(id(0), &hashes, 20, 9, BPT), Correction::OverPredicted);
        assert_eq!(index.scale(id(0)), 1.0, "no single report moves the scale");
    }
    index.correct(id(0), &hashes, 20, 9, BPT);
    let shrunk = index.scale(id(0));
    assert!((shrunk - 0.5 / CONFIRMING_FILL).abs() < 1e-9, "{shrunk}");
    for _ in 0..20 * CORRECTION_EPOCH_REPORTS {
        index.correct(id(0), &hashes, 20, 9, BPT);
    }
    assert_eq!(index.scale(id(0)), MIN_CAPACITY_SCALE, "bounded below");
    for _ in 0..20 * CORRECTION_EPOCH_REPORTS {
        index.correct(id(0), &hashes, 20, 20, BPT);
    }
    assert_eq!(index.scale(id(0)), 1.0, "confirmed predictions grow it back");
}

#[test]
fn a_reset_pod_is_forgotten_once_several_prompts_find_nothing() {
    let mut index = PrefixIndex::new(settings(100, 100_000));
    let prompts: Vec<Vec<u64>> = (0..3u64).map(|p| (1..=10).map(|b| p * 100 + b).collect()).collect();
    for prompt in &prompts {
        index.record(id(0), prompt, BPT);
    }
    index.record(id(0), &[50, 51, 52], BPT);
    assert_eq!(index.correct(id(0), &prompts[0], 10, 0, BPT), Correction::OverPredicted, "one zero: not yet");
    assert_eq!(index.correct(id(0), &prompts[1], 10, 0, BPT), Correction::OverPredicted);
    assert_eq!(index.correct(id(0), &prompts[2], 10, 0, BPT), Correction::Reset, "three prompts: the pod lost it");
    assert_eq!(index.endpoint_len(id(0)), 10, "only the prompt it just served");
    assert_eq!(index.matched_blocks(&[50], id(0)), 0);
    assert_eq!(index.correct(id(0), &prompts[2], 2, 0, BPT), Correction::OverPredicted, "short: no evidence");
}

#[test]
fn zero_reports_behind_one_prefix_being_prefilled_are_not_a_reset() {
    // A burst of conversations behind one system prompt: each request after the first finds
    // nothing cached, because the first is still computing the shared blocks.
    let mut index = PrefixIndex::new(settings(100, 100_000));
    let shared: Vec<u64> = (1..=10).collect();
    index.record(id(0), &shared, BPT);
    index.record(id(0), &[50, 51], BPT);
    for _ in 0..10 {
        assert_eq!(index.correct(id(0), &shared, 10, 0, BPT), Correction::OverPredicted);
    }
    assert_eq!(index.matched_blocks(&[50, 51], id(0)), 2, "nothing forgotten");
    // A hit in between ends a run of zeros.
    let other: Vec<Vec<u64>> = (1..3u64).map(|p| vec![p * 1000]).collect();
    index.correct(id(0), &other[0], 10, 0, BPT);
    index.correct(id(0), &shared, 10, 8, BPT);
    index.correct(id(0), &other[1], 10, 0, BPT);
    assert_eq!(index.correct(id(0), &shared, 10, 0, BPT), Correction::OverPredicted);
    assert_eq!(index.matched_blocks(&[50, 51], id(0)), 2);
}

#[test]
fn a_held_prefix_is_refreshed_from_its_last_block_alone() {
    let mut full = PrefixIndex::new(settings(6, 1000));
    let mut anchored = PrefixIndex::new(settings(6, 1000));
    for index in [&mut full, &mut anchored] {
        index.record(id(0), &[1, 2, 3, 4], BPT);
        index.record(id(0), &[7, 8], BPT); // newer: 1..4 are now the least recently used
    }
    // The follow-up turn 1,2,3,4,5: one index gets all five hashes, the other the held four
    // named by their last block (4) and the new one.
    full.record(id(0), &[1, 2, 3, 4, 5], BPT);
    anchored.record_held(id(0), 4, &[4, 5], BPT);
    for index in [&full, &anchored] {
        assert_eq!(index.matched_blocks(&[1, 2, 3, 4, 5], id(0)), 5);
        assert_eq!(index.matched_blocks(&[7], id(0)), 0, "capacity 6: the older turn went, not the held prefix");
    }
    assert_eq!(full.held(id(0)), anchored.held(id(0)));
    // An anchor the index does not hold refreshes nothing but still records what follows.
    anchored.record_held(id(1), 3, &[99, 100], BPT);
    assert_eq!(anchored.matched_blocks(&[100], id(1)), 1);
}

#[test]
fn a_fresh_prompt_is_not_touched_again_but_an_old_one_is() {
    let mut index = PrefixIndex::new(settings(2000, 1_000_000));
    for b in 0..900u64 {
        index.record(id(0), &[50_000 + b], BPT);
    }
    let hot: Vec<u64> = (1..=100).collect();
    index.record(id(0), &hot, BPT);
    let queued = index.queued();
    for _ in 0..50 {
        index.record(id(0), &hot, BPT);
        index.record_held(id(0), 100, &[100], BPT);
    }
    assert_eq!(index.queued(), queued, "re-recording a prompt among the freshest quarter queues nothing");
    // Enough newer traffic makes it old: then it is refreshed and outlives what came after.
    for b in 0..900u64 {
        index.record(id(0), &[10_000 + b], BPT);
    }
    index.record_held(id(0), 100, &[100], BPT);
    assert!(index.queued() > queued + 900, "the old prompt was refreshed");
    for b in 0..900u64 {
        index.record(id(0), &[20_000 + b], BPT);
    }
    assert_eq!(index.endpoint_len(id(0)), 2000);
    assert_eq!(index.matched_blocks(&hot, id(0)), 100, "the refreshed prompt survived");
    assert_eq!(index.matched_blocks(&[50_000], id(0)), 0, "the untouched oldest went");
}

#[test]
fn a_long_conversation_is_not_walked_again_while_fresh_and_survives_when_old() {
    // Capacity 1,000: a quarter is 250 uses, shorter than the 400-block conversation.
    let mut index = PrefixIndex::new(settings(1000, 1_000_000));
    let turn: Vec<u64> = (1..=400).collect();
    index.record(id(0), &turn, BPT);
    let queued = index.queued();
    // Later turns name the held 400 by their last block, with other traffic in between.
    let mut held = 400u32;
    for t in 0..20u64 {
        index.record(id(0), &[90_000 + t], BPT);
        let next = 1_000 + t;
        index.record_held(id(0), held, &[if t == 0 { 400 } else { next - 1 }, next], BPT);
        held += 1;
    }
    assert_eq!(index.queued(), queued + 40, "each turn queued its new block and the other traffic, not the chain");
    // Other traffic of more than a quarter of the capacity makes it stale: the next turn walks and
    // refreshes it, so it outlives what came before and after.
    for b in 0..300u64 {
        index.record(id(0), &[50_000 + b], BPT);
    }
    index.record_held(id(0), held, &[1_019], BPT);
    assert!(index.queued() >= queued + 40 + 300 + 400, "the stale chain was refreshed");
    for b in 0..500u64 {
        index.record(id(0), &[60_000 + b], BPT);
    }
    let mut whole = turn.clone();
    whole.extend(1_000..1_020);
    assert_eq!(index.matched_blocks(&whole, id(0)), 420, "the refreshed conversation survived");
    assert_eq!(index.matched_blocks(&[90_000], id(0)), 0, "the older traffic went");
}

#[test]
fn removing_endpoints_frees_their_entries() {
    let mut index = PrefixIndex::new(settings(100, 1000));
    index.record(id(0), &[1, 2], BPT);
    index.record(id(1), &[1, 2], BPT);
    index.remove(id(0));
    assert_eq!(index.len(), 2);
    assert_eq!(matches(&index, &[1, 2]), vec![(1, 2)]);
    assert_eq!(index.ids().collect::<Vec<_>>(), vec![id(1)]);
}
