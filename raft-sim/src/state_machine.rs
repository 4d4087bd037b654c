//! [`LogStateMachine`]: the harness's state machine, which records every entry it applies, and its
//! state, [`AppliedState`], which snapshots carry.

use std::hash::{Hash, Hasher};

use async_trait::async_trait;
use raft_core::{
    Entry, EntryPayload, LogId, LogIndex, NodeId, SnapshotBuild, SnapshotMeta, StateMachine,
    StateMachineError,
};

use crate::world::{lock, Shared};

/// How many of the latest commands an [`AppliedState`] keeps.
pub const RECENT_COMMANDS: usize = 8;

/// The state of a [`LogStateMachine`]: what it has applied, condensed.
///
/// `digest` is a hash chained over every entry applied (or restored) up to `last`, in log order,
/// with the same function the harness uses to compare log prefixes: two state machines with equal
/// states applied the same entries (up to a hash collision, which could only hide a difference,
/// never invent one), and a state machine's digest equals the hash of the committed log prefix it
/// reflects. `recent` makes the state, and so a snapshot, more than a few bytes (so that it crosses
/// the network in several chunks) and readable in failure messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// The last entry applied, or the last entry of the snapshot restored since; the default id if none.
    pub last: LogId,
    /// Hash chain over every entry up to `last` (0 for none).
    pub digest: u64,
    /// The latest [`RECENT_COMMANDS`] commands applied (at most), with their indexes, oldest first.
    pub recent: Vec<(LogIndex, u64)>,
}

/// First bytes of an encoded [`AppliedState`].
const MAGIC: &[u8; 4] = b"LSM1";

impl AppliedState {
    /// The state after applying `entry`.
    pub(crate) fn apply(&mut self, entry: &Entry<u64>) {
        self.digest = chain_hash(self.digest, entry);
        self.last = entry.log_id;
        if let EntryPayload::Command(v) = entry.payload {
            if self.recent.len() == RECENT_COMMANDS {
                self.recent.remove(0);
            }
            self.recent.push((entry.log_id.index, v));
        }
    }

