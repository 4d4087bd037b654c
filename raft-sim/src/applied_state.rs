//! [`AppliedState`]: the state of the harness's state machine, what its snapshots carry, and how
//! they are encoded. The state machine and the checkers both read it; it depends on nothing of theirs.

use raft_core::{Entry, EntryPayload, LogId, LogIndex};

use crate::chain::chain_hash;

/// How many of the latest commands an [`AppliedState`] keeps.
pub const RECENT_COMMANDS: usize = 8;

/// The state of a [`LogStateMachine`](crate::LogStateMachine): what it has applied, condensed.
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
        if let EntryPayload::Command(v) = *entry.payload {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(index: LogIndex, v: u64) -> Entry<u64> {
        Entry {
            log_id: LogId::new(1, index),
            payload: EntryPayload::Command(v).into(),
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
