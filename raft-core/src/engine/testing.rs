//! A synchronous reference executor of the engine's output: the executor contract of the
//! [engine docs](super), all seven steps, on an in-memory durable store, with nothing async, no
//! clock and no network.
//!
//! Compiled for the crate's own tests and with the `testing` feature.
//!
//! # Use
//! An [`Executor`] owns one node's [`Engine`], its [`DurableStore`] and a record of its state
//! machine ([`AppliedLog`]). The caller feeds the engine an input, then executes everything it
//! asked for with [`flush`](Executor::flush), which returns what was done, in order, as
//! [`Effect`]s:
//!
//! ```
//! use raft_core::engine::testing::{DurableStore, Effect, Executor};
//! use raft_core::{Config, Membership};
//!
//! let mut node: Executor<u64> = Executor::new(1, &Config::default(), DurableStore::new(), 0);
//! node.engine_mut().initialize(Membership::new([1])).expect("a fresh node");
//! node.flush().expect("the contract holds");
//! let deadline = node.engine().next_deadline();
//! node.engine_mut().tick(deadline); // a single voter elects itself
//! let done = node.flush().expect("the contract holds");
//! assert!(matches!(done.effects[0], Effect::SaveHardState(_)));
//! assert_eq!(node.durable().last_log_id().index, 2); // the leader's blank entry
//! assert_eq!(node.state_machine().last_applied().index, 2); // committed alone, applied
//! ```
//!
//! * Time and ordinary inputs go straight to the engine through [`engine_mut`](Executor::engine_mut)
//!   (`tick`, `propose`, `initialize`, `snapshot_built`, `handle_unreachable`, ...). The executor
//!   has no clock: like the driver, a caller moves the engine's clock with `advance_clock` before
//!   handing it an input, and calls `tick` after the inputs of a batch.
//! * A request from a peer goes through [`receive`](Executor::receive), which hands it to the
//!   engine's handler and holds the reply until the next flush has made durable what the reply
//!   acknowledges (step 5): it comes out as an [`Effect::Reply`].
//!   [`handle_request`](Executor::handle_request) is `receive` then `flush`.
//! * A peer's answer goes through [`handle_response`](Executor::handle_response) (no flush).
//! * [`flush`](Executor::flush) takes outputs until the engine has nothing more (executing one can
//!   produce the next: `log_persisted` can commit, `snapshot_send_failed` restarts a transfer),
//!   exactly as the driver's loop does, then checks that the engine's log, hard state and latest
//!   snapshot are the stored ones.
//!
//! The executor decides nothing about the protocol: every decision is the engine's, and the
//! executor only carries out what the output says, in the contract's order. Requests to send come
//! out as [`Effect::Send`]; delivering them (or not) is the caller's business.
//!
//! # Crash and restart
//! [`crash`](Executor::crash) drops the engine, its held replies and its volatile state, and keeps
//! the [`DurableStore`] (and the state machine's record, in case the caller restarts it as a
//! durable one). [`Crashed::restart`] starts a new engine on the store as `Raft::start` does with an
//! in-memory state machine (whose `last_applied` is `None`): the state machine starts empty, is
//! restored from the stored snapshot if there is one, and the engine applies again every committed
//! entry after it as it learns the commit index. [`Crashed::restart_keeping_state_machine`] models a
//! state machine that keeps its state across the crash: it is restored from the stored snapshot
//! only if that is ahead of what it holds, and nothing it holds is applied again.
//!
//! # Where it differs from the driver
//! Only outside the contract. A flush is synchronous, so a crash falls between two flushes, never
//! inside one. Requests, replies and the state machine's work come out in one ordered list, where
//! the driver hands them to one task per peer, the caller and the apply task. Snapshot chunks are
//! [`Config::snapshot_chunk_size`] long, as the driver reads them. What the driver adds around the
//! engine is the caller's to do: moving the clock before an input and ticking after it,
//! building snapshots (`Engine::snapshot_built`, with data the caller chooses), and answering
//! client writes.

mod applied;
mod effect;
mod store;
mod violation;

pub use applied::AppliedLog;
pub use effect::{Effect, Executed};
pub use store::DurableStore;
pub use violation::ContractViolation;

use std::collections::BTreeSet;

use super::{Engine, NotLeader, Output, ReadId, SnapshotCheck};
use crate::config::Config;
use crate::message::{ReadIndexResponse, ReadIndexResult, Request, Response};
use crate::types::{LogId, NodeId};

