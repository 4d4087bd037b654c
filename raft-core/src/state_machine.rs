//! The state machine trait: the application that the replicated log drives.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StateMachineError;
use crate::types::{Entry, LogId, SnapshotMeta};

/// What a command type must be: cloneable (it is sent to several followers), sendable between tasks and
/// serde-encodable (so any transport and storage can carry it). Implemented for every such type.
pub trait AppCommand: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static {}

impl<T> AppCommand for T where
    T: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static
{
}

/// The serialization of a snapshot, started by [`StateMachine::begin_snapshot`] and run by the driver on
/// a task of its own while entries keep being applied.
pub type SnapshotBuild = Pin<Box<dyn Future<Output = Result<Vec<u8>, StateMachineError>> + Send>>;

/// The application state that the replicated log drives, and its types.
///
/// # Contract
/// * **Order:** the driver calls `apply` with committed entries only, each exactly once, in log order,
///   with no gaps, from a single task of its own (a slow state machine does not stall heartbeats).
/// * **Determinism:** applying the same entries to the same state must give the same state and the
///   same responses on every node.
/// * **Restart:** a state machine that keeps its state across restarts reports the last entry it holds
///   with [`last_applied`](Self::last_applied); the driver then resumes applying after it. An in-memory
///   state machine returns `None` and gets the whole log (or snapshot) replayed.
/// * **Errors:** any `Err` stops the node.
#[async_trait]
pub trait StateMachine: Send + 'static {
    /// The command clients propose.
    type Command: AppCommand;
    /// What applying a command returns to the client that proposed it.
    type Response: Debug + Send + 'static;

    /// The id of the last entry whose effect this state machine holds durably; `None` if it holds none
    /// (a fresh or in-memory state machine).
    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError>;

    /// Applies committed entries, in order, and returns exactly one response per entry, in the same
    /// order. Responses for [`EntryPayload::Blank`](crate::EntryPayload) and membership entries are
    /// dropped by the driver; return any value for them.
    async fn apply(
        &mut self,
        entries: &[Entry<Self::Command>],
    ) -> Result<Vec<Self::Response>, StateMachineError>;

    /// Serializes the whole state (for a snapshot).
    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError>;

    /// Starts a snapshot of the state as of the last applied entry and returns the work that
    /// serializes it. The driver calls this on the apply task, then runs the returned future on a
    /// task of its own, so applying (and answering clients) goes on while it runs; the future must
    /// therefore not see later changes (take a copy, or a cheap consistent view, here).
    ///
    /// The default serializes right here with [`snapshot`](Self::snapshot): correct, but applying
    /// waits for it. Override it when serializing is slow (large state): copy the state or share it
    /// (e.g. an `Arc` of a persistent map) here, and serialize in the returned future (with
    /// `tokio::task::spawn_blocking` for CPU-heavy work).
    async fn begin_snapshot(&mut self) -> Result<SnapshotBuild, StateMachineError> {
        let data = self.snapshot().await?;
        Ok(Box::pin(async move { Ok(data) }))
    }

    /// Replaces the whole state with a snapshot's, atomically: on error the state is unchanged.
    ///
    /// Called on start (with the stored snapshot, if the state machine holds less) and when a snapshot
    /// from the leader has been stored. An error stops the node, and the snapshot stays stored, so
    /// the node then refuses to start until `restore` accepts it: keep every snapshot format a
    /// running cluster may hold readable by the next version (mixed versions during an upgrade send
    /// each other snapshots), and refuse what `restore` cannot read in
    /// [`check_snapshot`](Self::check_snapshot) first.
    async fn restore(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StateMachineError>;

    /// Checks a snapshot received from the leader before it is stored: an error refuses it (the
    /// follower answers `Invalid`, keeps its log and state and keeps running; the leader logs it and
    /// tries again later), where an error of [`restore`](Self::restore) would stop the node.
    ///
    /// It runs on the driver's task for every received snapshot, so it must be cheap: check a
    /// header (format version, the last log id the data claims), not the whole data. The default
    /// accepts everything.
    fn check_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Result<(), StateMachineError>
    where
        Self: Sized,
    {
        let _ = (meta, data);
        Ok(())
    }

    /// An estimate, in bytes, of `command` as the transport encodes it (an upper estimate is best).
    /// The leader fills each AppendEntries up to [`Config::max_append_bytes`](crate::Config) by it, and
    /// refuses a proposal over [`Config::max_entry_bytes`](crate::Config) with
    /// [`ClientWriteError::TooLarge`](crate::ClientWriteError::TooLarge). It runs for every entry
    /// sent, so it must be cheap: add up the lengths of the command's strings and byte buffers, do not
    /// serialize it.
    ///
    /// The default is the command's in-memory size (`size_of::<Command>()`), right for commands of a
    /// fixed size and an underestimate for commands that own heap data: override it for those.
    fn command_size(command: &Self::Command) -> usize
    where
        Self: Sized,
    {
        std::mem::size_of_val(command)
    }
}
