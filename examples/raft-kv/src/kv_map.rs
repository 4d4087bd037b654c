//! [`KvTable`]: the table as a hash map, the read-only views of it a snapshot takes in O(1)
//! ([`KvView`]), and the size of its snapshot records kept up to date.
//!
//! # How a view is O(1) over a hash map
//!
//! The table is a *base* map behind an `Arc` and an *overlay* of the changes made while the base
//! was shared:
//!
//! * With no view alive (the usual case) the base is not shared, the overlay is empty, and a write
//!   is one lookup and one insert or replace in a `std` hash map.
//! * [`KvTable::view`] hands out a clone of the base's `Arc`, and a copy of the overlay if it is not
//!   empty (changes an older view kept out of the base, or not folded back yet; empty in the usual
//!   case).
//! * While a view holds the base, a write goes to the overlay instead (a removal as `None`), and a
//!   read looks in the overlay first. The view sees the table as it was when taken.
//! * Once the last view is dropped, [`KvTable::fold_some`] moves the overlay back into the base a
//!   bounded number of entries at a time (the state machine calls it once per applied batch, for
//!   as many entries as the batch had, at least [`FOLD_MIN_PER_BATCH`]), and
//!   writes go to the base again, taking their key out of the overlay. Folding costs about what
//!   the writes made during the snapshot cost; done in one go at 300 k entries into a 1 M-key map
//!   it took 285 ms on the development VM, a pause of the apply task, hence the bound.
//!
//! A view's records are sorted by key when the snapshot is serialized ([`KvView::sorted`]), so two
//! replicas with the same contents write the same bytes whatever their maps' iteration order.
//!
//! Chosen by measurement against the persistent B-tree (`imbl::OrdMap`) it replaces, whose clone
//! is O(1) too (`BENCHMARKS.md`, "The table as a hash map with an overlay"): `loadgen kv 256` uses
//! 17-26% less CPU per write, `kv_mem_1m` (a million keys) writes about twice as fast with
//! snapshots and without; in `filetcp 256` the table is a small share and the gain is within the
//! noise. `imbl::HashMap` had been tried before and lost with snapshots on: its writes during a
//! snapshot copy 32-entry trie nodes.

use std::collections::HashMap;
use std::sync::Arc;

/// Keys and their values. `std`'s hasher is keyed at random per process, so keys chosen by clients
/// cannot be made to collide.
pub(crate) type KvMap = HashMap<String, String>;

/// The changes made while a view shared the base: the key's new value, or `None` if it was removed.
type Overlay = HashMap<String, Option<String>>;

/// What one record of a binary snapshot adds to the key's and value's bytes: their two `u32`
/// lengths.
pub(crate) const RECORD_OVERHEAD: u64 = 8;

/// A map left with fewer than one key per this many slots after removals is shrunk (when not
/// shared), so a table that was once large does not keep its peak memory.
const SHRINK_BELOW_ONE_IN: usize = 4;

/// Maps smaller than this many slots are never shrunk: not worth a rehash.
const SHRINK_MIN_CAPACITY: usize = 1024;

/// The fewest overlay entries the state machine folds back into the base per applied batch; it
/// folds as many as the batch had entries if that is more. So folding at most about doubles what
/// a batch costs to apply (an insert into a large map is a few cache misses: 1-6 ms per 1,024
/// entries in `kv_mem_1m` on the development VM), and an overlay of 100 k entries is gone after
/// about 100 batches of 1,024 writes.
pub(crate) const FOLD_MIN_PER_BATCH: usize = 64;

/// The table, and the size its records take in a binary snapshot (kept up to date on every
/// change, so a snapshot reserves its buffer without a pass over the table to size it).
#[derive(Debug, Default)]
pub(crate) struct KvTable {
    base: Arc<KvMap>,
    overlay: Overlay,
    len: usize,
    records_len: u64,
}

/// A read-only view of a [`KvTable`] as it was when [`KvTable::view`] took it, unaffected by later
/// changes to the table. Taking one is O(1) unless the overlay is not empty (an older view still
/// alive, or an overlay not folded back yet): then it copies the overlay.
#[derive(Debug)]
pub(crate) struct KvView {
    base: Arc<KvMap>,
    overlay: Arc<Overlay>,
    len: usize,
    records_len: u64,
}

