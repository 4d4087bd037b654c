//! [`EntryCache`]: the encoding of recently sent log entries, shared by every peer of a
//! [`TcpNetwork`](crate::TcpNetwork), so that an entry replicated to several followers (or sent
//! again) is encoded once.
//!
//! An entry is identified by its [`LogId`]: a leader creates at most one entry per (term, index)
//! and never changes it (Raft's Log Matching property), so two entries with the same id carry the
//! same payload, even across a truncation (the entries replacing the truncated ones have another
//! term, hence another key). A node sends entries only from its own log, so the cache never
//! holds an encoding that differs from the entry it is asked for.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use raft_core::{Entry, LogId};
use serde::Serialize;

/// The most entries the cache of a [`TcpNetwork`](crate::TcpNetwork) holds (twice raft-core's
/// default batch of proposals).
pub(crate) const MAX_CACHED_ENTRIES: usize = 8192;

/// The most bytes of encoded entries the cache of a [`TcpNetwork`](crate::TcpNetwork) counts.
pub(crate) const MAX_CACHED_BYTES: usize = 8 * 1024 * 1024;

/// Encoded entries by log id, bounded in entries and in bytes, the oldest insertion evicted first.
///
/// The entries encoded by one call share one buffer and the cache holds slices of it, so the
/// memory kept alive can exceed the bytes counted by the rest of a buffer whose other entries
/// were evicted: at most one batch (raft-core's `max_append_bytes`) beyond the byte bound.
#[derive(Debug)]
pub(crate) struct EntryCache {
    max_entries: usize,
    max_bytes: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    encoded: HashMap<LogId, Bytes>,
    /// Keys in insertion order, for eviction; each key of `encoded` appears once.
    order: VecDeque<LogId>,
    /// The sum of the lengths in `encoded`.
    bytes: usize,
}

