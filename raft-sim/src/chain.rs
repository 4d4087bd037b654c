//! The prefix hash: one `u64` that stands for a whole log prefix (or for everything a state machine
//! applied), extended one entry at a time. The record of durable logs, the committed-entry record and
//! the state machine's [`AppliedState`](crate::AppliedState) digest all use this one function, so
//! their hashes compare directly.

use std::hash::{Hash, Hasher};

use raft_core::{Entry, EntryPayload};

/// A hash of a log prefix (or of what a state machine applied), extended by one entry. Two prefixes
/// with the same hash hold (up to hash collisions, which could only hide a violation, never invent
/// one) the same entries. The empty prefix hashes to 0.
pub(crate) fn chain_hash(prev: u64, entry: &Entry<u64>) -> u64 {
    // `DefaultHasher::new()` uses fixed keys: the same value on every run.
    let mut h = std::hash::DefaultHasher::new();
    prev.hash(&mut h);
    entry.log_id.hash(&mut h);
    match &*entry.payload {
        EntryPayload::Blank => 0u8.hash(&mut h),
        EntryPayload::Command(v) => {
            1u8.hash(&mut h);
            v.hash(&mut h);
        }
        EntryPayload::Membership(m) => {
            // The whole configuration: two memberships with the same voters differ in their
            // learners, their outgoing voters (joint) or their addresses.
            2u8.hash(&mut h);
            m.voters.hash(&mut h);
            m.old_voters.hash(&mut h);
            m.learners.hash(&mut h);
            m.nodes.hash(&mut h);
        }
    }
    h.finish()
}
