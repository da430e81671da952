//! `queue-scorer` (llm-d): score = (maxQ − q) / (maxQ − minQ) over the candidates, all equal → 1.
//! q is the effective queue: the pod's `vllm:num_requests_waiting`, or this gateway's in-flight
//! requests beyond the pod's running batch when larger (load the next scrape has not shown yet);
//! with unknown metrics, this gateway's in-flight requests.

use super::{Candidate, Scorer, normalised_low_is_better};
use crate::request::SchedulingRequest;

pub struct QueueScorer;

impl Scorer for QueueScorer {
    fn measures_load(&self) -> bool {
        true
    }

    fn score(&self, _request: &SchedulingRequest, candidates: &[Candidate], out: &mut [f64]) {
        normalised_low_is_better(candidates, |c| f64::from(c.effective_queue()), out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn shortest_queue_scores_one_longest_zero() {
        let c =
            candidates(&[endpoint("a:1", 0, 0, 0.0), endpoint("b:1", 4, 0, 0.0), endpoint("c:1", 8, 0, 0.0)], &[], &[]);
        let mut out = vec![0.0; 3];
        QueueScorer.score(&request(), &c, &mut out);
        assert_eq!(out, vec![1.0, 0.5, 0.0]);
    }

    #[test]
    fn equal_queues_all_score_one() {
        let c = candidates(&[endpoint("a:1", 2, 0, 0.0), endpoint("b:1", 2, 0, 0.0)], &[], &[]);
        let mut out = vec![0.0; 2];
        QueueScorer.score(&request(), &c, &mut out);
        assert_eq!(out, vec![1.0, 1.0]);
    }

    #[test]
    fn own_in_flight_counts_before_the_scrape_shows_it() {
        // Both pods report empty queues, but this gateway just sent 6 requests to the first,
        // more than its running batch of 2.
        let c = candidates(&[endpoint("a:1", 0, 2, 0.0), endpoint("b:1", 0, 0, 0.0)], &[6, 0], &[]);
        let mut out = vec![0.0; 2];
        QueueScorer.score(&request(), &c, &mut out);
        assert_eq!(out, vec![0.0, 1.0]);
    }

    #[test]
    fn unknown_metrics_count_every_in_flight_request_as_queued() {
        // b's metrics are unknown: its 3 in-flight requests are all it is judged on.
        let c = with_unknown(candidates(&[endpoint("a:1", 1, 8, 0.0), endpoint("b:1", 0, 8, 0.0)], &[2, 3], &[]), &[1]);
        let mut out = vec![0.0; 2];
        QueueScorer.score(&request(), &c, &mut out);
        assert_eq!(out, vec![1.0, 0.0]);
    }
}