fn record_len(key: &str, value: &str) -> u64 {
    RECORD_OVERHEAD + key.len() as u64 + value.len() as u64
}

/// The value of `key` in `base` changed by `overlay`.
fn lookup<'a>(base: &'a KvMap, overlay: &'a Overlay, key: &str) -> Option<&'a String> {
    if !overlay.is_empty() {
        if let Some(changed) = overlay.get(key) {
            return changed.as_ref();
        }
    }
    base.get(key)
}

/// Every record of `base` changed by `overlay`, in no particular order.
fn records<'a>(base: &'a KvMap, overlay: &'a Overlay) -> impl Iterator<Item = (&'a str, &'a str)> {
    base.iter()
        .filter(|(k, _)| !overlay.contains_key(k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(
            overlay
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_deref()?))),
        )
}

/// Every record of `base` changed by `overlay` (`len` of them), sorted by key.
fn sorted<'a>(base: &'a KvMap, overlay: &'a Overlay, len: usize) -> Vec<(&'a str, &'a str)> {
    let mut sorted = Vec::with_capacity(len);
    sorted.extend(records(base, overlay));
    // Keys are unique, so an unstable sort gives one order.
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    sorted
}

/// Takes `key` out of an overlay that is being folded back: its current value (`Some(None)`: it
/// was removed), or `None` if the overlay does not have it and the base's value is current.
fn take_unfolded(overlay: &mut Overlay, key: &str) -> Option<Option<String>> {
    if overlay.is_empty() {
        None
    } else {
        overlay.remove(key)
    }
}

impl KvTable {
    /// The table holding `map`.
    pub(crate) fn new(map: KvMap) -> Self {
        let records_len = map.iter().map(|(k, v)| record_len(k, v)).sum();
        KvTable {
            len: map.len(),
            base: Arc::new(map),
            overlay: Overlay::new(),
            records_len,
        }
    }

    /// A view of the table as it is now, for a snapshot to serialize while the table changes.
    pub(crate) fn view(&mut self) -> KvView {
        let overlay = if self.overlay.is_empty() {
            Arc::default()
        } else {
            // Changes an older view keeps out of the base, or not folded back yet.
            Arc::new(self.overlay.clone())
        };
        KvView {
            base: Arc::clone(&self.base),
            overlay,
            len: self.len,
            records_len: self.records_len,
        }
    }