impl EntryCache {
    /// An empty cache of at most `max_entries` entries and `max_bytes` bytes of encodings.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        EntryCache {
            max_entries,
            max_bytes,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a holder panicked between two consistent states of the map.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Each entry of `entries` encoded as `rmp-serde` writes it with named fields (so also as an
    /// element of an AppendEntries request), in order: taken from the cache where it holds the
    /// entry's id, encoded (and cached, within the bounds) otherwise.
    ///
    /// # Errors
    /// The error of the first entry whose `Serialize` fails; nothing is cached then.
    pub fn encode<C: Serialize>(&self, entries: &[Entry<C>]) -> Result<Vec<Bytes>, String> {
        let mut out: Vec<Option<Bytes>> = {
            let state = self.lock();
            entries
                .iter()
                .map(|e| state.encoded.get(&e.log_id).cloned())
                .collect()
        };
        let missing = out.iter().filter(|b| b.is_none()).count();
        if missing == 0 {
            return Ok(out.into_iter().flatten().collect());
        }
        // The missing entries go into one buffer, each a slice of it.
        let mut buf = Vec::new();
        let mut ends = Vec::with_capacity(missing);
        for (e, slot) in entries.iter().zip(&out) {
            if slot.is_none() {
                rmp_serde::encode::write_named(&mut buf, e).map_err(|err| err.to_string())?;
                ends.push(buf.len());
            }
        }
        let buf = Bytes::from(buf);
        let mut start = 0;
        let mut fresh = ends.into_iter().map(|end| {
            let slice = buf.slice(start..end);
            start = end;
            slice
        });
        let mut state = self.lock();
        for (e, slot) in entries.iter().zip(out.iter_mut()) {
            if slot.is_none() {
                let bytes = fresh.next().expect("one encoding per missing entry");
                self.insert(&mut state, e.log_id, bytes.clone());
                *slot = Some(bytes);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Caches `bytes` as the encoding of `id` (unless it alone is over a quarter of the byte
    /// bound), evicting the oldest entries until both bounds hold.
    fn insert(&self, state: &mut State, id: LogId, bytes: Bytes) {
        if bytes.len() > self.max_bytes / 4 || self.max_entries == 0 {
            return;
        }
        if state.encoded.contains_key(&id) {
            return;
        }
        while state.encoded.len() >= self.max_entries
            || state.bytes + bytes.len() > self.max_bytes
        {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            if let Some(gone) = state.encoded.remove(&oldest) {
                state.bytes -= gone.len();
            }
        }
        state.bytes += bytes.len();
        state.order.push_back(id);
        state.encoded.insert(id, bytes);
    }

    /// How many entries and bytes the cache holds.
    #[cfg(test)]
    pub fn len_and_bytes(&self) -> (usize, usize) {
        let state = self.lock();
        (state.encoded.len(), state.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::EntryPayload;

    fn entry(term: u64, index: u64, command: &str) -> Entry<String> {
        Entry::new(
            LogId::new(term, index),
            EntryPayload::Command(command.to_string()),
        )
    }

    fn plain(e: &Entry<String>) -> Vec<u8> {
        rmp_serde::to_vec_named(e).expect("encode")
    }

    #[test]
    fn encodes_as_rmp_serde_and_reuses_the_encoding() {
        let cache = EntryCache::new(100, 1 << 20);
        let entries = vec![entry(1, 1, "a"), entry(1, 2, "bb"), entry(1, 3, "ccc")];
        let first = cache.encode(&entries).expect("encode");
        let again = cache.encode(&entries[1..]).expect("encode");
        for (e, b) in entries.iter().zip(&first) {
            assert_eq!(&b[..], &plain(e)[..]);
        }
        assert_eq!(&again[0][..], &first[1][..]);
        // The same bytes, not a new encoding: a cache hit shares the buffer.
        assert_eq!(again[0].as_ptr(), first[1].as_ptr());
        assert_eq!(cache.len_and_bytes().0, 3);
    }

    #[test]
    fn a_truncated_and_replaced_entry_is_encoded_anew() {
        let cache = EntryCache::new(100, 1 << 20);
        let old = entry(1, 5, "old");
        cache.encode(std::slice::from_ref(&old)).expect("encode");
        // A new leader of term 2 replaced index 5: another key, so never the old bytes.
        let new = entry(2, 5, "new");
        let got = cache.encode(std::slice::from_ref(&new)).expect("encode");
        assert_eq!(&got[0][..], &plain(&new)[..]);
        let old_again = cache.encode(std::slice::from_ref(&old)).expect("encode");
        assert_eq!(&old_again[0][..], &plain(&old)[..]);
    }

    #[test]
    fn bounded_in_entries_evicting_the_oldest() {
        let cache = EntryCache::new(3, 1 << 20);
        let entries: Vec<_> = (1..=5).map(|i| entry(1, i, "x")).collect();
        cache.encode(&entries).expect("encode");
        let (n, bytes) = cache.len_and_bytes();
        assert_eq!(n, 3);
        assert_eq!(bytes, 3 * plain(&entries[0]).len());
        let state = cache.lock();
        let kept: Vec<_> = state.order.iter().map(|id| id.index).collect();
        assert_eq!(kept, vec![3, 4, 5]);
    }

    #[test]
    fn bounded_in_bytes() {
        let one = plain(&entry(1, 1, &"v".repeat(100))).len();
        let cache = EntryCache::new(1000, 4 * one + one / 2);
        let entries: Vec<_> = (1..=10).map(|i| entry(1, i, &"v".repeat(100))).collect();
        let got = cache.encode(&entries).expect("encode");
        assert_eq!(got.len(), 10);
        let (n, bytes) = cache.len_and_bytes();
        assert_eq!(n, 4);
        assert!(bytes <= 4 * one + one / 2);
        // An entry over a quarter of the bound is encoded but not kept.
        let big = entry(1, 11, &"v".repeat(4 * one));
        let got = cache.encode(std::slice::from_ref(&big)).expect("encode");
        assert_eq!(&got[0][..], &plain(&big)[..]);
        assert_eq!(cache.len_and_bytes().0, 4);
    }
}
