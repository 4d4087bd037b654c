//! The node's storage as the driver uses it: log appends run in the background, one at a time,
//! while the driver goes on; every other storage call waits for them first.
//!
//! A leader's own append is off the driver's path (thesis §10.2.1: the leader writes its log in
//! parallel with replicating it), and so is a follower's: the driver keeps taking messages and
//! proposals while an fsync is in flight, and what arrives meanwhile is appended next, all of it
//! in one call (group commit across batches).
//!
//! What stays safe, and where:
//! * Appends reach storage in log order: one is in flight at a time, the entries handed over
//!   meanwhile wait in `queued` and go together in the next call.
//! * Every other call (hard state, snapshot, purge, truncate, reading a snapshot chunk) first
//!   waits until no append is in flight or queued ([`Disk::idle`]), so the storage sees the calls
//!   in the order the executor contract gives them.
//! * The driver learns what is durable from [`Disk::completed`] (the last entry of the append that
//!   finished) and only then tells the engine (`log_persisted`), releases the replies that
//!   acknowledge those entries, and applies them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::StorageError;
use crate::storage::RaftStorage;
use crate::types::{Entry, LogId, LogIndex};

/// An append in flight: it owns the storage for its duration and hands it back with its result.
type Append<S> = Pin<Box<dyn Future<Output = (S, Result<Appended, StorageError>)> + Send>>;

/// A finished append.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Appended {
    /// Its last entry: it and every entry handed over before it are durable.
    pub(crate) last: LogId,
    /// How long the `RaftStorage::append` call took.
    pub(crate) took: Duration,
}

enum State<S> {
    Idle(S),
    Busy(Append<S>),
    /// An append failed: the node stops (any storage error is fatal), and the storage is gone.
    Failed,
}

/// The storage, owned by the driver, with at most one log append in flight.
pub(crate) struct Disk<C, S> {
    state: State<S>,
    /// Entries handed over while an append was in flight: the next append.
    queued: Vec<Entry<C>>,
    /// The index of the last entry handed over (in flight, queued or done), since the last
    /// [`idle`](Self::idle).
    submitted: LogIndex,
    /// The index of the last entry storage has made durable, since the last `idle`.
    durable: LogIndex,
}

impl<C, S> Disk<C, S>
where
    C: Send + Sync + 'static,
    S: RaftStorage<C>,
{
    pub(crate) fn new(storage: S) -> Self {
        Disk {
            state: State::Idle(storage),
            queued: Vec::new(),
            submitted: 0,
            durable: 0,
        }
    }

    /// The index of the last entry handed to [`append`](Self::append).
    pub(crate) fn submitted(&self) -> LogIndex {
        self.submitted
    }

    /// The index of the last entry storage has made durable: everything handed over up to it is.
    pub(crate) fn durable(&self) -> LogIndex {
        self.durable
    }

    /// Whether an append is in flight (then [`completed`](Self::completed) will finish).
    pub(crate) fn busy(&self) -> bool {
        matches!(self.state, State::Busy(_))
    }

    /// Hands `entries` (non-empty, following the entries handed over before) to storage: appended
    /// now if storage is idle, else queued for the next append.
    pub(crate) fn append(&mut self, mut entries: Vec<Entry<C>>) {
        let Some(last) = entries.last() else {
            return;
        };
        self.submitted = last.log_id.index;
        if let State::Idle(_) = self.state {
            self.start(entries);
        } else {
            self.queued.append(&mut entries);
        }
    }

    fn start(&mut self, entries: Vec<Entry<C>>) {
        let State::Idle(mut storage) = std::mem::replace(&mut self.state, State::Failed) else {
            return;
        };
        let Some(last) = entries.last().map(|e| e.log_id) else {
            self.state = State::Idle(storage);
            return;
        };
        self.state = State::Busy(Box::pin(async move {
            let started = Instant::now();
            let result = storage.append(&entries).await.map(|()| Appended {
                last,
                took: started.elapsed(),
            });
            (storage, result)
        }));
    }

    /// Polls the append in flight once, without waiting: a storage that completes its append at
    /// once (in memory, or buffered) then costs the driver no extra turn of its loop. Returns what
    /// [`completed`](Self::completed) would, or `None` if the append is still running (or none is).
    pub(crate) fn poll_now(&mut self) -> Option<Result<Appended, StorageError>> {
        let mut cx = Context::from_waker(Waker::noop());
        let State::Busy(append) = &mut self.state else {
            return None;
        };
        // A future that returns Pending here registers the waker of whoever polls it next: the
        // driver's select polls it again with the task's own waker before it sleeps.
        let Poll::Ready((storage, result)) = append.as_mut().poll(&mut cx) else {
            return None;
        };
        Some(self.finish(storage, result))
    }

    /// Waits for the append in flight, starts the queued one if any, and returns the last entry the
    /// finished append made durable. Cancel-safe (the append stays in flight); never finishes while
    /// storage is idle.
    pub(crate) async fn completed(&mut self) -> Result<Appended, StorageError> {
        let State::Busy(append) = &mut self.state else {
            return std::future::pending().await;
        };
        let (storage, result) = append.await;
        self.finish(storage, result)
    }

    fn finish(
        &mut self,
        storage: S,
        result: Result<Appended, StorageError>,
    ) -> Result<Appended, StorageError> {
        self.state = State::Idle(storage);
        match result {
            Ok(appended) => {
                self.durable = self.durable.max(appended.last.index);
                if !self.queued.is_empty() {
                    let next = std::mem::take(&mut self.queued);
                    self.start(next);
                }
                Ok(appended)
            }
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    /// Waits until every entry handed over is durable, calling `done` for each append that
    /// finishes meanwhile. After it, [`storage`](Self::storage) is available.
    pub(crate) async fn idle(
        &mut self,
        mut done: impl FnMut(Appended),
    ) -> Result<(), StorageError> {
        while self.busy() {
            done(self.completed().await?);
        }
        // Between two idle calls the indexes only grow; a truncation (made through `storage`) may
        // move the log back, so both start again from here.
        self.submitted = 0;
        self.durable = 0;
        Ok(())
    }

    /// The storage, for a call of its own: only once [`idle`](Self::idle) has returned, and before
    /// the next [`append`](Self::append).
    pub(crate) fn storage(&mut self) -> Result<&mut S, StorageError> {
        match &mut self.state {
            State::Idle(storage) if self.queued.is_empty() => Ok(storage),
            State::Idle(_) | State::Busy(_) => Err(StorageError::InvalidRequest(
                "the driver used storage with an append in flight".into(),
            )),
            State::Failed => Err(StorageError::InvalidRequest(
                "storage is unusable after a failed append".into(),
            )),
        }
    }
}
