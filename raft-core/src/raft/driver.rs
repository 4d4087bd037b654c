//! The driver task: feeds the engine with time, RPCs and proposals, and executes its outputs in the
//! order the ordering rules need (see the [module docs](super)).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::apply::{self, ApplyBatch, ApplyEvent, ApplyMsg};
use super::disk::{Appended, Disk};
use super::figures::Figures;
use super::metrics::{Metrics, NodeStatus};
use super::peers::{PeerSender, RpcOutcome};
use super::reads::Reads;
use super::snapshot_trigger::SnapshotTrigger;
use super::{ApiMsg, WriteReply};
use crate::config::Config;
use crate::engine::{Engine, Output, RecoveredState};
use crate::error::{
    ClientWriteError, InitializeError, StartError, StoppedError, StorageError, TransferError,
};
use crate::message::{
    AppendEntriesResponse, InstallSnapshotResponse, PreVoteResponse, Request, Response,
    TimeoutNowResponse, VoteResponse,
};
use crate::network::RaftNetwork;
use crate::state_machine::StateMachine;
use crate::storage::RaftStorage;
use crate::types::{LogId, LogIndex, Membership, NodeId, Role, Term};

/// How long the loop sleeps when the engine has no deadline the clock can represent (its "never",
/// `u64::MAX` ms): any event wakes the loop earlier, so this only bounds an idle wait.
const NO_DEADLINE_RECHECK: std::time::Duration = std::time::Duration::from_secs(3600);

/// A reply to an incoming RPC, held until the output it depends on is durable.
enum HeldReply {
    Append(
        oneshot::Sender<AppendEntriesResponse>,
        AppendEntriesResponse,
    ),
    Vote(oneshot::Sender<VoteResponse>, VoteResponse),
    PreVote(oneshot::Sender<PreVoteResponse>, PreVoteResponse),
    TimeoutNow(oneshot::Sender<TimeoutNowResponse>, TimeoutNowResponse),
    Snapshot(
        oneshot::Sender<InstallSnapshotResponse>,
        InstallSnapshotResponse,
    ),
    Initialize(
        oneshot::Sender<Result<(), InitializeError>>,
        Result<(), InitializeError>,
    ),
}

impl HeldReply {
    fn send(self) {
        // The caller may have given up (timeout); that is not an error here.
        match self {
            HeldReply::Append(tx, r) => {
                let _ = tx.send(r);
            }
            HeldReply::Vote(tx, r) => {
                let _ = tx.send(r);
            }
            HeldReply::PreVote(tx, r) => {
                let _ = tx.send(r);
            }
            HeldReply::TimeoutNow(tx, r) => {
                let _ = tx.send(r);
            }
            HeldReply::Snapshot(tx, r) => {
                let _ = tx.send(r);
            }
            HeldReply::Initialize(tx, r) => {
                let _ = tx.send(r);
            }
        }
    }
}

type SnapshotWaiter = oneshot::Sender<Option<LogId>>;

/// Why the loop ends.
enum Stop {
    Requested,
    Fatal(String),
}

pub(crate) struct Driver<SM: StateMachine, S, N> {
    id: NodeId,
    config: Config,
    engine: Engine<SM::Command>,
    /// The storage, with log appends in the background (see [`Disk`]).
    disk: Disk<SM::Command, S>,
    network: Arc<N>,
    epoch: Instant,

    api_rx: mpsc::UnboundedReceiver<ApiMsg<SM>>,
    rpc_tx: mpsc::UnboundedSender<RpcOutcome>,
    rpc_rx: mpsc::UnboundedReceiver<RpcOutcome>,
    apply_tx: mpsc::UnboundedSender<ApplyMsg<SM>>,
    apply_events: mpsc::UnboundedReceiver<ApplyEvent>,
    apply_task: JoinHandle<()>,

    peers: BTreeMap<NodeId, PeerSender<SM::Command>>,
    /// Linearizable reads in progress.
    reads: Reads,
    /// The membership last given to the network (`RaftNetwork::membership_changed`).
    network_membership: Membership,
    held_replies: Vec<HeldReply>,
    /// Replies released by a flush, each waiting until every entry handed to storage before it is
    /// durable (the index of the last of them): rule 2.
    replies_waiting: VecDeque<(LogIndex, HeldReply)>,
    /// Committed entries to apply, each batch waiting until its entries are durable here (the
    /// index it waits for), in log order.
    applies_waiting: VecDeque<(LogIndex, ApplyBatch<SM>)>,
    /// Client writes waiting for their entry to be applied, by log index.
    pending: VecDeque<(LogId, WriteReply<SM>)>,
    /// Once this node no longer leads with writes pending: when they are given up on (failed with
    /// `OutcomeUnknown`) if their fate has not been learned by then.
    pending_deadline: Option<Instant>,
    last_applied: LogIndex,
    /// The index of the last client write this node accepted: while `last_applied` is below it,
    /// some write is still in flight (see [`gather_ready_writes`]).
    last_write_accepted: LogIndex,
    /// Whether the apply task is building a snapshot.
    snapshot_building: bool,
    /// Decides when the policy asks for a snapshot.
    snapshot_trigger: SnapshotTrigger,
    /// Callers of `trigger_snapshot` waiting for the build in progress.
    snapshot_waiters: Vec<SnapshotWaiter>,
    /// Callers who asked while a build was in progress: they get the next one.
    snapshot_waiters_next: Vec<SnapshotWaiter>,
    /// Callers answered once the current flush has stored the snapshot they asked for.
    snapshot_answers: Vec<SnapshotWaiter>,
    metrics_tx: watch::Sender<Metrics>,
    /// Counters and latencies for `Metrics`.
    figures: Figures,
    /// The node's span (`raft{node=..}`): the apply task's, and the parent of each term's.
    span: tracing::Span,
    /// `term{term=..}` under `span`, made anew when the term changes (a field recorded again on
    /// one span would be appended to it, and log lines would grow with every term).
    term_span: tracing::Span,
    /// The term `term_span` names.
    span_term: Term,
}

