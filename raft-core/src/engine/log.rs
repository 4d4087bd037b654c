//! The engine's in-memory mirror of the log: every entry after the last compaction point.

use crate::types::{Entry, LogId, LogIndex, Term};

/// The log as the engine sees it. Storage holds the durable copy; the engine keeps this one so that the
/// protocol needs no I/O. Entries are consecutive, starting at `base.index + 1`.
#[derive(Debug, Clone)]
pub(crate) struct MemLog<C> {
    /// The id of the last entry before `entries` (compacted, or the zero id for a full log).
    base: LogId,
    entries: Vec<Entry<C>>,
}

impl<C: Clone> MemLog<C> {
    pub(crate) fn new(base: LogId, entries: Vec<Entry<C>>) -> Self {
        MemLog { base, entries }
    }

    pub(crate) fn base_index(&self) -> LogIndex {
        self.base.index
    }

    pub(crate) fn last_log_id(&self) -> LogId {
        self.entries.last().map(|e| e.log_id).unwrap_or(self.base)
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.last_log_id().index
    }

    /// The term of the entry at `index`; `None` if the log does not reach `index` or it is compacted
    /// away (the base entry itself is still known).
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        self.get(index).map(|e| e.log_id.term)
    }

    pub(crate) fn get(&self, index: LogIndex) -> Option<&Entry<C>> {
        if index <= self.base.index {
            return None;
        }
        let offset = usize::try_from(index - self.base.index - 1).ok()?;
        self.entries.get(offset)
    }

    /// Entries in `start..=end`, clamped to what the log holds.
    pub(crate) fn slice(&self, start: LogIndex, end: LogIndex) -> &[Entry<C>] {
        let first = self.base.index + 1;
        let start = start.max(first);
        let end = end.min(self.last_index());
        if start > end {
            return &[];
        }
        let lo = (start - first) as usize;
        let hi = (end - first) as usize + 1;
        &self.entries[lo..hi]
    }

    pub(crate) fn push(&mut self, entry: Entry<C>) {
        debug_assert_eq!(entry.log_id.index, self.last_index() + 1);
        self.entries.push(entry);
    }

    /// Removes entries at `from` and after.
    pub(crate) fn truncate(&mut self, from: LogIndex) {
        if from <= self.base.index {
            return;
        }
        let keep = (from - self.base.index - 1) as usize;
        self.entries.truncate(keep);
    }

    /// Drops the entries up to and including `upto` (log compaction); `upto` becomes the base. A no-op
    /// unless `upto` is after the base and within the log.
    pub(crate) fn compact(&mut self, upto: LogIndex) {
        let Some(term) = self.term_at(upto) else {
            return;
        };
        if upto <= self.base.index {
            return;
        }
        self.entries.drain(..(upto - self.base.index) as usize);
        self.base = LogId::new(term, upto);
    }

    /// Replaces the whole log with an empty one based at `base` (a snapshot from the leader).
    pub(crate) fn reset(&mut self, base: LogId) {
        self.entries.clear();
        self.base = base;
    }

    /// The first index of the run of entries with `term` that contains `index`. Terms never
    /// decrease along a log, so this is a binary search.
    pub(crate) fn first_index_of_term_run(&self, index: LogIndex, term: Term) -> LogIndex {
        let upto = self.slice(self.base.index + 1, index);
        let first_of_term = upto.partition_point(|e| e.log_id.term < term);
        self.base.index + 1 + first_of_term as u64
    }

    /// The last index holding an entry of `term`, if any (binary search, as above).
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let after = self.entries.partition_point(|e| e.log_id.term <= term);
        let last = self.entries[..after].last()?;
        (last.log_id.term == term).then_some(last.log_id.index)
    }

    pub(crate) fn entries(&self) -> &[Entry<C>] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn e(term: Term, index: LogIndex) -> Entry<u8> {
        Entry {
            log_id: LogId::new(term, index),
            payload: EntryPayload::Blank.into(),
        }
    }

    #[test]
    fn terms_and_slices() {
        let log = MemLog::new(LogId::default(), vec![e(1, 1), e(1, 2), e(2, 3), e(4, 4)]);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(5), None);
        assert_eq!(log.slice(2, 3).len(), 2);
        assert_eq!(log.slice(0, 10).len(), 4);
        assert_eq!(log.slice(5, 10).len(), 0);
        assert_eq!(log.first_index_of_term_run(2, 1), 1);
        assert_eq!(log.first_index_of_term_run(3, 2), 3);
        assert_eq!(log.first_index_of_term_run(4, 4), 4);
        assert_eq!(log.last_index_of_term(1), Some(2));
        assert_eq!(log.last_index_of_term(3), None);
        assert_eq!(log.last_index_of_term(4), Some(4));
        assert_eq!(log.last_index_of_term(5), None);
    }

    #[test]
    fn truncate_keeps_prefix() {
        let mut log = MemLog::new(LogId::default(), vec![e(1, 1), e(1, 2), e(2, 3)]);
        log.truncate(2);
        assert_eq!(log.last_log_id(), LogId::new(1, 1));
        log.truncate(0);
        assert_eq!(log.last_log_id(), LogId::new(1, 1));
    }

    #[test]
    fn compact_moves_the_base_and_keeps_the_rest() {
        let mut log = MemLog::new(LogId::default(), vec![e(1, 1), e(1, 2), e(2, 3), e(2, 4)]);
        log.compact(2);
        assert_eq!(log.base_index(), 2);
        assert_eq!(log.term_at(2), Some(1));
        assert_eq!(log.get(2).map(|x| x.log_id), None);
        assert_eq!(log.get(3).map(|x| x.log_id), Some(LogId::new(2, 3)));
        assert_eq!(log.entries().len(), 2);
        // At or below the base, or past the end: nothing changes.
        log.compact(1);
        log.compact(9);
        assert_eq!((log.base_index(), log.entries().len()), (2, 2));
        log.compact(4);
        assert_eq!(
            (log.last_log_id(), log.entries().len()),
            (LogId::new(2, 4), 0)
        );
        log.reset(LogId::new(5, 10));
        assert_eq!(
            (log.last_log_id(), log.term_at(10)),
            (LogId::new(5, 10), Some(5))
        );
    }

    #[test]
    fn respects_base() {
        let log = MemLog::new(LogId::new(3, 10), vec![e(3, 11), e(4, 12)]);
        assert_eq!(log.term_at(10), Some(3));
        assert_eq!(log.term_at(9), None);
        assert_eq!(log.get(11).map(|x| x.log_id), Some(LogId::new(3, 11)));
        assert_eq!(log.slice(1, 11).len(), 1);
    }
}
