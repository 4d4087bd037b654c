//! [`KvTable`]: the table's map, and the size of its snapshot records kept up to date.

/// The table's map: a persistent hash map (`imbl::HashMap`, a hash array mapped trie), so cloning
/// it is O(1) (the clone shares the trie; a later write to either copies only the nodes on its
/// path), which is what lets a snapshot take a view of the table without copying it. Its iteration
/// order is not the keys' order (and differs between replicas, whose hashers are seeded apart): a
/// snapshot sorts the keys first ([`KvTable::sorted`]), on the blocking pool, which is what keeps
/// snapshots byte-identical across replicas.
///
/// Chosen by measurement on the apply path of the `filetcp` bench (256 clients, 256,000 keys of ~9
/// bytes, 100-byte values, each write applied by three replicas on one thread): `imbl::OrdMap`
/// spent about a quarter of that thread in `lookup_mut`, a binary search per level of a 16-way
/// B-tree whose every comparison follows a key's pointer to the heap (~20 cache misses per
/// lookup); the trie hashes the key once, follows one child per 5 bits of hash (~4 levels) and
/// compares one key. The hasher is std's `RandomState` (SipHash, keyed per process): keys come from
/// clients, and an unkeyed hash would let one choose keys that collide. `Arc<str>` keys and values
/// (a cheaper copy of the leaves a write shares with a snapshot in progress) measured no better in
/// `kv_mem_1m` and cost an allocation per replaced value (the response returns it as a `String`).
pub(crate) type KvMap = imbl::HashMap<String, String>;

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

    /// Every key and its value, in ascending key order: what a snapshot writes. Sorts references,
    /// O(n log n), without copying a key or value.
    pub(crate) fn sorted(&self) -> Vec<(&String, &String)> {
        let mut records: Vec<(&String, &String)> = self.map.iter().collect();
        // Keys are unique, so an unstable sort gives the one ascending order.
        records.sort_unstable_by(|a, b| a.0.cmp(b.0));
        records
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