impl<SM, S, N> Driver<SM, S, N>
where
    SM: StateMachine,
    S: RaftStorage<SM::Command>,
    N: RaftNetwork<SM::Command>,
{
    pub(crate) async fn open(
        id: NodeId,
        config: Config,
        mut storage: S,
        network: N,
        mut state_machine: SM,
        api_rx: mpsc::UnboundedReceiver<ApiMsg<SM>>,
    ) -> Result<(Self, watch::Receiver<Metrics>), StartError> {
        let hard_state = storage.hard_state().await?;
        let log_state = storage.log_state().await?;
        let snapshot = storage.snapshot().await?;
        let mut applied_id = state_machine.last_applied().await?;
        let snapshot_trigger = SnapshotTrigger::new(
            config.snapshot_policy,
            snapshot.as_ref().map_or(0, |s| s.meta.last_log_id.index),
            snapshot.as_ref().map_or(0, |s| data_len(&s.data)),
        );
        let snapshot_meta = match snapshot {
            Some(snap) => {
                if snap.meta.last_log_id.index < log_state.last_purged.index {
                    return Err(StartError::Storage(StorageError::Corrupted(format!(
                        "the log is purged up to {} but the snapshot covers only up to {}",
                        log_state.last_purged, snap.meta.last_log_id
                    ))));
                }
                if snap.meta.last_log_id.index > applied_id.map_or(0, |l| l.index) {
                    state_machine.restore(&snap.meta, &snap.data).await?;
                    applied_id = Some(snap.meta.last_log_id);
                }
                Some(snap.meta)
            }
            None if log_state.last_purged.index > 0 => {
                return Err(StartError::Storage(StorageError::Corrupted(format!(
                    "the log is purged up to {} but there is no snapshot",
                    log_state.last_purged
                ))));
            }
            None => None,
        };
        let applied = applied_id.map_or(0, |l| l.index);
        let first = log_state.last_purged.index + 1;
        let entries = storage
            .entries(first, log_state.last_log_id.index + 1)
            .await?;
        if entries.len() as u64 != log_state.last_log_id.index + 1 - first {
            return Err(StartError::Storage(StorageError::Corrupted(format!(
                "log_state says entries {first}..={} but storage returned {}",
                log_state.last_log_id.index,
                entries.len()
            ))));
        }
        let lost_entries = storage.lost_entries_on_open().await?;
        if lost_entries {
            tracing::warn!(
                last = %log_state.last_log_id,
                "storage lost entries it may have acknowledged: not voting until caught up with a leader"
            );
        }
        let recovered = RecoveredState {
            hard_state,
            log_base: log_state.last_purged,
            snapshot: snapshot_meta,
            entries,
            applied_index: applied,
            lost_entries,
        };
        recovered
            .check()
            .map_err(|e| StartError::Storage(StorageError::Corrupted(e)))?;
        let has_history = log_state.last_log_id.index > 0 || recovered.snapshot.is_some();
        let epoch = Instant::now();
        let mut engine = Engine::new(id, &config, recovered, 0);
        if has_history && engine.membership().voters.is_empty() {
            return Err(StartError::Storage(StorageError::Corrupted(format!(
                "the log ends at {} but holds no membership (nor does a snapshot): the entries that \
                 made this node a member are lost",
                log_state.last_log_id
            ))));
        }
        engine.set_snapshot_check(check_snapshot::<SM>);
        engine.set_entry_size(SM::command_size);
        let (rpc_tx, rpc_rx) = mpsc::unbounded_channel();
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let (apply_events_tx, apply_events) = mpsc::unbounded_channel();
        let (metrics_tx, metrics_rx) = watch::channel(Metrics {
            id,
            ..Metrics::default()
        });
        let span = tracing::info_span!("raft", node = id);
        let term_span = term_span(&span, hard_state.term);
        let apply_task = tokio::spawn(
            apply::run(state_machine, applied_id, apply_rx, apply_events_tx)
                .instrument(span.clone()),
        );
        let mut driver = Driver {
            id,
            config,
            engine,
            disk: Disk::new(storage),
            network: Arc::new(network),
            epoch,
            api_rx,
            rpc_tx,
            rpc_rx,
            apply_tx,
            apply_events,
            apply_task,
            peers: BTreeMap::new(),
            network_membership: Membership::default(),
            reads: Reads::default(),
            held_replies: Vec::new(),
            replies_waiting: VecDeque::new(),
            applies_waiting: VecDeque::new(),
            pending: VecDeque::new(),
            pending_deadline: None,
            last_applied: applied,
            last_write_accepted: 0,
            snapshot_building: false,
            snapshot_trigger,
            snapshot_waiters: Vec::new(),
            snapshot_waiters_next: Vec::new(),
            snapshot_answers: Vec::new(),
            metrics_tx,
            figures: Figures::default(),
            span,
            term_span,
            span_term: hard_state.term,
        };
        driver.sync_network_membership();
        driver.publish_metrics();
        Ok((driver, metrics_rx))
    }

    pub(crate) async fn run(mut self) {
        let stop = self.main_loop().await;
        let reason = match stop {
            Stop::Requested => {
                // Entries handed to storage are made durable before the node lets go of it (a
                // dropped append could leave half a batch behind).
                if let Err(e) = self.disk.idle(|_| {}).await {
                    tracing::warn!(error = %e, "storage failed while shutting down");
                }
                "node was shut down".to_string()
            }
            Stop::Fatal(reason) => {
                let _enter = self.term_span.enter();
                tracing::error!(%reason, "node stopped on a fatal error");
                reason
            }
        };
        let stopped = || ClientWriteError::Stopped(StoppedError(reason.clone()));
        for (_, reply) in self.pending.drain(..) {
            let _ = reply.send(Err(stopped()));
        }
        self.api_rx.close();
        while let Ok(msg) = self.api_rx.try_recv() {
            if let ApiMsg::ClientWrite {
                appended, reply, ..
            } = msg
            {
                match appended {
                    Some(appended) => drop(appended.send(Err(stopped()))),
                    None => drop(reply.send(Err(stopped()))),
                }
            }
        }
        // Stop the peers and let the apply task finish what it was given, so the state machine is
        // released before `shutdown` returns.
        self.peers.clear();
        self.held_replies.clear();
        self.replies_waiting.clear();
        self.applies_waiting.clear();
        self.metrics_tx
            .send_modify(|m| m.status = NodeStatus::Stopped(reason));
        let (closed_tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.apply_tx, closed_tx));
        let _ = (&mut self.apply_task).await;
    }

    async fn main_loop(&mut self) -> Stop {
        // One timer for the whole loop, moved only when the engine's deadline moves: creating and
        // dropping a `Sleep` per iteration registered and removed a timer entry every batch.
        let timer = tokio::time::sleep_until(self.epoch);
        tokio::pin!(timer);
        loop {
            let span = self.term_span.clone();
            if let Err(stop) = self.run_once(timer.as_mut()).instrument(span).await {
                return stop;
            }
        }
    }

    /// One turn of the loop: waits for the first event, folds in what else is queued, ticks the
    /// engine and executes its outputs.
    async fn run_once(
        &mut self,
        mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Result<(), Stop> {
        let wait = std::time::Duration::from_millis(self.engine.next_deadline());
        let deadline = self
            .epoch
            .checked_add(wait)
            .unwrap_or_else(|| Instant::now() + NO_DEADLINE_RECHECK);
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        self.figures.new_turn();
        tokio::select! {
            biased;
            persisted = self.disk.completed(), if self.disk.busy() => match persisted {
                Ok(last) => self.on_persisted(last),
                Err(e) => return Err(Stop::Fatal(format!("storage failed: {e}"))),
            },
            ev = self.apply_events.recv() => match ev {
                Some(ev) => self.on_apply_event(ev)?,
                None => return Err(Stop::Fatal("apply task ended".into())),
            },
            outcome = self.rpc_rx.recv() => {
                if let Some(o) = outcome { self.on_rpc_outcome(o); }
            }
            msg = self.api_rx.recv() => match msg {
                Some(msg) => {
                    // With other writes in flight, more are likely on their way: let the tasks
                    // that are ready run first, so that their writes join this batch.
                    let gather = matches!(msg, ApiMsg::ClientWrite { .. })
                        && self.last_write_accepted > self.last_applied;
                    self.on_api(msg)?;
                    if gather {
                        gather_ready_writes().await;
                    }
                }
                None => return Err(Stop::Requested),
            },
            _ = &mut timer => {}
        }
        // Fold whatever else is already queued into the same batch.
        self.drain_queued()?;
        let now = self.now_ms();
        self.engine.tick(now);
        self.flush()
            .await
            .map_err(|e| Stop::Fatal(format!("storage failed: {e}")))
    }

    fn drain_queued(&mut self) -> Result<(), Stop> {
        let budget = self.config.max_batch_proposals;
        let mut taken = 0;
        while taken < budget {
            let mut progressed = false;
            while let Ok(ev) = self.apply_events.try_recv() {
                self.on_apply_event(ev)?;
                progressed = true;
            }
            while let Ok(o) = self.rpc_rx.try_recv() {
                self.on_rpc_outcome(o);
                progressed = true;
            }
            while taken < budget {
                match self.api_rx.try_recv() {
                    Ok(msg) => {
                        self.on_api(msg)?;
                        taken += 1;
                        progressed = true;
                    }
                    Err(_) => break,
                }
            }
            if !progressed {
                break;
            }
        }
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn on_api(&mut self, msg: ApiMsg<SM>) -> Result<(), Stop> {
        // Time moves, but no timer fires before the message is handled (that is the tick after the
        // batch): a follower briefly stalled, say on a slow fsync, must not campaign with its
        // leader's AppendEntries already in hand. A proposal does not depend on the time: a batch
        // of client writes reads no clock.
        if !matches!(msg, ApiMsg::ClientWrite { .. }) {
            self.engine.advance_clock(self.now_ms());
        }
        match msg {
            ApiMsg::ClientWrite {
                command,
                appended,
                reply,
            } => match self.propose(command) {
                Ok(log_id) => {
                    self.figures.proposal_accepted(log_id);
                    self.last_write_accepted = log_id.index;
                    // Writes of an earlier leadership at this index or above were overwritten in
                    // this node's log: they can never commit.
                    self.fail_pending(log_id.index..=LogIndex::MAX);
                    if let Some(appended) = appended {
                        let _ = appended.send(Ok(log_id));
                    }
                    self.pending.push_back((log_id, reply));
                }
                Err(refused) => {
                    self.figures.proposal_refused(&refused);
                    match appended {
                        Some(appended) => drop(appended.send(Err(refused))),
                        None => drop(reply.send(Err(refused))),
                    }
                }
            },
            ApiMsg::AppendEntries { request, reply } => {
                let resp = self.engine.handle_append_entries(*request);
                self.held_replies.push(HeldReply::Append(reply, resp));
            }
            ApiMsg::Vote { request, reply } => {
                let resp = self.engine.handle_vote_request(request);
                self.held_replies.push(HeldReply::Vote(reply, resp));
            }
            ApiMsg::PreVote { request, reply } => {
                // Nothing to persist for it, but released with the others, after the flush: the
                // same order as every reply, which the executor contract states once.
                let resp = self.engine.handle_pre_vote_request(request);
                self.held_replies.push(HeldReply::PreVote(reply, resp));
            }
            ApiMsg::TimeoutNow { request, reply } => {
                let resp = self.engine.handle_timeout_now(request);
                self.held_replies.push(HeldReply::TimeoutNow(reply, resp));
            }
            ApiMsg::ChangeMembership { change, reply } => {
                let started = self.engine.change_membership(*change).map(|appended| {
                    appended.map(|log_id| (log_id, self.engine.membership().leave_joint()))
                });
                let _ = reply.send(started);
            }
            ApiMsg::Read { lease, reply } => self.read(lease, reply),
            ApiMsg::ReadIndexRpc { request, reply } => {
                let id = self.reads.register_remote(reply);
                if let Err(refused) = self.engine.read_index(id, request.lease) {
                    self.reads
                        .refuse(id, self.engine.term(), refused.leader_hint);
                }
            }
            ApiMsg::TransferLeadership { to, reply } => {
                let _ = reply.send(self.transfer_leadership(to));
            }
            ApiMsg::InstallSnapshot { request, reply } => {
                let resp = self.engine.handle_install_snapshot(*request);
                self.held_replies.push(HeldReply::Snapshot(reply, resp));
            }
            ApiMsg::TriggerSnapshot { reply } => {
                if self.snapshot_building {
                    self.snapshot_waiters_next.push(reply);
                } else {
                    self.snapshot_waiters.push(reply);
                    self.start_snapshot();
                }
            }
            ApiMsg::Initialize { membership, reply } => {
                // Answered once the membership entry is durable.
                let result = self.engine.initialize(*membership);
                self.held_replies.push(HeldReply::Initialize(reply, result));
            }
            ApiMsg::Shutdown => return Err(Stop::Requested),
        }
        Ok(())
    }

    /// A linearizable read: registered with the engine on the leader, forwarded to the leader on a
    /// follower (in batches: one `ReadIndex` RPC in flight at a time).
    fn read(&mut self, lease: bool, reply: super::reads::ReadReply) {
        if self.engine.role() == Role::Leader {
            let id = self.reads.register_local(reply);
            if let Err(refused) = self.engine.read_index(id, lease) {
                self.reads
                    .refuse(id, self.engine.term(), refused.leader_hint);
            }
            return;
        }
        match self.engine.leader() {
            Some(leader) if leader != self.id => {
                let request = self
                    .reads
                    .forward(lease, reply, self.engine.term(), self.id);
                if let Some(request) = request {
                    self.peer(leader).send(Request::ReadIndex(request));
                }
            }
            leader_hint => {
                let _ = reply.send(Err(crate::error::ReadError::NotLeader { leader_hint }));
            }
        }
    }

    /// The leader answered this follower's batch of reads (or the RPC failed): answers them, and
    /// sends the next batch to the leader known now.
    fn read_forward_answered(&mut self, answer: Result<crate::message::ReadIndexResponse, String>) {
        let next =
            self.reads
                .forward_answered(answer, self.last_applied, self.engine.term(), self.id);
        if let Some(request) = next {
            match self.engine.leader() {
                Some(leader) if leader != self.id => {
                    self.peer(leader).send(Request::ReadIndex(request));
                }
                leader_hint => {
                    // Nobody to ask: the batch fails like an unanswered one.
                    let _ = self.reads.forward_answered(
                        Err("no leader to ask".into()),
                        self.last_applied,
                        self.engine.term(),
                        self.id,
                    );
                    self.reads.fail_queued_forwards(leader_hint);
                }
            }
        }
    }

    /// Proposes a client's command, unless it is too large to ever cross the network.
    fn propose(&mut self, command: SM::Command) -> Result<LogId, ClientWriteError> {
        let size = SM::command_size(&command);
        let max = self.config.max_entry_bytes;
        if size > max {
            return Err(ClientWriteError::TooLarge { size, max });
        }
        self.engine
            .propose(command)
            .map_err(|e| ClientWriteError::NotLeader {
                leader_hint: e.leader_hint,
            })
    }

    /// Starts a leadership transfer to `to`, or to the most up-to-date follower; returns the target
    /// and how many transfers were abandoned before this one (to tell when this one is).
    fn transfer_leadership(&mut self, to: Option<NodeId>) -> Result<(NodeId, u64), TransferError> {
        if self.engine.role() != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.engine.leader(),
            });
        }
        let target = match to {
            Some(to) => to,
            None => self
                .engine
                .transferring_to()
                .or_else(|| self.engine.transfer_target())
                .ok_or(TransferError::NoTarget)?,
        };
        let abandoned_before = self.engine.election_stats().transfers_abandoned;
        self.engine.transfer_leadership(target)?;
        Ok((target, abandoned_before))
    }

    fn on_rpc_outcome(&mut self, o: RpcOutcome) {
        // A step-down on a higher term restarts the election timeout: from now, not from the last
        // tick, or the node would campaign at once.
        self.engine.advance_clock(self.now_ms());
        match o.result {
            Ok(Response::AppendEntries(r)) => self.engine.handle_append_entries_response(o.from, r),
            Ok(Response::Vote(r)) => self.engine.handle_vote_response(o.from, r),
            Ok(Response::PreVote(r)) => self.engine.handle_pre_vote_response(o.from, r),
            Ok(Response::TimeoutNow(r)) => self.engine.handle_timeout_now_response(o.from, r),
            Ok(Response::InstallSnapshot(r)) => {
                self.engine.handle_install_snapshot_response(o.from, r)
            }
            Ok(Response::ReadIndex(r)) => self.read_forward_answered(Ok(r)),
            Err(e) if o.reads => {
                tracing::debug!(peer = o.from, error = %e, "read index request failed");
                self.read_forward_answered(Err(e.to_string()));
            }
            Err(e) => {
                tracing::debug!(peer = o.from, error = %e, "rpc failed");
                if o.replicates {
                    self.engine.handle_unreachable(o.from);
                }
            }
        }
    }

    fn on_apply_event(&mut self, ev: ApplyEvent) -> Result<(), Stop> {
        match ev {
            ApplyEvent::Applied(index, took) => {
                if let Some(took) = took {
                    self.figures.applied(took);
                }
                self.last_applied = self.last_applied.max(index);
                self.reads.applied(self.last_applied);
                let engine = &self.engine;
                let due = self.snapshot_trigger.applied(
                    self.last_applied,
                    engine.snapshot_meta().last_log_id.index,
                    |from, to| engine.log_bytes(from, to),
                );
                if due && !self.snapshot_building {
                    self.start_snapshot();
                }
                Ok(())
            }
            ApplyEvent::SnapshotBuilt(built) => {
                self.snapshot_building = false;
                if let Some((last_log_id, data)) = built {
                    if self.engine.snapshot_built(last_log_id, data) {
                        self.figures.snapshot_built();
                        tracing::info!(snapshot = %last_log_id, "snapshot built");
                    }
                }
                // Answered once this batch's flush has stored the snapshot.
                self.snapshot_answers.append(&mut self.snapshot_waiters);
                if !self.snapshot_waiters_next.is_empty() {
                    std::mem::swap(&mut self.snapshot_waiters, &mut self.snapshot_waiters_next);
                    self.start_snapshot();
                }
                Ok(())
            }
            ApplyEvent::Failed(e) => Err(Stop::Fatal(e.to_string())),
        }
    }

    /// Asks the apply task for a snapshot of the state machine as of its last applied entry.
    fn start_snapshot(&mut self) {
        self.snapshot_building = true;
        let _ = self.apply_tx.send(ApplyMsg::BuildSnapshot);
    }

    /// Executes the engine's outputs until it has nothing more to do.
    ///
    /// An output that only sends messages, appends entries, releases replies and applies committed
    /// entries (the steady state, on leader and followers) does not wait for its append: the
    /// entries go to [`Disk`], and its replies and applies wait in `replies_waiting` /
    /// `applies_waiting` until the entries before them are durable ([`on_persisted`]). An output
    /// that saves the hard state, stores a snapshot, purges, truncates or reads snapshot chunks
    /// first waits until storage is idle and is executed in full, step by step.
    ///
    /// [`on_persisted`]: Self::on_persisted
    async fn flush(&mut self) -> Result<(), StorageError> {
        loop {
            let out: Output<SM::Command> = self.engine.take_output();
            if out.is_empty() && self.held_replies.is_empty() {
                break;
            }
            // Reads depend on nothing this output persists.
            let term = self.engine.term();
            for ready in out.reads.iter().copied() {
                self.reads.confirmed(ready, term, self.last_applied);
            }
            for failed in out.reads_failed.iter().copied() {
                self.reads.failed(failed, term);
            }
            let in_order = out.hard_state.is_some()
                || out.snapshot.is_some()
                || out.purge_upto.is_some()
                || out.truncate_from.is_some()
                || !out.snapshot_sends.is_empty();
            if in_order {
                self.execute_in_order(out).await?;
            } else {
                self.execute_pipelined(out)?;
            }
        }
        if !self.snapshot_answers.is_empty() {
            let current = self.engine.snapshot_meta().last_log_id;
            let current = (current.index > 0).then_some(current);
            for waiter in self.snapshot_answers.drain(..) {
                let _ = waiter.send(current);
            }
        }
        self.check_pending_deadline();
        self.publish_metrics();
        Ok(())
    }

    /// Executes an output that writes only log entries: messages now (rule 3: a leader's
    /// AppendEntries leave before its own append is durable), entries handed to the disk, replies
    /// and applies held until what precedes them is durable (rule 2).
    fn execute_pipelined(&mut self, out: Output<SM::Command>) -> Result<(), StorageError> {
        self.sync_network_membership();
        for (to, request) in out.messages {
            self.peer(to).send(request);
        }
        if !out.append.is_empty() {
            self.disk.append(out.append);
            // A storage that appends at once (in memory) costs no extra turn of the loop.
            if let Some(appended) = self.disk.poll_now() {
                self.on_persisted(appended?);
            }
        }
        let submitted = self.disk.submitted();
        for reply in self.held_replies.drain(..) {
            self.replies_waiting.push_back((submitted, reply));
        }
        if !out.apply.is_empty() {
            let last = out.apply[out.apply.len() - 1].log_id.index;
            let batch = self.apply_batch(out.apply);
            self.applies_waiting.push_back((last.min(submitted), batch));
        }
        self.release_durable();
        Ok(())
    }

    /// Executes an output step by step in the executor contract's order, with storage idle.
    async fn execute_in_order(&mut self, out: Output<SM::Command>) -> Result<(), StorageError> {
        self.wait_idle().await?;
        // Rule 1: the term and vote are durable before anything that depends on them leaves.
        if let Some(hs) = &out.hard_state {
            self.disk.storage()?.save_hard_state(hs).await?;
            if hs.term != self.span_term {
                self.span_term = hs.term;
                self.term_span = term_span(&self.span, hs.term);
            }
        }
        self.sync_network_membership();
        // Rule 3: a leader's AppendEntries may leave before its own append is durable.
        for (to, request) in out.messages {
            self.peer(to).send(request);
        }
        let restore = match out.snapshot {
            Some(snapshot) => {
                let engine = &self.engine;
                self.snapshot_trigger.snapshot_stored(
                    snapshot.meta.last_log_id.index,
                    data_len(&snapshot.data),
                    |from, to| engine.log_bytes(from, to),
                );
                // A snapshot from the leader is also restored (step 7): keep a copy for that.
                let restore = out.restore_snapshot.then(|| snapshot.clone());
                self.disk.storage()?.install_snapshot(snapshot).await?;
                restore
            }
            None => None,
        };
        if let Some(upto) = out.purge_upto {
            self.disk.storage()?.purge(upto).await?;
        }
        if let Some(from) = out.truncate_from {
            self.disk.storage()?.truncate(from).await?;
        }
        if !out.append.is_empty() {
            self.disk.append(out.append);
            self.wait_idle().await?;
        }
        // Rule 2: replies go out only once what they acknowledge is durable.
        for reply in self.held_replies.drain(..) {
            reply.send();
        }
        for send in out.snapshot_sends {
            let id = send.meta.last_log_id;
            let chunk_size = self.config.snapshot_chunk_size;
            match self
                .disk
                .storage()?
                .snapshot_chunk(id, send.offset, chunk_size)
                .await?
            {
                Some(chunk) => {
                    let request = send.request(chunk.data, chunk.done);
                    self.peer(send.to).send(Request::InstallSnapshot(request));
                }
                None => self.engine.snapshot_send_failed(send.to),
            }
        }
        if let Some(snapshot) = restore {
            // Entries the snapshot covers are never applied one by one here: whether a
            // pending write among them committed cannot be told.
            self.fail_pending(0..=snapshot.meta.last_log_id.index);
            self.figures.snapshot_installed();
            let _ = self.apply_tx.send(ApplyMsg::Restore(snapshot));
        }
        if !out.apply.is_empty() {
            let batch = self.apply_batch(out.apply);
            let _ = self.apply_tx.send(ApplyMsg::Apply(batch));
        }
        Ok(())
    }

    /// Waits until every entry handed to storage is durable, and releases what waited for them.
    async fn wait_idle(&mut self) -> Result<(), StorageError> {
        let figures = &mut self.figures;
        let mut persisted = None;
        self.disk
            .idle(|appended| {
                figures.appended(appended.took);
                persisted = Some(appended.last);
            })
            .await?;
        if let Some(last) = persisted {
            self.engine.log_persisted(last);
        }
        for (_, reply) in self.replies_waiting.drain(..) {
            reply.send();
        }
        for (_, batch) in self.applies_waiting.drain(..) {
            let _ = self.apply_tx.send(ApplyMsg::Apply(batch));
        }
        Ok(())
    }

    /// An append finished: the engine learns it (a leader may commit), and the replies and
    /// applies that waited for those entries go out.
    fn on_persisted(&mut self, appended: Appended) {
        self.figures.appended(appended.took);
        self.engine.log_persisted(appended.last);
        self.release_durable();
    }

    /// Sends the waiting replies and applies whose entries are all durable, in order.
    fn release_durable(&mut self) {
        let durable = self.disk.durable();
        while self
            .replies_waiting
            .front()
            .is_some_and(|(needs, _)| *needs <= durable)
        {
            if let Some((_, reply)) = self.replies_waiting.pop_front() {
                reply.send();
            }
        }
        while self
            .applies_waiting
            .front()
            .is_some_and(|(needs, _)| *needs <= durable)
        {
            if let Some((_, batch)) = self.applies_waiting.pop_front() {
                let _ = self.apply_tx.send(ApplyMsg::Apply(batch));
            }
        }
    }

    /// The batch that applies `entries`, with the pending client writes it answers.
    fn apply_batch(&mut self, entries: Vec<crate::types::Entry<SM::Command>>) -> ApplyBatch<SM> {
        let mut replies = Vec::new();
        let first = entries[0].log_id.index;
        let last = entries[entries.len() - 1].log_id.index;
        self.figures.committed(&entries);
        while self.pending.front().is_some_and(|(id, _)| id.index <= last) {
            let Some((log_id, reply)) = self.pending.pop_front() else {
                break;
            };
            // While this node leads, its proposals are applied in the batch that commits them. A
            // proposal below the batch, or whose slot holds another entry, was not committed.
            let slot = log_id.index.checked_sub(first).map(|pos| pos as usize);
            match slot {
                Some(pos) if entries[pos].log_id == log_id => replies.push((pos, reply)),
                _ => {
                    self.figures.outcome_unknown(1);
                    let _ = reply.send(Err(ClientWriteError::OutcomeUnknown {
                        leader_hint: self.engine.leader(),
                    }));
                }
            }
        }
        ApplyBatch { entries, replies }
    }

    /// A deposed leader keeps its pending writes: most were replicated before it stepped down (a
    /// leadership transfer replicates everything first), and the new leader commits them, so this
    /// node applies them and answers success. A write whose slot gets another entry fails when that
    /// entry is applied ([`apply_batch`](Self::apply_batch)). Whatever is still pending
    /// `2 x election_timeout_max` after the node stopped leading is failed with `OutcomeUnknown`:
    /// a node cut off from the new leader would otherwise keep its callers waiting.
    fn check_pending_deadline(&mut self) {
        if self.pending.is_empty() || self.engine.role() == Role::Leader {
            self.pending_deadline = None;
            return;
        }
        let now = Instant::now();
        let deadline = *self
            .pending_deadline
            .get_or_insert_with(|| now + self.config.election_timeout_max.saturating_mul(2));
        if now >= deadline {
            self.pending_deadline = None;
            self.fail_pending(0..=LogIndex::MAX);
        }
    }

    /// Fails the pending writes whose index is in `indexes` with `OutcomeUnknown`. The queue is
    /// ordered by index, so they are one run of it.
    fn fail_pending(&mut self, indexes: std::ops::RangeInclusive<LogIndex>) {
        let leader_hint = self.engine.leader();
        let start = self
            .pending
            .partition_point(|(id, _)| id.index < *indexes.start());
        let end = self
            .pending
            .partition_point(|(id, _)| id.index <= *indexes.end());
        self.figures.outcome_unknown(end.saturating_sub(start));
        for (_, reply) in self.pending.drain(start..end.max(start)) {
            let _ = reply.send(Err(ClientWriteError::OutcomeUnknown { leader_hint }));
        }
    }

    /// Gives the network the membership now in force if it changed (so it knows a new member's
    /// address before the first message to it), and stops the peer tasks of nodes no longer members.
    fn sync_network_membership(&mut self) {
        let membership = self.engine.membership();
        if *membership == self.network_membership {
            return;
        }
        self.network.membership_changed(membership);
        let members = membership.members();
        // A node that is not a member may still be sent a message (a vote request from a candidate
        // whose log says otherwise); its peer task is made again then.
        self.peers.retain(|id, _| members.contains(id));
        self.network_membership = membership.clone();
    }

    fn peer(&mut self, to: NodeId) -> &PeerSender<SM::Command> {
        let network = &self.network;
        let rpc_tx = &self.rpc_tx;
        let timeout = self.config.rpc_timeout;
        let span = &self.span;
        self.peers.entry(to).or_insert_with(|| {
            PeerSender::spawn(to, Arc::clone(network), timeout, rpc_tx.clone(), span)
        })
    }

    /// Publishes the metrics if anything changed. Runs after every batch, so it updates the published
    /// value in place and allocates only when the membership or the set of followers changes (building
    /// a fresh `Metrics` cloned the membership and a map each time).
    fn publish_metrics(&mut self) {
        let engine = &self.engine;
        let last_applied = self.last_applied;
        let id = self.id;
        let figures = &mut self.figures;
        self.metrics_tx.send_if_modified(|m| {
            let mut changed = false;
            changed |= update(&mut m.id, id);
            changed |= update(&mut m.status, NodeStatus::Running);
            changed |= update(&mut m.role, engine.role());
            changed |= update(&mut m.current_term, engine.term());
            changed |= update(&mut m.current_leader, engine.leader());
            changed |= update(&mut m.last_log_id, engine.last_log_id());
            changed |= update(&mut m.commit_index, engine.commit_index());
            changed |= update(&mut m.last_applied, last_applied);
            changed |= update(&mut m.snapshot, engine.snapshot_meta().last_log_id);
            changed |= update(&mut m.log_entries, engine.entries().len() as u64);
            changed |= update(&mut m.followers_repaired, engine.followers_repaired());
            changed |= update(&mut m.elections, engine.election_stats());
            changed |= update(&mut m.transferring_to, engine.transferring_to());
            changed |= figures.publish(m, engine.term(), engine.leader());
            changed |= update(&mut m.membership_index, engine.membership_index());
            if m.membership != *engine.membership() {
                m.membership = engine.membership().clone();
                changed = true;
            }
            let progress = engine.progress();
            let same_followers =
                m.replication.len() == progress.len() && m.replication.keys().eq(progress.keys());
            if same_followers {
                for (slot, p) in m.replication.values_mut().zip(progress.values()) {
                    changed |= update(slot, p.match_index);
                }
            } else {
                m.replication = progress
                    .iter()
                    .map(|(&id, p)| (id, p.match_index))
                    .collect();
                changed = true;
            }
            changed
        });
    }
}

