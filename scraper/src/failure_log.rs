//! What the scraper logs about one endpoint's scrapes: changes of state, rate-limited.
//!
//! A user who points the scraper at a server it cannot read must find the reason in the log
//! within one scrape interval; a flapping pod, scraped 20 times a second, must not flood it. Per
//! endpoint (each scrape task owns one [`FailureLog`]):
//!
//! - a **change** the log has not told yet is logged within the scrape that shows it: the first
//!   failure (with its reason and message; an HTTP status comes with an excerpt of the body),
//!   failing for another reason, succeeding again;
//! - but at most [`BURST`] lines per endpoint in any [`MIN_GAP`]: a change beyond that waits until
//!   the window allows a line, and is then logged as one line that also counts the failed and
//!   successful scrapes in between (a pod that flaps every scrape costs [`BURST`] lines per
//!   [`MIN_GAP`], and a pod that goes from "connection refused" to "404" while it starts up shows
//!   both at once);
//! - an endpoint that keeps failing for the same reason gets one **"still failing"** line every
//!   [`SUMMARY_EVERY`], with the number of failed scrapes since the previous line.
//!
//! The decisions are a pure function of the outcomes and the clock ([`FailureLog::observe`]);
//! [`Line::emit`] writes one to `tracing`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The window of the rate limit: a change is never told more than 10 s late.
pub const MIN_GAP: Duration = Duration::from_secs(10);

/// Lines per endpoint per [`MIN_GAP`]: two, so that a failure and the next change (a pod that
/// refused connections while it started and now answers 404; a blip and its recovery) are both
/// told at once, while a flapping pod costs two lines per 10 s instead of 20 a second.
pub const BURST: usize = 2;

/// How often an endpoint that keeps failing for the same reason is recalled: often enough to be
/// in any recent slice of the log, rarely enough to stay one line per pod per minute.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// One scrape's result as the log sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome<'a> {
    Succeeded,
    /// `healthy`: whether the endpoint is still reachable after this failure.
    Failed {
        reason: &'static str,
        message: &'a str,
        healthy: bool,
    },
}

/// What a line tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// Scrapes fail (first failure, or after the log last said they succeed).
    Failing,
    /// Scrapes fail for another reason than the log last said.
    ReasonChanged { from: &'static str },
    /// Scrapes keep failing for the reason the log last said.
    StillFailing,
    /// Scrapes succeed again.
    Recovered,
}

/// One line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub kind: LineKind,
    /// The latest failure (for every kind but `Recovered`).
    pub reason: Option<&'static str>,
    pub message: Option<String>,
    pub healthy: bool,
    /// Failed and successful scrapes since the previous line (this one included).
    pub failures: u64,
    pub successes: u64,
    /// Time since the previous line; None for the endpoint's first line.
    pub since_previous: Option<Duration>,
}

/// The log's memory of one endpoint.
#[derive(Debug, Clone, Default)]
pub struct FailureLog {
    /// What the log last said: None = nothing, or that scrapes succeed; Some(reason) = failing.
    told: Option<&'static str>,
    last_line: Option<Instant>,
    /// When the last [`BURST`] lines were written, oldest first.
    recent: [Option<Instant>; BURST],
    /// The outcome before this one (None = success), to count changes of state.
    previous: Option<&'static str>,
    failures: u64,
    successes: u64,
    /// State changes since the previous line.
    changes: u64,
}

