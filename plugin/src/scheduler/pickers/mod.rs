//! Pickers: turn weighted totals into an ordered choice, primary first, then fallbacks for Envoy's
//! retries. To add one: a file here with its doc comment and one line in
//! [`super::registry::REGISTRY`].

pub mod max_score;
pub mod random;
pub mod weighted_random;

use super::Candidate;

/// What a picker chooses from.
pub struct PickInput<'a, 'b> {
    /// Σ weight × score per candidate.
    pub totals: &'b [f64],
    /// The same sum over the scorers that do not measure load (where the request belongs: its
    /// adapter, its session, its prefix), for placing a prompt no endpoint is known to hold.
    pub affinity: &'b [f64],
    pub candidates: &'b [Candidate<'a>],
    /// Identifies the conversation (its first prompt blocks), for rendezvous placement.
    pub key: u64,
    /// The request continues a conversation (its messages carry an earlier reply).
    pub continues: bool,
    /// Fresh per request, for random pickers.
    pub seed: u64,
    /// Σ of the profile's scorer weights (the largest possible total).
    pub total_weight: f64,
}

pub trait Picker {
    fn name(&self) -> &'static str;
    /// Writes candidate indices into `out`, best first: the primary, then at most `fallbacks` others.
    /// Returns whether the primary was placed by the request's key alone (a prompt no candidate is
    /// known to hold), not by the scores.
    fn pick(&self, input: &PickInput, fallbacks: usize, out: &mut Vec<usize>) -> bool;
}

/// A uniform choice among `n` candidates from the request's seed.
pub(crate) fn uniform(seed: u64, n: usize) -> usize {
    (super::mix64(seed) % n.max(1) as u64) as usize
}

/// The rendezvous rank of every candidate for the request's key: the same on every gateway replica.
pub(crate) fn ranks(input: &PickInput) -> Vec<u64> {
    input.candidates.iter().map(|c| super::mix64(input.key ^ c.address_hash)).collect()
}

/// Appends the `count` best candidates other than `primary`, by total then rendezvous rank: a
/// partial selection (no sort of the whole pool).
pub(crate) fn push_fallbacks(input: &PickInput, ranks: &[u64], primary: usize, count: usize, out: &mut Vec<usize>) {
    let better = |a: usize, b: usize| {
        let (ta, tb) = (input.totals[a], input.totals[b]);
        ta > tb || (ta == tb && ranks[a] > ranks[b])
    };
    let start = out.len();
    for i in 0..input.candidates.len() {
        if i == primary || count == 0 {
            continue;
        }
        // Cheap reject: not better than the current last of a full list.
        if out.len() - start == count && !better(i, out[out.len() - 1]) {
            continue;
        }
        let mut at = out.len();
        while at > start && better(i, out[at - 1]) {
            at -= 1;
        }
        if at - start < count {
            out.insert(at, i);
            if out.len() - start > count {
                out.pop();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn pick(picker: &dyn Picker, totals: &[f64], candidates: &[Candidate], key: u64, seed: u64) -> Vec<usize> {
        let affinity = vec![0.0; candidates.len()];
        let input =
            PickInput { totals, affinity: &affinity, candidates, key, continues: false, seed, total_weight: 7.0 };
        let mut out = Vec::new();
        picker.pick(&input, candidates.len(), &mut out);
        out
    }
}