    /// The sum of the records' sizes in a binary snapshot: a capacity to reserve (the encoder
    /// computes the header's lengths from what it writes).
    pub(crate) fn records_len(&self) -> u64 {
        self.records_len
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&String> {
        lookup(&self.base, &self.overlay, key)
    }

    /// Every record, sorted by key.
    pub(crate) fn sorted(&self) -> Vec<(&str, &str)> {
        sorted(&self.base, &self.overlay, self.len)
    }

    /// Sets `key` to `value` and returns the value it replaced. An existing key is updated in
    /// place: no new key is allocated (while a view shares the table, the change goes to the
    /// overlay and the replaced value is a copy).
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Option<String> {
        let previous = if let Some(base) = Arc::get_mut(&mut self.base) {
            let unfolded = take_unfolded(&mut self.overlay, key);
            let replaced = match base.get_mut(key) {
                Some(slot) => Some(std::mem::replace(slot, value.to_string())),
                None => {
                    base.insert(key.to_string(), value.to_string());
                    None
                }
            };
            unfolded.unwrap_or(replaced)
        } else {
            match self.overlay.get_mut(key) {
                Some(slot) => slot.replace(value.to_string()),
                None => {
                    let previous = self.base.get(key).cloned();
                    self.overlay
                        .insert(key.to_string(), Some(value.to_string()));
                    previous
                }
            }
        };
        match &previous {
            Some(p) => self.records_len = self.records_len - p.len() as u64 + value.len() as u64,
            None => {
                self.len += 1;
                self.records_len += record_len(key, value);
            }
        }
        previous
    }

    /// Removes `key` and returns its value.
    pub(crate) fn remove(&mut self, key: &str) -> Option<String> {
        let previous = if let Some(base) = Arc::get_mut(&mut self.base) {
            let unfolded = take_unfolded(&mut self.overlay, key);
            let removed = base.remove(key);
            shrink_if_sparse(base);
            match unfolded {
                Some(current) => current?,
                None => removed?,
            }
        } else {
            match self.overlay.get_mut(key) {
                Some(slot) => slot.take()?,
                None => {
                    let previous = self.base.get(key)?.clone();
                    self.overlay.insert(key.to_string(), None);
                    previous
                }
            }
        };
        self.len -= 1;
        self.records_len -= record_len(key, &previous);
        Some(previous)
    }

    /// The number of keys.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves up to `budget` entries of the overlay into the base, if no view shares the base any
    /// more; nothing otherwise. Reads and writes are correct whether the overlay is folded or not:
    /// this only gives its memory back and keeps later lookups to one map.
    pub(crate) fn fold_some(&mut self, budget: usize) {
        if self.overlay.is_empty() {
            return;
        }
        let Some(base) = Arc::get_mut(&mut self.base) else {
            return;
        };
        // Each call scans from the start of the overlay's slots, over the ones emptied by earlier
        // calls: up to about ten thousand 16-slot groups for an overlay of 100 k entries.
        for (key, change) in self.overlay.extract_if(|_, _| true).take(budget) {
            match change {
                Some(value) => {
                    base.insert(key, value);
                }
                None => {
                    base.remove(&key);
                }
            }
        }
        if self.overlay.is_empty() {
            shrink_if_sparse(base);
            // Not needed until the next view: give back what a long snapshot made it grow to.
            self.overlay.shrink_to(SHRINK_MIN_CAPACITY);
        }
    }
}

/// Shrinks `map` to twice its length when removals left it mostly empty.
fn shrink_if_sparse(map: &mut KvMap) {
    let capacity = map.capacity();
    if capacity >= SHRINK_MIN_CAPACITY && map.len() < capacity / SHRINK_BELOW_ONE_IN {
        map.shrink_to(map.len() * 2);
    }
}

impl KvView {
    /// The sum of the records' sizes in a binary snapshot.
    pub(crate) fn records_len(&self) -> u64 {
        self.records_len
    }

    /// The number of keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The value of `key`.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<&String> {
        lookup(&self.base, &self.overlay, key)
    }

    /// Every record, sorted by key: what a snapshot writes.
    pub(crate) fn sorted(&self) -> Vec<(&str, &str)> {
        sorted(&self.base, &self.overlay, self.len)
    }