impl FailureLog {
    /// Takes one scrape's outcome at `now`; returns the line to log, if any.
    pub fn observe(&mut self, outcome: Outcome<'_>, now: Instant) -> Option<Line> {
        let state = match outcome {
            Outcome::Succeeded => {
                self.successes += 1;
                None
            }
            Outcome::Failed { reason, .. } => {
                self.failures += 1;
                Some(reason)
            }
        };
        if state != self.previous {
            self.changes += 1;
            self.previous = state;
        }
        let since_previous = self.last_line.map(|t| now.saturating_duration_since(t));
        // The oldest of the last BURST lines has left the window.
        let allowed = self.recent[0].is_none_or(|t| now.saturating_duration_since(t) >= MIN_GAP);
        let kind = match (self.told, state) {
            (None, None) if self.changes > 0 && allowed => LineKind::Recovered,
            (None, None) => return None,
            (Some(_), None) if allowed => LineKind::Recovered,
            (None, Some(_)) if allowed => LineKind::Failing,
            (Some(from), Some(reason)) if from != reason && allowed => LineKind::ReasonChanged { from },
            (Some(_), Some(_)) if allowed && self.changes > 0 => LineKind::StillFailing,
            (Some(_), Some(_)) if since_previous.is_some_and(|d| d >= SUMMARY_EVERY) => LineKind::StillFailing,
            _ => return None,
        };
        let (message, healthy) = match outcome {
            Outcome::Failed { message, healthy, .. } => (Some(message.to_string()), healthy),
            Outcome::Succeeded => (None, true),
        };
        let line = Line {
            kind,
            reason: state,
            message,
            healthy,
            failures: self.failures,
            successes: self.successes,
            since_previous,
        };
        self.told = state;
        self.last_line = Some(now);
        self.recent.rotate_left(1);
        self.recent[BURST - 1] = Some(now);
        self.failures = 0;
        self.successes = 0;
        self.changes = 0;
        Some(line)
    }
}

impl Line {
    /// Writes the line to the log: failures at WARN, recoveries at INFO.
    pub fn emit(&self, addr: SocketAddr, path: &str) {
        let reason = self.reason.unwrap_or("-");
        let error = self.message.as_deref().unwrap_or("");
        let consequence = match (self.healthy, reason) {
            (false, _) => "endpoint is unreachable and out of the pool",
            (true, "connect" | "timeout") => {
                "endpoint stays in the pool with unknown metrics unless --unhealthy-after scrapes in a row fail this way"
            }
            (true, _) => "endpoint stays in the pool with unknown metrics",
        };
        let window = self.since_previous.map_or_else(|| "whole run".into(), |d| format!("last {} s", d.as_secs()));
        let (failures, successes) = (self.failures, self.successes);
        // The error goes into the message itself, unquoted, so a person reads what the server said.
        match &self.kind {
            LineKind::Failing => {
                tracing::warn!(%addr, reason, "GET {path} on {addr} failed: {error}; {consequence}");
            }
            LineKind::ReasonChanged { from } => tracing::warn!(
                %addr, reason, failures, successes,
                "GET {path} on {addr} fails for another reason (was {from}): {error}; {consequence}"
            ),
            LineKind::StillFailing => tracing::warn!(
                %addr, reason, failures, successes,
                "GET {path} on {addr} still failing ({failures} failed, {successes} succeeded in the {window}): \
                 {error}; {consequence}"
            ),
            LineKind::Recovered => tracing::info!(
                %addr, failures, successes,
                "GET {path} on {addr} succeeds again ({failures} failed, {successes} succeeded in the {window})"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_FOUND: Outcome<'static> = Outcome::Failed {
        reason: "http_status",
        message: "answered HTTP 404, expected 200: \"Not Found\"",
        healthy: true,
    };
    const REFUSED: Outcome<'static> =
        Outcome::Failed { reason: "connect", message: "connection failed: Connection refused", healthy: false };

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn success_alone_is_silent_and_the_first_failure_is_told_at_once_with_its_message() {
        let (mut log, t) = (FailureLog::default(), Instant::now());
        assert_eq!(log.observe(Outcome::Succeeded, at(t, 0)), None);
        assert_eq!(log.observe(Outcome::Succeeded, at(t, 50)), None);
        let line = log.observe(NOT_FOUND, at(t, 100)).expect("told within the scrape that failed");
        assert_eq!(line.kind, LineKind::Failing);
        assert_eq!(
            (line.reason, line.message.as_deref()),
            (Some("http_status"), Some("answered HTTP 404, expected 200: \"Not Found\""))
        );
        assert!(line.healthy);
        assert_eq!((line.failures, line.successes, line.since_previous), (1, 2, None));
    }

    #[test]
    fn an_endpoint_that_never_answers_is_told_at_its_first_attempt() {
        let (mut log, t) = (FailureLog::default(), Instant::now());
        let line = log.observe(REFUSED, t).unwrap();
        assert_eq!((line.kind, line.healthy), (LineKind::Failing, false));
    }

    #[test]
    fn a_steady_failure_is_recalled_once_a_minute_and_its_recovery_is_told() {
        let (mut log, t) = (FailureLog::default(), Instant::now());
        log.observe(NOT_FOUND, t).unwrap();
        let mut lines = Vec::new();
        // Two minutes of failures every 50 ms, then one success.
        for i in 1..=2_400 {
            lines.extend(log.observe(NOT_FOUND, at(t, i * 50)));
        }
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|l| l.kind == LineKind::StillFailing && l.failures == 1_200));
        assert_eq!(lines[0].since_previous, Some(SUMMARY_EVERY));
        let recovered = log.observe(Outcome::Succeeded, at(t, 2_401 * 50)).expect("the recovery is told at once");
        assert_eq!((recovered.kind, recovered.failures, recovered.successes), (LineKind::Recovered, 0, 1));
    }

