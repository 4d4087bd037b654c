//! What the executor did, in order: one [`Effect`] per storage write, message, reply, restore and
//! apply.

use crate::message::{Request, Response};
use crate::types::{Entry, HardState, LogId, LogIndex, NodeId, SnapshotMeta};

/// One thing the [`Executor`](super::Executor) did while executing an [`Output`](crate::Output),
/// named after the executor contract's step it belongs to (see the [engine docs](crate::engine)).
#[derive(Clone, Debug, PartialEq)]
pub enum Effect<C> {
    /// Step 1: the hard state was saved.
    SaveHardState(HardState),
    /// Steps 2 and 6: a request left for `to`: one of the output's `messages`, or a snapshot chunk
    /// read from the store for one of its `snapshot_sends`.
    Send {
        /// The peer.
        to: NodeId,
        /// The request.
        request: Request<C>,
    },
    /// Step 3: a snapshot was handed to the store (which ignores one that is not newer than what it
    /// holds). `from_leader`: received from the leader (it replaces the log, and the state machine
    /// is restored from it in step 7); otherwise built by this node's state machine.
    InstallSnapshot {
        /// The snapshot's metadata.
        meta: SnapshotMeta,
        /// Whether it came from the leader.
        from_leader: bool,
    },
    /// Step 3: the log was purged up to and including this index.
    Purge(LogIndex),
    /// Step 4: the log was truncated at `from`.
    Truncate {
        /// The first index deleted.
        from: LogIndex,
        /// The ids of the entries the store deleted (none if it never held them).
        removed: Vec<LogId>,
    },
    /// Step 4: these entries were appended, then reported with
    /// [`Engine::log_persisted`](crate::Engine::log_persisted).
    Append(Vec<Entry<C>>),
    /// Step 5: a held reply was released, in the order the requests were received.
    Reply(Response),
    /// Step 6: the store did not hold the snapshot a chunk for `to` was to be read from; reported
    /// with [`Engine::snapshot_send_failed`](crate::Engine::snapshot_send_failed).
    SnapshotSendFailed {
        /// The peer.
        to: NodeId,
        /// The snapshot the chunk was asked from.
        snapshot: LogId,
    },
    /// Step 7: the state machine was restored from the snapshot stored in step 3.
    Restore(SnapshotMeta),
    /// Step 7: these committed entries were applied, in order.
    Apply(Vec<Entry<C>>),
    /// A read registered with [`Executor::read`](super::Executor::read) was confirmed: it may be
    /// served once the state machine has applied up to its index. (Independent of the steps.)
    ReadReady(crate::engine::ReadReady),
    /// A read registered with [`Executor::read`](super::Executor::read) failed: the node stopped
    /// leading. (Independent of the steps.)
    ReadFailed(crate::engine::ReadFailed),
}

impl<C> Effect<C> {
    /// Whether this is a write to durable storage (hard state, snapshot, purge, truncate, append):
    /// a call the driver makes on its [`RaftStorage`](crate::RaftStorage).
    pub fn is_storage_write(&self) -> bool {
        matches!(
            self,
            Effect::SaveHardState(_)
                | Effect::InstallSnapshot { .. }
                | Effect::Purge(_)
                | Effect::Truncate { .. }
                | Effect::Append(_)
        )
    }
}

/// Everything one [`Executor::flush`](super::Executor::flush) did, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Executed<C> {
    /// The effects, in the order they happened.
    pub effects: Vec<Effect<C>>,
}

impl<C> Default for Executed<C> {
    fn default() -> Self {
        Executed {
            effects: Vec::new(),
        }
    }
}

impl<C> Executed<C> {
    /// Whether nothing was done.
    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }

    /// The requests sent (messages and snapshot chunks), in order, with their target.
    pub fn sends(&self) -> impl Iterator<Item = (NodeId, &Request<C>)> {
        self.effects.iter().filter_map(|e| match e {
            Effect::Send { to, request } => Some((*to, request)),
            _ => None,
        })
    }

    /// The replies released, in the order their requests were received.
    pub fn replies(&self) -> impl Iterator<Item = &Response> {
        self.effects.iter().filter_map(|e| match e {
            Effect::Reply(r) => Some(r),
            _ => None,
        })
    }

    /// The entries applied, in order.
    pub fn applied(&self) -> impl Iterator<Item = &Entry<C>> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Apply(entries) => Some(entries.iter()),
                _ => None,
            })
            .flatten()
    }

    /// The storage writes, in order (see [`Effect::is_storage_write`]).
    pub fn storage_writes(&self) -> impl Iterator<Item = &Effect<C>> {
        self.effects.iter().filter(|e| e.is_storage_write())
    }
}
