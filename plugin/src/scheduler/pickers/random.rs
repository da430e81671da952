//! `random-picker`: uniform, from the request's seed; fallbacks by total.

use super::{PickInput, Picker, push_fallbacks, ranks, uniform};

pub struct RandomPicker;

impl Picker for RandomPicker {
    fn name(&self) -> &'static str {
        "random-picker"
    }

    fn pick(&self, input: &PickInput, fallbacks: usize, out: &mut Vec<usize>) -> bool {
        let n = input.candidates.len();
        if n == 0 {
            return false;
        }
        let primary = uniform(input.seed, n);
        out.push(primary);
        push_fallbacks(input, &ranks(input), primary, fallbacks, out);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::pick;
    use super::*;
    use crate::scheduler::scorers::test_support::*;

    #[test]
    fn follows_the_seed_over_every_candidate() {
        let pool: Vec<_> = (0..5).map(|i| endpoint(&format!("10.0.0.{i}:8000"), 0, 0, 0.0)).collect();
        let c = candidates(&pool, &[], &[]);
        let mut seen = std::collections::HashSet::new();
        for seed in 0..100 {
            let order = pick(&RandomPicker, &[1.0; 5], &c, 0, seed);
            assert_eq!(order.len(), 5);
            seen.insert(order[0]);
        }
        assert_eq!(seen.len(), 5);
    }
}