/// One node: an [`Engine`] and the executor of its output. See the [module docs](self).
#[derive(Debug)]
pub struct Executor<C> {
    engine: Engine<C>,
    config: Config,
    store: DurableStore<C>,
    state_machine: AppliedLog<C>,
    /// Kept across restarts; the engine's default (accept everything) when `None`.
    snapshot_check: Option<SnapshotCheck>,
    /// Replies to requests received since the last flush, in order.
    held: Vec<Response>,
    /// Peers' `ReadIndex` requests registered with the engine, by read id, answered once the
    /// engine confirms or fails them.
    remote_reads: BTreeSet<ReadId>,
    /// The id of the next peer's read: from 2^63 up, apart from the ids callers of
    /// [`read`](Executor::read) choose.
    next_remote_read: ReadId,
}

/// Where the ids of the reads an [`Executor`] registers for peers start.
const REMOTE_READ_IDS: ReadId = 1 << 63;

/// A node that crashed: what survives it. See the [module docs](self#crash-and-restart).
#[derive(Debug)]
pub struct Crashed<C> {
    id: NodeId,
    config: Config,
    store: DurableStore<C>,
    state_machine: AppliedLog<C>,
    snapshot_check: Option<SnapshotCheck>,
}

impl<C: Clone + PartialEq> Executor<C> {
    /// Starts node `id` on `store` at engine time `now_ms`, with a state machine that holds nothing:
    /// it is restored from the stored snapshot, if any (see the
    /// [module docs](self#crash-and-restart)). `config` should have passed [`Config::validate`].
    pub fn new(id: NodeId, config: &Config, store: DurableStore<C>, now_ms: u64) -> Self {
        Self::start(
            id,
            config.clone(),
            store,
            AppliedLog::default(),
            None,
            now_ms,
        )
    }

    fn start(
        id: NodeId,
        config: Config,
        store: DurableStore<C>,
        mut state_machine: AppliedLog<C>,
        snapshot_check: Option<SnapshotCheck>,
        now_ms: u64,
    ) -> Self {
        if let Some(snapshot) = store.snapshot() {
            if snapshot.meta.last_log_id.index > state_machine.last_applied().index {
                state_machine.restore_on_start(snapshot.meta.clone());
            }
        }
        let recovered = store.recovered_state(state_machine.last_applied().index);
        let mut engine = Engine::new(id, &config, recovered, now_ms);
        if let Some(check) = snapshot_check {
            engine.set_snapshot_check(check);
        }
        Executor {
            engine,
            config,
            store,
            state_machine,
            snapshot_check,
            held: Vec::new(),
            remote_reads: BTreeSet::new(),
            next_remote_read: REMOTE_READ_IDS,
        }
    }

    /// Registers a linearizable read on this node's engine (see [`Engine::read_index`]); it comes
    /// out of a later [`flush`](Self::flush) as [`Effect::ReadReady`] or [`Effect::ReadFailed`].
    /// `id` must be below 2^63 (the ids above are the executor's own, for peers' requests).
    ///
    /// # Errors
    /// [`NotLeader`] if the node does not lead.
    pub fn read(&mut self, id: ReadId, lease: bool) -> Result<(), NotLeader> {
        self.engine.read_index(id, lease)
    }

