//! `weighted-random-picker`: probability proportional to the total score (uniform when every total
//! is zero); fallbacks by total.

use super::{PickInput, Picker, push_fallbacks, ranks, uniform};
use crate::scheduler::mix64;

pub struct WeightedRandomPicker;

impl Picker for WeightedRandomPicker {
    fn name(&self) -> &'static str {
        "weighted-random-picker"
    }

    fn pick(&self, input: &PickInput, fallbacks: usize, out: &mut Vec<usize>) -> bool {
        let n = input.candidates.len();
        if n == 0 {
            return false;
        }
        let sum: f64 = input.totals.iter().map(|t| t.max(0.0)).sum();
        let primary = if sum <= 0.0 {
            uniform(input.seed, n)
        } else {
            let unit = (mix64(input.seed) >> 11) as f64 / (1u64 << 53) as f64;
            let mut target = unit * sum;
            let mut chosen = n - 1;
            for (i, t) in input.totals.iter().enumerate() {
                target -= t.max(0.0);
                if target <= 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        };
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
    fn heavier_totals_win_more_often() {
        let pool: Vec<_> = (0..2).map(|i| endpoint(&format!("10.0.0.{i}:8000"), 0, 0, 0.0)).collect();
        let c = candidates(&pool, &[], &[]);
        let first = (0..200).filter(|&seed| pick(&WeightedRandomPicker, &[9.0, 1.0], &c, 0, seed)[0] == 0).count();
        assert!(first > 150, "weight 9:1 → mostly the first: {first}");
    }
}
