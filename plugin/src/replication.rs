//! How one worker's routing memory follows every worker's events: a [`Replica`] appends its own
//! events to the shared routing log ([`crate::shared_log`]) and applies everyone's in log order.
//!
//! - **One append per request.** The `Routed` event of a decision is appended at once (other
//!   workers must see the load at once); the events a request produces later (`Moved`, `Reported`,
//!   `Released`) are deferred and ride on the next append, this worker's next decision or its next
//!   tick, whichever comes first. So every worker has applied every event within one tick, and the
//!   request path costs at most one append per request: with the sync before the decision, one
//!   shared-data read and two writes when one other worker appended since (see `crate::shared_log`).
//! - **Same events, same order, same memory.** A replica applies its own events only in log order:
//!   directly when nobody appended in between, else by reading the log back. What it applies is
//!   what it encoded, decoded again, so a local apply and a remote one cannot differ; an event that
//!   cannot be encoded is applied nowhere and counted.
//! - **Degrades, never blocks.** If the log cannot take a record, the events apply on this worker
//!   only (its own accounting stays right) and the failure is reported.

use crate::memory::{RoutingEvent, RoutingMemory};
use crate::shared_log::{AppendError, ReadOutcome, SharedLog, SharedStore, StoreError};

/// Deferred events kept at most; beyond it they are appended at once (a tick that never comes must
/// not grow memory).
pub const MAX_DEFERRED_EVENTS: usize = 256;

/// What a flush did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Records appended to the log.
    pub appended: usize,
    /// Events that could not be encoded (applied nowhere).
    pub refused: usize,
    /// The append that failed, if one did (its events applied on this worker only).
    pub failed: Option<AppendError>,
    /// Records applied while reading the log back (own ones among them).
    pub read: ReadOutcome,
    pub read_error: Option<StoreError>,
}

/// What a sync found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    pub read: ReadOutcome,
    /// Records that were not encoded events (from another version, or corrupt).
    pub undecodable: u64,
}

/// One worker's handle on the shared routing log, and its events waiting for the next append.
#[derive(Debug)]
pub struct Replica {
    log: SharedLog,
    deferred: Vec<RoutingEvent>,
    max_records_per_sync: u64,
}

impl Replica {
    /// A replica of the log named `name` with `slots` slots. `max_records_per_sync`: records applied
    /// per sync at most (a worker far behind catches up over several calls instead of stalling one).
    pub fn new(name: &str, slots: u32, stuck_reads_before_skip: u32, max_records_per_sync: u64) -> Self {
        Self {
            log: SharedLog::new(name, slots, stuck_reads_before_skip),
            deferred: Vec::new(),
            max_records_per_sync: max_records_per_sync.max(1),
        }
    }

    /// Starts reading where the log's oldest record still is (see [`SharedLog::open`]).
    pub fn open(&mut self, store: &dyn SharedStore) -> Result<u64, StoreError> {
        self.log.open(store)
    }

    /// Applies every record logged since the last sync, in log order.
    pub fn sync(&mut self, store: &dyn SharedStore, memory: &mut RoutingMemory) -> Result<SyncOutcome, StoreError> {
        let mut undecodable = 0;
        let read =
            self.log.read_new(store, self.max_records_per_sync, |_, bytes| {
                match RoutingEvent::decode_record(bytes) {
                    Ok(events) => events.iter().for_each(|event| {
                        memory.apply(event);
                    }),
                    Err(_) => undecodable += 1,
                }
            })?;
        Ok(SyncOutcome { read, undecodable })
    }

    /// Keeps events for the next append. Returns true when so many wait that the caller should
    /// flush now.
    pub fn defer(&mut self, events: impl IntoIterator<Item = RoutingEvent>) -> bool {
        self.deferred.extend(events);
        self.deferred.len() >= MAX_DEFERRED_EVENTS
    }

    /// Events waiting for the next append.
    pub fn pending(&self) -> usize {
        self.deferred.len()
    }

