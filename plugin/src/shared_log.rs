//! A bounded, append-only ring log over proxy-wasm shared data: how every Envoy worker's VM ends
//! up with the same routing memory.
//!
//! Envoy runs one VM per worker thread, and each VM has its own linear memory. The only state they
//! share is the host's key/value store ("shared data"), which has get, set, and compare-and-swap on
//! a per-key version (`cas`), but no delete and no iteration. So the memory is replicated instead
//! of shared: a VM that routes a request appends a small event to this log, and every VM (itself
//! included) applies the log's events in log order to its local copy. Same events, same order,
//! same memory.
//!
//! Layout, for a log named `P` with `S` slots (a fixed key space, so memory cannot grow):
//! - `P/head`: `[next u64 LE]`, the next sequence number to claim, followed by the latest record
//!   `[next - 1 u64 LE][event bytes]` (absent before the first append).
//! - `P/<i>` for `i` in `0..S`: `[seq u64 LE][event bytes]`, holding record `seq` with `seq % S == i`.
//!
//! Append: claim `head` by writing `head + 1` and the new record with the `cas` this VM last read
//! the head with (its sync before the decision read it, so the usual append reads nothing); a stale
//! `cas` means another worker appended since: read the head again and retry. Then write the slot,
//! for readers more than one record behind. A reader one record behind (the common case: one other
//! worker appended since this one's last request) finds that record in the head it reads anyway, so
//! a request costs one shared-data read and two writes. The claim and the slot write happen in the
//! same wasm callback, so the window in which a reader sees a claimed but unwritten slot is the
//! time between two host calls. A reader that meets such a slot (its stored seq is older than
//! expected) stops there and retries on its next read; if the slot is still unwritten after
//! `stuck_reads_before_skip` attempts, the writer is presumed gone (its VM crashed between the two
//! calls) and the record is skipped and counted as lost.
//!
//! A reader more than `S` records behind has lost the oldest ones (they were overwritten); it jumps
//! to the oldest record still present and counts the loss. A lost routing event costs one
//! approximate prefix entry or one in-flight count, never a wrong route: the scheduler only ever
//! chooses among pool members.

use std::fmt;

/// The host's key/value store as the log needs it. In the filter this is proxy-wasm shared data;
/// in tests an in-memory map.
pub trait SharedStore {
    /// The value and its version (`cas`), or `None` when the key was never written.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes the value. With `cas: Some(v)` the write succeeds only if the key's version is still
    /// `v`, else `StoreError::CasMismatch`. With `None` it always succeeds.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// Why a shared-data operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Another VM wrote the key since we read it.
    CasMismatch,
    /// The host refused the call (the text says which call and the status).
    Host(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CasMismatch => f.write_str("shared data changed concurrently (cas mismatch)"),
            Self::Host(why) => write!(f, "shared data call failed: {why}"),
        }
    }
}

/// Why an append did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// Other workers kept winning the claim; the caller applies the event locally instead.
    Contended {
        attempts: u32,
    },
    Store(StoreError),
    /// The event is larger than [`MAX_EVENT_BYTES`].
    TooLarge {
        bytes: usize,
    },
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Contended { attempts } => write!(f, "routing log append lost the claim {attempts} times in a row"),
            Self::Store(e) => write!(f, "routing log append failed: {e}"),
            Self::TooLarge { bytes } => {
                write!(f, "routing event of {bytes} bytes exceeds the {MAX_EVENT_BYTES}-byte slot limit")
            }
        }
    }
}

/// Largest event a slot holds: 256 prefix-block hashes of 8 bytes plus an address and counters.
pub const MAX_EVENT_BYTES: usize = 4096;

/// Claim attempts before an append gives up; contention beyond this means many workers appending
/// at once, and applying locally is better than spinning on the data path.
const MAX_CLAIM_ATTEMPTS: u32 = 16;