    /// The snapshot bytes: magic, last term and index, digest, the recent commands (count, then index
    /// and value each), and a checksum of all that; integers little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for n in [self.last.term, self.last.index, self.digest] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&(self.recent.len() as u32).to_le_bytes());
        for &(index, value) in &self.recent {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decodes what [`encode`](Self::encode) wrote.
    ///
    /// # Errors
    /// A description of what is wrong: bad magic, length or checksum (bytes lost, duplicated or
    /// reordered on the way would show here).
    pub fn decode(data: &[u8]) -> Result<AppliedState, String> {
        let body_len = data
            .len()
            .checked_sub(8)
            .ok_or_else(|| format!("{} bytes is too short", data.len()))?;
        let (body, sum) = data.split_at(body_len);
        if u64_at(sum, 0) != Some(checksum(body)) {
            return Err(format!("checksum mismatch over {} bytes", data.len()));
        }
        if body.get(..4) != Some(MAGIC.as_slice()) {
            return Err("bad magic".to_string());
        }
        let field = |i: usize| u64_at(body, 4 + 8 * i).ok_or("truncated header");
        let (term, index, digest) = (field(0)?, field(1)?, field(2)?);
        let count = body
            .get(28..32)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("truncated count")?;
        if count > RECENT_COMMANDS || body.len() != 32 + 16 * count {
            return Err(format!("{count} recent commands in {} bytes", body.len()));
        }
        let recent = (0..count)
            .map(|i| {
                let at = 32 + 16 * i;
                Some((u64_at(body, at)?, u64_at(body, at + 8)?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or("truncated recent commands")?;
        Ok(AppliedState {
            last: LogId::new(term, index),
            digest,
            recent,
        })
    }
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = data.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// FNV-1a over `data`.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A hash of a log prefix (or of what a state machine applied), extended by one entry. Two prefixes
/// with the same hash hold (up to hash collisions, which could only hide a violation, never invent
/// one) the same entries. The empty prefix hashes to 0.
pub(crate) fn chain_hash(prev: u64, entry: &Entry<u64>) -> u64 {
    // `DefaultHasher::new()` uses fixed keys: the same value on every run.
    let mut h = std::hash::DefaultHasher::new();
    prev.hash(&mut h);
    entry.log_id.hash(&mut h);
    match &entry.payload {
        EntryPayload::Blank => 0u8.hash(&mut h),
        EntryPayload::Command(v) => {
            1u8.hash(&mut h);
            v.hash(&mut h);
        }
        EntryPayload::Membership(m) => {
            2u8.hash(&mut h);
            m.voters.hash(&mut h);
        }
    }
    h.finish()
}

/// The state machine of harness clusters. A command is a `u64` value that is unique per client write;
/// the response is the log index the command was applied at.
///
/// Its state is an [`AppliedState`]; [`snapshot`](StateMachine::snapshot) encodes it and
/// [`restore`](StateMachine::restore) decodes it, after which applying continues the same hash
/// chain. Every applied entry (commands, no-ops and membership entries alike) and every restore is
/// recorded, per node and per *incarnation* (a restarted node gets a new, empty state machine), in
/// the cluster's shared record, where State Machine Safety is checked as it happens: no two nodes or
/// incarnations apply different entries at one index; each incarnation applies in order without
/// gaps, continuing from the snapshot it restored last; a restored state equals the committed log
/// prefix up to the snapshot (digest and recent commands) and never moves the state machine back; an
/// entry is applied only once it is durable on a majority. A snapshot that does not decode (bytes
/// lost or misplaced in transfer) is a violation, and the restore fails.
///
/// It is "in memory": [`last_applied`](StateMachine::last_applied) is `None` on every start.
pub struct LogStateMachine {
    node: NodeId,
    incarnation: u32,
    state: AppliedState,
    world: Shared,
}

impl std::fmt::Debug for LogStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStateMachine")
            .field("node", &self.node)
            .field("incarnation", &self.incarnation)
            .field("state", &self.state)
            .finish()
    }
}

impl LogStateMachine {
    pub(crate) fn new(node: NodeId, incarnation: u32, world: Shared) -> Self {
        LogStateMachine {
            node,
            incarnation,
            state: AppliedState::default(),
            world,
        }
    }

    /// The node this state machine belongs to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Which start of the node this is (1 for the first).
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// Its current state.
    pub fn state(&self) -> &AppliedState {
        &self.state
    }
}

#[async_trait]
impl StateMachine for LogStateMachine {
    type Command = u64;
    type Response = LogIndex;

    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }

    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<LogIndex>, StateMachineError> {
        for e in entries {
            self.state.apply(e);
        }
        lock(&self.world).on_apply(self.node, self.incarnation, entries, &self.state);
        Ok(entries.iter().map(|e| e.log_id.index).collect())
    }

    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(self.state.encode())
    }

    /// Captures the state now and hands it over after yielding to the scheduler a few times (0-6,
    /// from the snapshot's index, so runs replay), so that in every simulation the build finishes in
    /// the background while entries keep being applied. (Yields, not a timer: under load on the
    /// paused clock, virtual time does not advance, and a sleeping build would never finish.)
    async fn begin_snapshot(&mut self) -> Result<SnapshotBuild, StateMachineError> {
        let data = self.state.encode();
        let yields = self.state.last.index % 7;
        Ok(Box::pin(async move {
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            Ok(data)
        }))
    }

    async fn restore(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StateMachineError> {
        let decoded = AppliedState::decode(data).and_then(|state| {
            if state.last == meta.last_log_id {
                Ok(state)
            } else {
                Err(format!("its data is the state as of {}", state.last))
            }
        });
        let mut w = lock(&self.world);
        match decoded {
            Ok(state) => {
                w.on_restore(self.node, self.incarnation, meta, &state);
                self.state = state;
                Ok(())
            }
            Err(e) => {
                let msg = format!(
                    "snapshot transfer: node {} was asked to restore a snapshot of {} ({} bytes) that is not \
                     a state machine state: {e}",
                    self.node,
                    meta.last_log_id,
                    data.len()
                );
                w.violation(msg.clone());
                Err(StateMachineError::new(msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(index: LogIndex, v: u64) -> Entry<u64> {
        Entry {
            log_id: LogId::new(1, index),
            payload: EntryPayload::Command(v),
        }
    }

    #[test]
    fn state_round_trips_and_keeps_the_latest_commands() {
        let mut s = AppliedState::default();
        for i in 1..=20 {
            s.apply(&cmd(i, 100 + i));
        }
        assert_eq!(s.last, LogId::new(1, 20));
        assert_eq!(s.recent.len(), RECENT_COMMANDS);
        assert_eq!(s.recent[0], (13, 113));
        assert_eq!(AppliedState::decode(&s.encode()), Ok(s.clone()));
        assert_eq!(
            AppliedState::decode(&AppliedState::default().encode()),
            Ok(AppliedState::default())
        );
    }

    #[test]
    fn damaged_bytes_do_not_decode() {
        let mut s = AppliedState::default();
        for i in 1..=5 {
            s.apply(&cmd(i, i));
        }
        let data = s.encode();
        // A lost chunk, a duplicated chunk, two chunks swapped, a flipped bit.
        let lost = [&data[..16], &data[32..]].concat();
        let dup = [&data[..32], &data[16..]].concat();
        let swapped = [&data[16..32], &data[..16], &data[32..]].concat();
        let mut flipped = data.clone();
        flipped[20] ^= 1;
        for bad in [lost, dup, swapped, flipped, Vec::new(), data[..7].to_vec()] {
            assert!(AppliedState::decode(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digest_is_the_chain_of_the_applied_entries() {
        let mut s = AppliedState::default();
        let entries = [cmd(1, 7), cmd(2, 8)];
        for e in &entries {
            s.apply(e);
        }
        let chain = entries.iter().fold(0, chain_hash);
        assert_eq!(s.digest, chain);
    }
}