    /// Appends `event` now, with every deferred one before it: one record (more only if they do
    /// not fit in one slot).
    pub fn record_now(
        &mut self,
        store: &dyn SharedStore,
        memory: &mut RoutingMemory,
        event: RoutingEvent,
    ) -> FlushOutcome {
        self.deferred.push(event);
        self.flush(store, memory)
    }

    /// Appends every deferred event for every worker and applies them here in log order.
    pub fn flush(&mut self, store: &dyn SharedStore, memory: &mut RoutingMemory) -> FlushOutcome {
        let mut outcome = FlushOutcome::default();
        if self.deferred.is_empty() {
            return outcome;
        }
        let events = std::mem::take(&mut self.deferred);
        let (records, refused) = RoutingEvent::encode_records(&events);
        outcome.refused = refused;
        for record in records {
            match self.log.append(store, &record) {
                Ok(seq) if self.log.advance_past_own(seq) => apply_record(memory, &record),
                Ok(_) => match self.sync(store, memory) {
                    Ok(sync) => {
                        outcome.read.applied += sync.read.applied;
                        outcome.read.lost += sync.read.lost + sync.undecodable;
                    }
                    Err(e) => outcome.read_error = Some(e),
                },
                Err(e) => {
                    apply_record(memory, &record);
                    outcome.failed = Some(e);
                }
            }
            outcome.appended += 1;
        }
        outcome
    }
}