    // ----- reading -----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.engine.id()
    }

    /// The engine.
    pub fn engine(&self) -> &Engine<C> {
        &self.engine
    }

    /// The engine, to feed it an input that has no reply (time, a proposal, a response, a built
    /// snapshot, ...). Execute what it asks for with [`flush`](Self::flush).
    pub fn engine_mut(&mut self) -> &mut Engine<C> {
        &mut self.engine
    }

    /// What is durable: everything executed so far.
    pub fn durable(&self) -> &DurableStore<C> {
        &self.store
    }

    /// What the state machine holds.
    pub fn state_machine(&self) -> &AppliedLog<C> {
        &self.state_machine
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- inputs -----

    /// Sets the check a snapshot received from the leader must pass (see
    /// [`Engine::set_snapshot_check`]); it stays set across [`crash`](Self::crash) and restart, as
    /// the driver sets it on every start.
    pub fn set_snapshot_check(&mut self, check: SnapshotCheck) {
        self.snapshot_check = Some(check);
        self.engine.set_snapshot_check(check);
    }

    /// Hands a peer's request to the engine and holds the reply: the next [`flush`](Self::flush)
    /// releases it (as [`Effect::Reply`], in the order the requests were received) once what it
    /// acknowledges is durable.
    ///
    /// Returns a copy of the reply, to look at (say, to narrate why a vote was refused) — not to
    /// send: until the flush, what it acknowledges may not be durable. A peer's `ReadIndex` that
    /// the engine takes is answered later, once confirmed (an [`Effect::Reply`] of a later flush):
    /// `None` then.
    pub fn receive(&mut self, request: Request<C>) -> Option<Response> {
        let reply = match request {
            Request::ReadIndex(r) => {
                let id = self.next_remote_read;
                self.next_remote_read = self.next_remote_read.wrapping_add(1);
                match self.engine.read_index(id, r.lease) {
                    Ok(()) => {
                        self.remote_reads.insert(id);
                        return None;
                    }
                    Err(refused) => Response::ReadIndex(ReadIndexResponse {
                        term: self.engine.term(),
                        result: ReadIndexResult::NotLeader {
                            leader_hint: refused.leader_hint,
                        },
                    }),
                }
            }
            Request::Vote(r) => Response::Vote(self.engine.handle_vote_request(r)),
            Request::PreVote(r) => Response::PreVote(self.engine.handle_pre_vote_request(r)),
            Request::TimeoutNow(r) => Response::TimeoutNow(self.engine.handle_timeout_now(r)),
            Request::AppendEntries(r) => {
                Response::AppendEntries(self.engine.handle_append_entries(r))
            }
            Request::InstallSnapshot(r) => {
                Response::InstallSnapshot(self.engine.handle_install_snapshot(r))
            }
        };
        self.held.push(reply.clone());
        Some(reply)
    }

    /// [`receive`](Self::receive), then [`flush`](Self::flush): the reply is among the effects.
    ///
    /// # Errors
    /// As [`flush`](Self::flush).
    pub fn handle_request(
        &mut self,
        request: Request<C>,
    ) -> Result<Executed<C>, ContractViolation> {
        self.receive(request);
        self.flush()
    }

    /// Hands `from`'s answer to a request this node sent to the engine. Execute what it asks for
    /// with [`flush`](Self::flush).
    pub fn handle_response(&mut self, from: NodeId, response: Response) {
        match response {
            Response::Vote(r) => self.engine.handle_vote_response(from, r),
            Response::PreVote(r) => self.engine.handle_pre_vote_response(from, r),
            Response::TimeoutNow(r) => self.engine.handle_timeout_now_response(from, r),
            Response::AppendEntries(r) => self.engine.handle_append_entries_response(from, r),
            Response::InstallSnapshot(r) => self.engine.handle_install_snapshot_response(from, r),
            // The executor forwards no reads: an answer to one is no request of its own.
            Response::ReadIndex(_) => {}
        }
    }

    // ----- executing -----

    /// Executes the engine's outputs until it has nothing more to do, and releases the held
    /// replies, following the executor contract step by step; returns what was done, in order.
    ///
    /// # Errors
    /// A [`ContractViolation`] if an output asks for something storage would refuse, hands out an
    /// entry to apply out of order, or leaves the engine's log, hard state or latest snapshot
    /// different from the stored ones. Effects before the violation have taken place.
    pub fn flush(&mut self) -> Result<Executed<C>, ContractViolation> {
        let mut done = Executed::default();
        loop {
            let out = self.engine.take_output();
            if out.is_empty() && self.held.is_empty() {
                break;
            }
            self.execute(out, &mut done.effects)?;
        }
        self.check_engine_matches_store()?;
        Ok(done)
    }

    /// Executes one output, in the contract's seven steps.
    fn execute(
        &mut self,
        out: Output<C>,
        effects: &mut Vec<Effect<C>>,
    ) -> Result<(), ContractViolation> {
        // 1. The hard state is durable before anything that depends on it.
        if let Some(hard_state) = out.hard_state {
            self.store.save_hard_state(hard_state);
            effects.push(Effect::SaveHardState(hard_state));
        }
        // 2. Messages (a leader's AppendEntries may leave before its own append is durable).
        for (to, request) in out.messages {
            effects.push(Effect::Send { to, request });
        }
        // 3. The snapshot, then the purge it allows.
        let restore = match out.snapshot {
            Some(snapshot) => {
                let meta = snapshot.meta.clone();
                self.store.install_snapshot(snapshot);
                effects.push(Effect::InstallSnapshot {
                    meta: meta.clone(),
                    from_leader: out.restore_snapshot,
                });
                out.restore_snapshot.then_some(meta)
            }
            None => None,
        };
        if let Some(upto) = out.purge_upto {
            self.store.purge(upto)?;
            effects.push(Effect::Purge(upto));
        }
        // 4. Truncate, append, report durable.
        if let Some(from) = out.truncate_from {
            let removed = self.store.truncate(from)?;
            effects.push(Effect::Truncate { from, removed });
        }
        if let Some(last) = out.append.last().map(|e| e.log_id) {
            self.store.append(&out.append)?;
            effects.push(Effect::Append(out.append));
            self.engine.log_persisted(last);
        }
        // 5. The held replies, now that what they acknowledge is durable.
        effects.extend(self.held.drain(..).map(Effect::Reply));
        // 6. Snapshot chunks, read from the store (which holds any snapshot stored in step 3).
        for send in out.snapshot_sends {
            let snapshot = send.meta.last_log_id;
            let chunk_size = self.config.snapshot_chunk_size;
            match self.store.snapshot_chunk(snapshot, send.offset, chunk_size) {
                Some(chunk) => effects.push(Effect::Send {
                    to: send.to,
                    request: Request::InstallSnapshot(send.request(chunk.data, chunk.done)),
                }),
                None => {
                    self.engine.snapshot_send_failed(send.to);
                    effects.push(Effect::SnapshotSendFailed {
                        to: send.to,
                        snapshot,
                    });
                }
            }
        }
        // 7. Restore the state machine from a snapshot received from the leader, then apply.
        if let Some(meta) = restore {
            self.state_machine.restore(meta.clone())?;
            effects.push(Effect::Restore(meta));
        }
        if !out.apply.is_empty() {
            self.state_machine.apply(&out.apply)?;
            effects.push(Effect::Apply(out.apply));
        }
        // Reads depend on none of the steps: a peer's is answered, a caller's reported.
        let term = self.engine.term();
        for ready in out.reads {
            effects.push(if self.remote_reads.remove(&ready.id) {
                Effect::Reply(Response::ReadIndex(ReadIndexResponse {
                    term,
                    result: ReadIndexResult::Ready { index: ready.index },
                }))
            } else {
                Effect::ReadReady(ready)
            });
        }
        for failed in out.reads_failed {
            effects.push(if self.remote_reads.remove(&failed.id) {
                Effect::Reply(Response::ReadIndex(ReadIndexResponse {
                    term,
                    result: ReadIndexResult::NotLeader {
                        leader_hint: failed.leader_hint,
                    },
                }))
            } else {
                Effect::ReadFailed(failed)
            });
        }
        Ok(())
    }

    /// Once everything is executed, the engine's view of what is durable is what the store holds.
    fn check_engine_matches_store(&self) -> Result<(), ContractViolation> {
        let (engine, store) = (&self.engine, &self.store);
        if engine.last_log_id() != store.last_log_id() || engine.entries() != store.entries() {
            return Err(ContractViolation::LogDiverged {
                engine_last: engine.last_log_id(),
                engine_len: engine.entries().len(),
                stored_last: store.last_log_id(),
                stored_len: store.entries().len(),
            });
        }
        if engine.hard_state() != store.hard_state() {
            return Err(ContractViolation::HardStateDiverged {
                engine: engine.hard_state(),
                stored: store.hard_state(),
            });
        }
        let stored_snapshot = store
            .snapshot()
            .map_or(LogId::default(), |s| s.meta.last_log_id);
        if engine.snapshot_meta().last_log_id != stored_snapshot {
            return Err(ContractViolation::SnapshotDiverged {
                engine: engine.snapshot_meta().last_log_id,
                stored: stored_snapshot,
            });
        }
        Ok(())
    }

    // ----- crash -----

    /// Crashes the node: the engine, the held replies and every volatile thing are lost; the store
    /// survives, and so does the state machine's record, for a restart that keeps it.
    pub fn crash(self) -> Crashed<C> {
        Crashed {
            id: self.engine.id(),
            config: self.config,
            store: self.store,
            state_machine: self.state_machine,
            snapshot_check: self.snapshot_check,
        }
    }
}

impl<C: Clone + PartialEq> Crashed<C> {
    /// The crashed node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// What survived the crash.
    pub fn durable(&self) -> &DurableStore<C> {
        &self.store
    }

    /// Restarts the node at engine time `now_ms` with a state machine that lost its state (an
    /// in-memory one): restored from the stored snapshot if there is one, empty otherwise; the
    /// engine applies the committed entries after it again.
    pub fn restart(self, now_ms: u64) -> Executor<C> {
        Executor::start(
            self.id,
            self.config,
            self.store,
            AppliedLog::default(),
            self.snapshot_check,
            now_ms,
        )
    }

    /// Restarts the node at engine time `now_ms` with a state machine that kept its state (a
    /// durable one): it is restored from the stored snapshot only if that is ahead of it, and
    /// nothing it holds is applied again.
    pub fn restart_keeping_state_machine(self, now_ms: u64) -> Executor<C> {
        Executor::start(
            self.id,
            self.config,
            self.store,
            self.state_machine,
            self.snapshot_check,
            now_ms,
        )
    }
}
