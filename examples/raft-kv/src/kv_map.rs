//! [`KvTable`]: the table's map, and the size of its snapshot records kept up to date.

/// The table's map: a persistent B-tree map (`imbl::OrdMap`), so cloning it is O(1) (the clone
/// shares the tree; a later write to either copies only the nodes on its path), which is what lets
/// a snapshot take a view of the table without copying it, and iteration is in key order, which is
/// what makes snapshots deterministic.
///
/// Chosen by measurement (1M keys of ~10 bytes, 100-byte values, in an order unrelated to the keys'):
/// inserting or replacing a key costs the same as in `std::collections::BTreeMap` within the
/// machine's noise (~0.9-1.1 µs each), `imbl::HashMap` the same but its order would need a sort
/// per snapshot, `rpds::RedBlackTreeMap` about twice as much. `Arc<str>` keys and values (a
/// cheaper copy of the leaves a write shares with a snapshot in progress) measured no better in
/// `kv_mem_1m` and cost an allocation per replaced value (the response returns it as a `String`).
/// `imbl::HashMap`, keys sorted per snapshot, was measured again in the benches: ~40% faster in
/// `kv_mem_1m` with snapshots off, but no faster with them, which put snapshots at ~0.6 of
/// snapshots off instead of within 10% (`BENCHMARKS.md`, "File storage and TCP: CPU per entry").
pub(crate) type KvMap = imbl::OrdMap<String, String>;

/// What one record of a binary snapshot adds to the key's and value's bytes: their two `u32`
/// lengths.
pub(crate) const RECORD_OVERHEAD: u64 = 8;

/// The table, and the size its records take in a binary snapshot (kept up to date on every
/// change, so a snapshot reserves its buffer without a pass over the table to size it). Cloning
/// is O(1).
#[derive(Clone, Debug, Default)]
pub(crate) struct KvTable {
    map: KvMap,
    records_len: u64,
}

fn record_len(key: &str, value: &str) -> u64 {
    RECORD_OVERHEAD + key.len() as u64 + value.len() as u64
}

impl KvTable {
    /// The table holding `map`.
    pub(crate) fn new(map: KvMap) -> Self {
        let records_len = map.iter().map(|(k, v)| record_len(k, v)).sum();
        KvTable { map, records_len }
    }

    /// The map, to read.
    pub(crate) fn map(&self) -> &KvMap {
        &self.map
    }

    /// The sum of the records' sizes in a binary snapshot: a capacity to reserve (the encoder
    /// computes the header's lengths from what it writes).
    pub(crate) fn records_len(&self) -> u64 {
        self.records_len
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&String> {
        self.map.get(key)
    }

    /// Sets `key` to `value` and returns the value it replaced. An existing key is updated in
    /// place: no new key is allocated.
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Option<String> {
        let added = value.len() as u64;
        match self.map.get_mut(key) {
            Some(slot) => {
                let previous = std::mem::replace(slot, value.to_string());
                self.records_len = self.records_len - previous.len() as u64 + added;
                Some(previous)
            }
            None => {
                self.records_len += record_len(key, value);
                self.map.insert(key.to_string(), value.to_string());
                None
            }
        }
    }

    /// Removes `key` and returns its value.
    pub(crate) fn remove(&mut self, key: &str) -> Option<String> {
        let previous = self.map.remove(key)?;
        self.records_len -= record_len(key, &previous);
        Some(previous)
    }

    /// The number of keys.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_records_size_follows_every_change() {
        let mut t = KvTable::default();
        let check =
            |t: &KvTable| assert_eq!(t.records_len(), KvTable::new(t.map().clone()).records_len());
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
}