/// Counts a reader reports, for stats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    pub applied: u64,
    /// Records overwritten before this reader got to them, or skipped as never written.
    pub lost: u64,
    /// The read stopped early: `max_records` reached or a claimed slot not yet written.
    pub more_pending: bool,
}

/// One VM's handle on the log: the key names and this VM's read cursor.
#[derive(Debug, Clone)]
pub struct SharedLog {
    head_key: String,
    slot_prefix: String,
    slots: u64,
    cursor: u64,
    stuck_at: Option<(u64, u32)>,
    stuck_reads_before_skip: u32,
    /// The head as this VM last read it, `(next, cas)`: the next append claims with it instead of
    /// reading the head again (a stale one fails the compare-and-swap, which is then a re-read).
    claim_hint: Option<(u64, u32)>,
}

impl SharedLog {
    /// A log named `name` with `slots` slots (at least 1). `stuck_reads_before_skip`: how many reads
    /// may find a claimed slot unwritten before it is skipped as lost.
    pub fn new(name: &str, slots: u32, stuck_reads_before_skip: u32) -> Self {
        Self {
            head_key: format!("{name}/head"),
            slot_prefix: format!("{name}/"),
            slots: u64::from(slots.max(1)),
            cursor: 0,
            stuck_at: None,
            stuck_reads_before_skip: stuck_reads_before_skip.max(1),
            claim_hint: None,
        }
    }

    /// Creates the head key if no VM has yet, and starts this reader at the current head: a VM that
    /// starts late replays nothing older than the log's capacity anyway, and starting at the head
    /// keeps start-up cheap. Returns the head.
    pub fn open(&mut self, store: &dyn SharedStore) -> Result<u64, StoreError> {
        let head = match store.get(&self.head_key)? {
            Some((bytes, cas)) => {
                let head = decode_u64(&bytes).unwrap_or(0);
                self.claim_hint = Some((head, cas));
                head
            }
            None => {
                // Two VMs may race here at start-up; both write 0, which is the same value.
                store.set(&self.head_key, &0u64.to_le_bytes(), None)?;
                0
            }
        };
        // Replay what the ring still holds, so a worker that starts after traffic began shares the
        // memory the others built.
        self.cursor = head.saturating_sub(self.slots);
        Ok(head)
    }

    /// Appends one event. Returns its sequence number.
    ///
    /// Once the claim succeeded the record is in the log (in the head), so a failing slot write
    /// does not fail the append: readers one record behind still get it from the head, and a
    /// reader further behind skips the unwritten slot and counts it lost.
    pub fn append(&mut self, store: &dyn SharedStore, event: &[u8]) -> Result<u64, AppendError> {
        if event.len() > MAX_EVENT_BYTES {
            return Err(AppendError::TooLarge { bytes: event.len() });
        }
        let mut hint = self.claim_hint.take();
        let mut value = Vec::with_capacity(16 + event.len());
        for _ in 0..MAX_CLAIM_ATTEMPTS {
            let (head, cas) = match hint.take() {
                Some((head, cas)) => (head, Some(cas)),
                None => match store.get(&self.head_key).map_err(AppendError::Store)? {
                    Some((bytes, cas)) => (decode_u64(&bytes).unwrap_or(0), Some(cas)),
                    None => (0, None),
                },
            };
            value.clear();
            value.extend_from_slice(&(head + 1).to_le_bytes());
            value.extend_from_slice(&head.to_le_bytes());
            value.extend_from_slice(event);
            match store.set(&self.head_key, &value, cas) {
                Ok(()) => {}
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(AppendError::Store(e)),
            }
            let _ = store.set(&self.slot_key(head), &value[8..], None);
            return Ok(head);
        }
        Err(AppendError::Contended { attempts: MAX_CLAIM_ATTEMPTS })
    }

