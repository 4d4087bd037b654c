//! What the router sees of a request without opening it: its kind and the size of what it carries.

use raft_core::{AppendEntriesRequest, InstallSnapshotRequest, LogId};

/// The kinds of RPC the router carries; InstallSnapshot can have faults of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RpcKind {
    Vote,
    PreVote,
    TimeoutNow,
    AppendEntries,
    InstallSnapshot,
    ReadIndex,
}

/// The outside of one request: enough to pick its faults and to count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub(crate) kind: RpcKind,
    /// Log entries carried (AppendEntries).
    pub(crate) entries: u64,
    /// Bytes of snapshot data carried (InstallSnapshot).
    pub(crate) snapshot_bytes: u64,
    /// `(snapshot last log id, offset)` of an InstallSnapshot chunk.
    pub(crate) chunk: Option<(LogId, u64)>,
}

impl Envelope {
    /// A request that carries no entries and no snapshot data, of `kind`.
    pub(crate) fn bare(kind: RpcKind) -> Self {
        Envelope {
            kind,
            entries: 0,
            snapshot_bytes: 0,
            chunk: None,
        }
    }

    pub(crate) fn append_entries<C>(request: &AppendEntriesRequest<C>) -> Self {
        Envelope {
            kind: RpcKind::AppendEntries,
            entries: request.entries.len() as u64,
            snapshot_bytes: 0,
            chunk: None,
        }
    }

    pub(crate) fn install_snapshot(request: &InstallSnapshotRequest) -> Self {
        Envelope {
            kind: RpcKind::InstallSnapshot,
            entries: 0,
            snapshot_bytes: request.data.len() as u64,
            chunk: Some((request.meta.last_log_id, request.offset)),
        }
    }
}