/// Lets every task that is ready to run on this worker run before the driver goes on, once.
///
/// Tokio's multi-thread scheduler runs a task woken by the running task next (its "LIFO slot"), so
/// the first client write of a burst woke the driver, which then took a batch of one while the
/// other clients waited behind it: on one worker, 256 clients got about 4 writes per batch where
/// the current-thread runtime, which queues wake-ups in order, got 126. A yield puts the driver
/// behind the tasks already queued: tokio wakes a yielded task once the worker's queue is empty, or
/// at its next periodic check of timers and I/O (every 61 tasks by default) if that comes first.
/// Only done while another write is in flight (accepted, not yet applied): a lone writer would pay
/// a turn of the scheduler for nothing (about 8% of a write on two workers).
async fn gather_ready_writes() {
    tokio::task::yield_now().await;
}

/// The length of a snapshot's data, for the snapshot policy.
fn data_len(data: &[u8]) -> u64 {
    u64::try_from(data.len()).unwrap_or(u64::MAX)
}

/// The state machine's check of a received snapshot, as the engine takes it.
fn check_snapshot<SM: StateMachine>(
    meta: &crate::types::SnapshotMeta,
    data: &[u8],
) -> Result<(), String> {
    SM::check_snapshot(meta, data).map_err(|e| e.to_string())
}

/// The span of `term` on node span `node`.
fn term_span(node: &tracing::Span, term: Term) -> tracing::Span {
    tracing::info_span!(parent: node, "term", term)
}

/// Sets `*slot` to `value`; returns whether it changed.
pub(super) fn update<T: PartialEq>(slot: &mut T, value: T) -> bool {
    if *slot == value {
        false
    } else {
        *slot = value;
        true
    }
}