    /// Applies every record this VM has not seen yet, in log order, at most `max_records` of them.
    pub fn read_new(
        &mut self,
        store: &dyn SharedStore,
        max_records: u64,
        mut apply: impl FnMut(u64, &[u8]),
    ) -> Result<ReadOutcome, StoreError> {
        let mut outcome = ReadOutcome::default();
        let Some((head_value, cas)) = store.get(&self.head_key)? else { return Ok(outcome) };
        let head = decode_u64(&head_value).unwrap_or(0);
        self.claim_hint = Some((head, cas));
        // The latest record, carried by the head (see the module docs).
        let latest = head_value
            .get(8..)
            .and_then(|record| decode_u64(record).filter(|&seq| seq + 1 == head).map(|_| &record[8..]));
        if head < self.cursor {
            // The store was reset under us (a host that restarted its shared data); start over.
            self.cursor = head;
        }
        let oldest_present = head.saturating_sub(self.slots);
        if self.cursor < oldest_present {
            outcome.lost += oldest_present - self.cursor;
            self.cursor = oldest_present;
        }
        while self.cursor < head {
            if outcome.applied >= max_records {
                outcome.more_pending = true;
                break;
            }
            let seq = self.cursor;
            if seq + 1 == head
                && let Some(event) = latest
            {
                apply(seq, event);
                outcome.applied += 1;
                self.cursor += 1;
                self.stuck_at = None;
                continue;
            }
            let slot = store.get(&self.slot_key(seq))?;
            let stored = slot.as_ref().and_then(|(bytes, _)| decode_u64(bytes).map(|s| (s, &bytes[8..])));
            match stored {
                Some((stored_seq, event)) if stored_seq == seq => {
                    apply(seq, event);
                    outcome.applied += 1;
                    self.cursor += 1;
                    self.stuck_at = None;
                }
                Some((stored_seq, _)) if stored_seq > seq => {
                    // Overwritten by a newer lap while we read: lost.
                    outcome.lost += 1;
                    self.cursor += 1;
                    self.stuck_at = None;
                }
                _ => {
                    // Claimed but not yet written (or never written: writer gone).
                    let tries = match self.stuck_at {
                        Some((at, n)) if at == seq => n + 1,
                        _ => 1,
                    };
                    if tries >= self.stuck_reads_before_skip {
                        outcome.lost += 1;
                        self.cursor += 1;
                        self.stuck_at = None;
                        continue;
                    }
                    self.stuck_at = Some((seq, tries));
                    outcome.more_pending = true;
                    break;
                }
            }
        }
        Ok(outcome)
    }

    /// After appending record `seq`: if it is the next record this reader would apply (nobody else
    /// appended since this reader caught up), marks it applied and returns true, so the caller
    /// applies its own event without reading it back. Log order is unchanged.
    pub fn advance_past_own(&mut self, seq: u64) -> bool {
        if self.cursor == seq {
            self.cursor += 1;
            self.stuck_at = None;
            true
        } else {
            false
        }
    }

    /// This reader's position: the sequence number of the next record it will apply.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Every key the log can ever use: its whole, fixed footprint in shared data.
    pub fn key_count(&self) -> u64 {
        self.slots + 1
    }

    fn slot_key(&self, seq: u64) -> String {
        format!("{}{}", self.slot_prefix, seq % self.slots)
    }
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

/// An in-memory [`SharedStore`] with Envoy's semantics, for tests of the core and the decision view.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: std::cell::RefCell<hashbrown::HashMap<String, (Vec<u8>, u32)>>,
    next_cas: std::cell::Cell<u32>,
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.entries.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut entries = self.entries.borrow_mut();
        if let (Some(expected), Some((_, current))) = (cas, entries.get(key))
            && expected != *current
        {
            return Err(StoreError::CasMismatch);
        }
        let version = self.next_cas.get().wrapping_add(1).max(1);
        self.next_cas.set(version);
        entries.insert(key.to_string(), (value.to_vec(), version));
        Ok(())
    }
}

