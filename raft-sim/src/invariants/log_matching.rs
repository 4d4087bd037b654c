//! **Log Matching**: if two logs hold an entry with the same index and term, they hold the same entry
//! there and are identical in all entries before it.
//!
//! Checked exactly, at every durable append on every node (and for every entry a reopened storage
//! holds): an entry with the same index and term as one any node held before sits on a log prefix
//! with the same hash, and is the committed entry if one is committed there. On demand, pairwise over
//! all durable logs as they are: at the highest index where two logs hold the same entry id, the
//! entries both still hold are identical, and so are the whole prefixes (compacted parts by their
//! hashes). At the end of a run, the durable logs of all nodes but those retired after leaving the
//! cluster end at the same entry on the same prefix.

use raft_core::{LogId, NodeId};

use crate::invariant::{Findings, Invariant};
use crate::record::{FirstHeld, Record};

/// The Log Matching checker.
#[derive(Debug, Default)]
pub(crate) struct LogMatching;

impl Invariant for LogMatching {
    fn on_entry_held(
        &mut self,
        record: &Record,
        id: NodeId,
        log_id: LogId,
        hash: u64,
        first: FirstHeld,
    ) -> Findings {
        if first.hash != hash {
            return vec![format!(
                "log matching: node {id} holds entry {log_id} on a log prefix that differs from node {}'s \
                 entry {log_id} (same index and term, different history)",
                first.node
            )];
        }
        // The entry itself must be the same too (the hash covers it, but say so clearly).
        let index = log_id.index;
        let Some(c) = record.committed.get(&index).filter(|c| c.log_id == log_id) else {
            return Vec::new();
        };
        let payload = record
            .nodes
            .get(&id)
            .and_then(|obs| obs.entry(index))
            .map(|e| (*e.payload).clone());
        if payload.as_ref() == Some(&c.payload) {
            return Vec::new();
        }
        vec![format!(
            "log matching: node {id} holds entry {log_id} with payload {payload:?}, committed as {:?}",
            c.payload
        )]
    }

    fn check(&self, record: &Record) -> Result<(), String> {
        let ids: Vec<NodeId> = record.nodes.keys().copied().collect();
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                let (la, lb) = (&record.nodes[&a], &record.nodes[&b]);
                let from = la.base.index.max(lb.base.index);
                let to = la.last_log_id().index.min(lb.last_log_id().index);
                let top = (from..=to).rev().find(|&ix| {
                    let id = record.id_at(la, ix);
                    id.is_some() && id == record.id_at(lb, ix)
                });
                let Some(top) = top else {
                    continue;
                };
                for ix in from + 1..=top {
                    let (ea, eb) = (la.entry(ix), lb.entry(ix));
                    if ea != eb {
                        return Err(format!(
                            "log matching: nodes {a} and {b} both hold {:?} at index {top}, but differ at \
                             index {ix}: {:?} vs {:?}",
                            record.id_at(la, top),
                            ea,
                            eb
                        ));
                    }
                }
                if let (Some(ha), Some(hb)) =
                    (record.prefix_hash(la, top), record.prefix_hash(lb, top))
                {
                    if ha != hb {
                        return Err(format!(
                            "log matching: nodes {a} and {b} both hold {:?} at index {top}, but their log \
                             prefixes up to it differ (compacted up to {} and {})",
                            record.id_at(la, top),
                            la.base,
                            lb.base
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// All durable logs end at the same entry, agree on the entries they both still hold, and have
    /// the same whole prefix (compacted parts by their hashes).
    fn check_final(&self, record: &Record) -> Result<(), String> {
        let mut nodes = record.final_nodes();
        let Some((&first, reference)) = nodes.next() else {
            return Ok(());
        };
        let ref_last = reference.last_log_id();
        let ref_hash = record.prefix_hash(reference, ref_last.index);
        for (id, obs) in nodes {
            let last = obs.last_log_id();
            let hash = record.prefix_hash(obs, last.index);
            let from = obs.base.index.max(reference.base.index) + 1;
            let diverge = (from..=last.index.min(ref_last.index))
                .find(|&ix| obs.entry(ix) != reference.entry(ix));
            if last != ref_last || diverge.is_some() || hash.is_none() || hash != ref_hash {
                return Err(format!(
                    "final logs differ: node {id} ends at {last} (compacted up to {}, prefix hash {hash:?}), node \
                     {first} at {ref_last} (compacted up to {}, prefix hash {ref_hash:?}); first difference among \
                     the entries both hold: {diverge:?}",
                    obs.base, reference.base
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn log_matching_across_nodes() {
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5), cmd(2, 3, 6)]);
        // Same id at index 3, but a different entry at index 2.
        w.on_append(2, &[membership(), cmd(1, 2, 9), cmd(2, 3, 6)]);
        assert!(has(&w, "log matching"), "{:?}", w.violations);
        assert!(LogMatching.check(&w.record).is_err());
    }

    #[test]
    fn log_matching_reaches_into_compacted_prefixes() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_install_snapshot(1, &snapshot_of(&log));
        w.on_purge(1, 3);
        // Node 3 holds entry 1-3 on another history (the per-append check sees it too).
        w.on_append(3, &[cmd(1, 2, 9), cmd(1, 3, 6)]);
        assert!(has(&w, "log matching"), "{:?}", w.violations);
        w.violations.clear();
        // Pairwise: node 1 holds 1-3 only as its compaction point; the prefixes still differ.
        let err = LogMatching.check(&w.record).unwrap_err();
        assert!(err.contains("nodes 1 and 3"), "{err}");
    }
}