    /// Every record, in no particular order.
    pub(crate) fn records(&self) -> impl Iterator<Item = (&str, &str)> {
        records(&self.base, &self.overlay)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn records(t: &[(&str, &str)]) -> u64 {
        t.iter().map(|(k, v)| record_len(k, v)).sum()
    }

    #[test]
    fn the_records_size_follows_every_change() {
        let mut t = KvTable::default();
        let check = |t: &KvTable| assert_eq!(t.records_len(), records(&t.sorted()));
        t.set("a", "12345");
        check(&t);
        t.set("bb", "");
        check(&t);
        assert_eq!(t.set("a", "1").as_deref(), Some("12345"));
        check(&t);
        assert_eq!(t.remove("bb").as_deref(), Some(""));
        assert_eq!(t.remove("bb"), None);
        check(&t);
        assert_eq!(t.records_len(), 8 + 1 + 1);
        t.remove("a");
        assert_eq!(t.records_len(), 0);
    }

    #[test]
    fn a_view_keeps_the_table_as_it_was_and_the_table_folds_back_once_it_is_dropped() {
        let mut t = KvTable::default();
        t.set("a", "1");
        t.set("b", "2");
        let view = t.view();
        assert_eq!(t.set("a", "10").as_deref(), Some("1"));
        assert_eq!(t.remove("b").as_deref(), Some("2"));
        t.set("c", "3");
        assert_eq!(view.sorted(), [("a", "1"), ("b", "2")]);
        assert_eq!(t.sorted(), [("a", "10"), ("c", "3")]);
        assert_eq!(
            (t.get("b"), t.get("a").map(String::as_str)),
            (None, Some("10"))
        );
        assert_eq!(t.overlay.len(), 3);
        t.fold_some(FOLD_MIN_PER_BATCH);
        assert_eq!(
            t.overlay.len(),
            3,
            "nothing folds while a view holds the base"
        );
        drop(view);
        t.set("d", "4");
        assert_eq!(
            t.set("a", "11").as_deref(),
            Some("10"),
            "the overlay's value, not the base's"
        );
        assert_eq!(
            t.overlay.len(),
            2,
            "a write takes its key out of the overlay"
        );
        t.fold_some(1);
        assert_eq!(t.overlay.len(), 1);
        assert_eq!(
            t.remove("b"),
            None,
            "removed in the overlay, still in the base until folded"
        );
        t.fold_some(FOLD_MIN_PER_BATCH);
        assert!(t.overlay.is_empty());
        assert_eq!(t.sorted(), [("a", "11"), ("c", "3"), ("d", "4")]);
        assert_eq!(t.base.len(), 3);
    }

    #[test]
    fn a_table_emptied_by_removals_gives_its_memory_back() {
        let mut t = KvTable::default();
        for i in 0..10_000 {
            t.set(&i.to_string(), "v");
        }
        let full = t.base.capacity();
        for i in 0..9_990 {
            t.remove(&i.to_string());
        }
        assert!(
            t.base.capacity() < full / 8,
            "{} of {full}",
            t.base.capacity()
        );
        assert_eq!(t.len(), 10);
    }

    /// One step of the property test: a change to the table, or a view taken or dropped.
    #[derive(Clone, Debug)]
    enum Step {
        Set(u8, u8),
        Remove(u8),
        TakeView,
        DropView(usize),
        Fold(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..24, any::<u8>()).prop_map(|(k, v)| Step::Set(k, v)),
            2 => (0u8..24).prop_map(Step::Remove),
            1 => Just(Step::TakeView),
            1 => (0usize..4).prop_map(Step::DropView),
            1 => (0usize..4).prop_map(Step::Fold),
        ]
    }

    proptest! {
        /// Against a `BTreeMap` model: every answer, every view's contents (which later changes
        /// never reach) and the records' size, with views taken and dropped and the overlay
        /// folded back in part, in any order.
        #[test]
        fn the_table_and_its_views_match_a_model(steps in proptest::collection::vec(step(), 1..200)) {
            let mut table = KvTable::default();
            let mut model = BTreeMap::<String, String>::new();
            let mut views: Vec<(KvView, BTreeMap<String, String>)> = Vec::new();
            for s in steps {
                match s {
                    Step::Set(k, v) => {
                        let (k, v) = (format!("k{k}"), format!("v{v}"));
                        prop_assert_eq!(table.set(&k, &v), model.insert(k, v));
                    }
                    Step::Remove(k) => {
                        let k = format!("k{k}");
                        prop_assert_eq!(table.remove(&k), model.remove(&k));
                    }
                    Step::TakeView => views.push((table.view(), model.clone())),
                    Step::DropView(i) => {
                        if !views.is_empty() {
                            views.remove(i % views.len());
                        }
                    }
                    Step::Fold(budget) => table.fold_some(budget),
                }
                let expected: Vec<(&str, &str)> =
                    model.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                prop_assert_eq!(table.sorted(), expected.clone());
                prop_assert_eq!(table.len(), model.len());
                prop_assert_eq!(table.records_len(), records(&expected));
                for k in 0..24 {
                    let k = format!("k{k}");
                    prop_assert_eq!(table.get(&k), model.get(&k));
                }
                for (view, seen) in &views {
                    let expected: Vec<(&str, &str)> =
                        seen.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    prop_assert_eq!(view.sorted(), expected.clone());
                    prop_assert_eq!(view.len(), seen.len());
                    prop_assert_eq!(view.records_len(), records(&expected));
                    if let Some((k, v)) = seen.iter().next() {
                        prop_assert_eq!(view.get(k), Some(v));
                    }
                }
            }
        }
    }
}