impl MemoryStore {
    /// Total bytes of values held, for memory-bound checks.
    pub fn value_bytes(&self) -> usize {
        self.entries.borrow().values().map(|(v, _)| v.len()).sum()
    }

    pub fn key_count(&self) -> usize {
        self.entries.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two VMs' handles on the log `name`, both opened.
    fn two_opened(store: &dyn SharedStore, name: &str, slots: u32) -> (SharedLog, SharedLog) {
        let mut a = SharedLog::new(name, slots, 3);
        let mut b = SharedLog::new(name, slots, 3);
        a.open(store).unwrap();
        b.open(store).unwrap();
        (a, b)
    }

    fn collect(log: &mut SharedLog, store: &dyn SharedStore) -> (Vec<Vec<u8>>, ReadOutcome) {
        let mut seen = Vec::new();
        let outcome = log.read_new(store, u64::MAX, |_, e| seen.push(e.to_vec())).unwrap();
        (seen, outcome)
    }

    #[test]
    fn two_workers_see_every_event_in_the_same_order() {
        let store = MemoryStore::default();
        let (mut a, mut b) = two_opened(&store, "wis/log", 64);
        a.append(&store, b"a1").unwrap();
        b.append(&store, b"b1").unwrap();
        a.append(&store, b"a2").unwrap();
        let (seen_a, _) = collect(&mut a, &store);
        let (seen_b, _) = collect(&mut b, &store);
        assert_eq!(seen_a, vec![b"a1".to_vec(), b"b1".to_vec(), b"a2".to_vec()]);
        assert_eq!(seen_a, seen_b);
        // Nothing new: nothing applied twice.
        assert_eq!(collect(&mut a, &store).0, Vec::<Vec<u8>>::new());
    }

    #[test]
    fn an_own_append_is_applied_directly_only_when_it_is_next_in_order() {
        let store = MemoryStore::default();
        let (mut a, mut b) = two_opened(&store, "l", 8);
        let seq = a.append(&store, b"a1").unwrap();
        assert!(a.advance_past_own(seq), "nothing in between: apply directly");
        let other = b.append(&store, b"b1").unwrap();
        let mine = a.append(&store, b"a2").unwrap();
        assert!(!a.advance_past_own(mine), "b1 comes first: read the log in order");
        assert_eq!(collect(&mut a, &store).0, vec![b"b1".to_vec(), b"a2".to_vec()]);
        assert!(!b.advance_past_own(other), "b has not read a1 yet");
        assert_eq!(collect(&mut b, &store).0, vec![b"a1".to_vec(), b"b1".to_vec(), b"a2".to_vec()]);
    }

    #[test]
    fn a_late_worker_replays_what_the_ring_still_holds() {
        let store = MemoryStore::default();
        let mut a = SharedLog::new("l", 4, 3);
        a.open(&store).unwrap();
        for i in 0..6u8 {
            a.append(&store, &[i]).unwrap();
        }
        let mut late = SharedLog::new("l", 4, 3);
        late.open(&store).unwrap();
        let (seen, _) = collect(&mut late, &store);
        assert_eq!(seen, vec![vec![2], vec![3], vec![4], vec![5]]);
    }

    #[test]
    fn a_reader_that_falls_a_lap_behind_counts_the_loss_and_continues() {
        let store = MemoryStore::default();
        let (mut writer, mut reader) = two_opened(&store, "l", 4);
        for i in 0..10u8 {
            writer.append(&store, &[i]).unwrap();
        }
        let (seen, outcome) = collect(&mut reader, &store);
        assert_eq!(seen, vec![vec![6], vec![7], vec![8], vec![9]]);
        assert_eq!(outcome.lost, 6);
        assert_eq!(reader.cursor(), 10);
    }

    #[test]
    fn a_claimed_but_unwritten_slot_blocks_then_is_skipped() {
        let store = MemoryStore::default();
        let mut reader = SharedLog::new("l", 8, 3);
        reader.open(&store).unwrap();
        // A writer that claimed seq 0 and died before writing its slot.
        store.set("l/head", &1u64.to_le_bytes(), None).unwrap();
        let mut writer = SharedLog::new("l", 8, 3);
        writer.append(&store, b"after").unwrap();
        let (seen, outcome) = collect(&mut reader, &store);
        assert!(seen.is_empty());
        assert!(outcome.more_pending);
        collect(&mut reader, &store);
        let (seen, outcome) = collect(&mut reader, &store);
        assert_eq!(seen, vec![b"after".to_vec()]);
        assert_eq!(outcome.lost, 1);
    }

    #[test]
    fn a_read_is_bounded_and_resumes_where_it_stopped() {
        let store = MemoryStore::default();
        let mut log = SharedLog::new("l", 16, 3);
        log.open(&store).unwrap();
        for i in 0..5u8 {
            log.append(&store, &[i]).unwrap();
        }
        let mut seen = Vec::new();
        let outcome = log.read_new(&store, 2, |_, e| seen.push(e[0])).unwrap();
        assert!(outcome.more_pending);
        log.read_new(&store, 10, |_, e| seen.push(e[0])).unwrap();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    }

    /// A store whose first `n` claims lose to a competing writer, like two workers racing.
    struct RacingStore {
        inner: MemoryStore,
        lose_next: std::cell::Cell<u32>,
    }

    impl SharedStore for RacingStore {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            if key.ends_with("/head") && cas.is_some() && self.lose_next.get() > 0 {
                self.lose_next.set(self.lose_next.get() - 1);
                // The competitor claims the head and writes its slot first.
                let mut competitor = SharedLog::new("l", 8, 3);
                competitor.append(&self.inner, b"competitor").map_err(|_| StoreError::Host("competitor".into()))?;
                return Err(StoreError::CasMismatch);
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_lost_claim_retries_without_overwriting_the_winner() {
        let store = RacingStore { inner: MemoryStore::default(), lose_next: std::cell::Cell::new(2) };
        let mut log = SharedLog::new("l", 8, 3);
        log.open(&store).unwrap();
        assert_eq!(log.append(&store, b"mine").unwrap(), 2);
        let (seen, _) = collect(&mut log, &store);
        assert_eq!(seen, vec![b"competitor".to_vec(), b"competitor".to_vec(), b"mine".to_vec()]);
    }

    #[test]
    fn endless_contention_gives_up_instead_of_spinning() {
        let store = RacingStore { inner: MemoryStore::default(), lose_next: std::cell::Cell::new(u32::MAX) };
        let mut log = SharedLog::new("l", 8, 3);
        log.open(&store).unwrap();
        assert_eq!(log.append(&store, b"mine"), Err(AppendError::Contended { attempts: MAX_CLAIM_ATTEMPTS }));
    }

    /// Counts calls, and can refuse every slot write (a host failing the call after the claim).
    #[derive(Default)]
    struct CountingStore {
        inner: MemoryStore,
        gets: std::cell::Cell<u32>,
        sets: std::cell::Cell<u32>,
        refuse_slots: std::cell::Cell<bool>,
    }

    impl SharedStore for CountingStore {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.gets.set(self.gets.get() + 1);
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.sets.set(self.sets.get() + 1);
            if self.refuse_slots.get() && !key.ends_with("/head") {
                return Err(StoreError::Host("refused".into()));
            }
            self.inner.set(key, value, cas)
        }
    }

    impl CountingStore {
        fn calls(&self) -> (u32, u32) {
            let calls = (self.gets.get(), self.sets.get());
            self.gets.set(0);
            self.sets.set(0);
            calls
        }
    }

    #[test]
    fn a_request_costs_one_read_and_two_writes_when_one_other_worker_appended() {
        let store = CountingStore::default();
        let (mut a, mut b) = two_opened(&store, "l", 8);
        for i in 0..5u8 {
            let theirs = b.append(&store, &[b'b', i]).unwrap();
            assert!(b.advance_past_own(theirs));
            store.calls();
            // a's request: sync (b's record is in the head), then append with the sync's cas.
            let (seen, _) = collect(&mut a, &store);
            assert_eq!(seen, vec![vec![b'b', i]]);
            let seq = a.append(&store, &[b'a', i]).unwrap();
            assert!(a.advance_past_own(seq));
            assert_eq!(store.calls(), (1, 2), "round {i}: (reads, writes)");
            // b reads a's record from the head as well, and b's next append claims with that read.
            assert_eq!(collect(&mut b, &store).0, vec![vec![b'a', i]]);
        }
    }

    #[test]
    fn a_claim_hint_gone_stale_retries_and_loses_nothing() {
        let store = CountingStore::default();
        let (mut a, mut b) = two_opened(&store, "l", 8);
        collect(&mut a, &store);
        // b appends twice after a read the head: a's hint is stale.
        b.append(&store, b"b1").unwrap();
        b.append(&store, b"b2").unwrap();
        let mine = a.append(&store, b"a1").unwrap();
        assert_eq!(mine, 2, "claimed after b's records, not over them");
        assert!(!a.advance_past_own(mine));
        assert_eq!(collect(&mut a, &store).0, vec![b"b1".to_vec(), b"b2".to_vec(), b"a1".to_vec()]);
        assert_eq!(collect(&mut b, &store).0, vec![b"b1".to_vec(), b"b2".to_vec(), b"a1".to_vec()]);
    }

    #[test]
    fn a_record_whose_slot_write_failed_still_reaches_a_reader_one_behind() {
        let store = CountingStore::default();
        let mut writer = SharedLog::new("l", 8, 3);
        let mut near = SharedLog::new("l", 8, 3);
        let mut far = SharedLog::new("l", 8, 3);
        for log in [&mut writer, &mut near, &mut far] {
            log.open(&store).unwrap();
        }
        writer.append(&store, b"w0").unwrap();
        collect(&mut near, &store);
        store.refuse_slots.set(true);
        assert_eq!(writer.append(&store, b"w1"), Ok(1), "the claim succeeded: the record is logged");
        store.refuse_slots.set(false);
        assert_eq!(collect(&mut near, &store).0, vec![b"w1".to_vec()], "from the head");
        writer.append(&store, b"w2").unwrap();
        // far is three behind: w0 from its slot, w1's slot was never written, w2 from the head.
        let mut seen = Vec::new();
        let mut lost = 0;
        for _ in 0..3 {
            let (events, outcome) = collect(&mut far, &store);
            seen.extend(events);
            lost += outcome.lost;
        }
        assert_eq!(seen, vec![b"w0".to_vec(), b"w2".to_vec()]);
        assert_eq!(lost, 1, "the unwritten slot is counted lost");
    }

    #[test]
    fn footprint_is_fixed_by_the_slot_count() {
        let store = MemoryStore::default();
        let mut log = SharedLog::new("l", 32, 3);
        log.open(&store).unwrap();
        for i in 0..10_000u32 {
            log.append(&store, &i.to_le_bytes()).unwrap();
        }
        assert_eq!(store.key_count() as u64, log.key_count());
        // The head: next seq and the latest record; each slot: seq and event.
        assert_eq!(store.value_bytes(), 8 + (8 + 4) + 32 * (8 + 4));
    }

    #[test]
    fn oversized_events_are_refused() {
        let store = MemoryStore::default();
        let mut log = SharedLog::new("l", 8, 3);
        assert_eq!(
            log.append(&store, &vec![0; MAX_EVENT_BYTES + 1]),
            Err(AppendError::TooLarge { bytes: MAX_EVENT_BYTES + 1 })
        );
    }
}