fn apply_record(memory: &mut RoutingMemory, record: &[u8]) {
    if let Ok(events) = RoutingEvent::decode_record(record) {
        for event in &events {
            memory.apply(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use crate::memory::{MAX_EVENT_HASHES, Report};
    use crate::prefix::block_hashes;
    use crate::shared_log::MemoryStore;
    use std::cell::Cell;

    /// A store that counts writes, to check what the request path costs.
    struct Counting<'a> {
        inner: &'a MemoryStore,
        sets: Cell<usize>,
    }

    impl SharedStore for Counting<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.sets.set(self.sets.get() + 1);
            self.inner.set(key, value, cas)
        }
    }

    fn config() -> PluginConfig {
        PluginConfig::from_json(
            format!(r#"{{"endpointPickerConfig":{{"plugins":[{{"type":"prefix-cache-scorer","parameters":{{"maxPrefixBlocksToMatch":{MAX_EVENT_HASHES}}}}}]}}}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    fn worker(config: &PluginConfig, store: &MemoryStore) -> (Replica, RoutingMemory) {
        let mut replica = Replica::new("wis/log", 256, 3, 10_000);
        replica.open(store).unwrap();
        (replica, RoutingMemory::new(config))
    }

    #[test]
    fn two_workers_routing_thousand_block_prompts_end_with_the_same_memory() {
        let config = config();
        let store = MemoryStore::default();
        let (mut ra, mut a) = worker(&config, &store);
        let (mut rb, mut b) = worker(&config, &store);
        let bytes = config.prefix.block_bytes;
        for i in 0..40u32 {
            // 1,000 blocks of prompt; the index hashes at most what an event carries.
            let text = format!("conversation {} ", i % 7).repeat(bytes * 1000 / 16);
            let hashes = block_hashes("m", None, &text, bytes, config.prefix.max_prefix_blocks);
            assert_eq!(hashes.len(), MAX_EVENT_HASHES);
            let endpoint = format!("10.0.0.{}:8000", i % 3);
            let writer = if i % 2 == 0 { &a } else { &b };
            // What the writer believes the pod holds already travels as one anchor hash.
            let held = writer.id_of(&endpoint).map_or(0, |id| writer.prefix.matched_blocks(&hashes, id));
            let routed = RoutingEvent::routed(&endpoint, &hashes, held, 4000);
            let report = RoutingEvent::Reported(Report {
                endpoint: endpoint.clone(),
                model: "m".into(),
                hashes: Vec::new(),
                predicted_blocks: 300,
                prompt_bytes: 64_000,
                prompt_tokens: Some(12_800),
                cached_tokens: Some(3_000),
            });
            let release = RoutingEvent::Released { endpoint, prompt_tokens: 4000 };
            let (replica, memory) = if i % 2 == 0 { (&mut ra, &mut a) } else { (&mut rb, &mut b) };
            replica.record_now(&store, memory, routed);
            replica.defer([report, release]);
            if i % 5 == 0 {
                replica.flush(&store, memory);
            }
        }
        // The tick: each flushes what waits, then each reads what the other appended.
        ra.flush(&store, &mut a);
        rb.flush(&store, &mut b);
        ra.sync(&store, &mut a).unwrap();
        rb.sync(&store, &mut b).unwrap();
        assert!(a.same_state_as(&b), "same events, same order, same memory");
        assert_eq!(a.in_flight_of("10.0.0.0:8000").requests, 0);
        assert!(a.prefix.len() > 3 * 300);
        assert!((a.calibration().bytes_per_token("m") - 5.0).abs() < 1e-9);
    }

    #[test]
    fn a_request_costs_one_append_and_its_later_events_ride_on_the_next() {
        let config = config();
        let inner = MemoryStore::default();
        let store = Counting { inner: &inner, sets: Cell::new(0) };
        let (mut replica, mut memory) = worker(&config, &inner);
        let routed = |i: u32| RoutingEvent::Routed {
            held: 0,
            endpoint: format!("10.0.0.{i}:8000"),
            hashes: vec![u64::from(i)],
            prompt_tokens: 1,
        };
        replica.record_now(&store, &mut memory, routed(1));
        let one_append = store.sets.get();
        assert_eq!(one_append, 2, "claim the head, write the slot");
        replica.defer([RoutingEvent::Released { endpoint: "10.0.0.1:8000".into(), prompt_tokens: 1 }]);
        assert_eq!(store.sets.get(), one_append, "the release waits");
        assert_eq!(memory.in_flight_of("10.0.0.1:8000").requests, 1);
        replica.record_now(&store, &mut memory, routed(2));
        assert_eq!(store.sets.get(), 2 * one_append, "the next request's append carries it");
        assert_eq!(memory.in_flight_of("10.0.0.1:8000").requests, 0);
        assert_eq!(memory.in_flight_of("10.0.0.2:8000").requests, 1);
        assert_eq!(replica.flush(&store, &mut memory), FlushOutcome::default(), "nothing left for the tick");
    }

    #[test]
    fn an_event_that_cannot_be_encoded_is_applied_nowhere() {
        let config = config();
        let store = MemoryStore::default();
        let (mut ra, mut a) = worker(&config, &store);
        let (mut rb, mut b) = worker(&config, &store);
        let too_long = RoutingEvent::Routed {
            held: 0,
            endpoint: "10.0.0.1:8000".into(),
            hashes: vec![7; MAX_EVENT_HASHES + 1],
            prompt_tokens: 1,
        };
        let outcome = ra.record_now(&store, &mut a, too_long);
        assert_eq!(outcome.refused, 1);
        rb.sync(&store, &mut b).unwrap();
        assert_eq!(a.in_flight_of("10.0.0.1:8000").requests, 0);
        assert!(a.same_state_as(&b));
    }

    #[test]
    fn a_worker_that_appended_behind_another_applies_in_log_order() {
        let config = config();
        let store = MemoryStore::default();
        let (mut ra, mut a) = worker(&config, &store);
        let (mut rb, mut b) = worker(&config, &store);
        // b appends while a has not read: a's own record is then not next for it, so it reads back.
        rb.record_now(
            &store,
            &mut b,
            RoutingEvent::Routed { endpoint: "10.0.0.2:8000".into(), held: 0, hashes: vec![1, 2], prompt_tokens: 1 },
        );
        let outcome = ra.record_now(
            &store,
            &mut a,
            RoutingEvent::Routed { endpoint: "10.0.0.1:8000".into(), held: 0, hashes: vec![1, 2], prompt_tokens: 1 },
        );
        assert_eq!(outcome.read.applied, 2, "b's record and its own, in order");
        rb.sync(&store, &mut b).unwrap();
        assert!(a.same_state_as(&b));
    }
}