    #[test]
    fn a_new_reason_is_told_at_once_and_a_third_change_waits_for_the_window() {
        let (mut log, t) = (FailureLog::default(), Instant::now());
        log.observe(REFUSED, t).unwrap();
        let line = log.observe(NOT_FOUND, at(t, 50)).expect("a starting pod: refused, then 404");
        assert_eq!(line.kind, LineKind::ReasonChanged { from: "connect" });
        assert_eq!((line.reason, line.healthy, line.failures), (Some("http_status"), true, 1));
        assert_eq!(log.observe(REFUSED, at(t, 100)), None, "two lines in this window already");
        let mut told = None;
        for i in 3..=400 {
            if let Some(line) = log.observe(REFUSED, at(t, i * 50)) {
                told = Some((i * 50, line));
                break;
            }
        }
        let (when, line) = told.expect("told when the window allows");
        assert_eq!(when, MIN_GAP.as_millis() as u64, "the first line left the window");
        assert_eq!(line.kind, LineKind::ReasonChanged { from: "http_status" });
        assert_eq!((line.reason, line.healthy, line.failures), (Some("connect"), false, 199));
    }

    #[test]
    fn a_flapping_pod_costs_a_burst_of_lines_per_window_that_count_what_happened() {
        let (mut log, t) = (FailureLog::default(), Instant::now());
        let mut lines = Vec::new();
        // Fails and succeeds by turns every 50 ms for 60 s.
        for i in 0..1_200u64 {
            let outcome = if i % 2 == 0 { NOT_FOUND } else { Outcome::Succeeded };
            lines.extend(log.observe(outcome, at(t, i * 50)).map(|l| (i * 50, l)));
        }
        let window = MIN_GAP.as_millis() as u64;
        for (i, (when, _)) in lines.iter().enumerate() {
            let in_window = lines[i..].iter().take_while(|(w, _)| *w < when + window).count();
            assert!(in_window <= BURST, "{in_window} lines within {window} ms of {when}");
        }
        assert!(lines.len() >= 6 * BURST - 1, "the flapping keeps being told: {}", lines.len());
        let counted: u64 = lines.iter().map(|(_, l)| l.failures + l.successes).sum();
        let last = lines.last().unwrap().0;
        assert_eq!(counted, last / 50 + 1, "the lines count every scrape up to the last of them");
    }

    #[test]
    fn a_blip_and_its_recovery_are_told_then_silence() {
        let (mut log, t) = (FailureLog::default(), Instant::now());
        assert_eq!(log.observe(NOT_FOUND, t).unwrap().kind, LineKind::Failing);
        let line = log.observe(Outcome::Succeeded, at(t, 50)).expect("the log must not keep saying it fails");
        assert_eq!((line.kind, line.failures, line.successes), (LineKind::Recovered, 0, 1));
        for i in 2..=3_000u64 {
            assert_eq!(log.observe(Outcome::Succeeded, at(t, i * 50)), None, "succeeding and told: silence");
        }
    }
}
