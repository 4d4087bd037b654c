//! Seeded randomized simulation: per seed, a cluster of 3 or 5 nodes, concurrent clients (writers,
//! and in two profiles readers), and a schedule of partitions, isolations, crashes, restarts, heals, message-fault changes (for all
//! messages, or for snapshot chunks only) and manual snapshots, all drawn from the seed; the harness
//! checks the Raft properties along the way and at the end.
//!
//! Every seed runs with snapshots on and a small threshold (a snapshot every 5 to 30 applied entries,
//! 0 to 10 entries kept before it, chunks of 16 to 64 bytes, so a transfer takes several chunks):
//! compaction and InstallSnapshot race with partitions, crashes and restarts in every seed.
//!
//! ## Profiles
//!
//! Each seed runs under five profiles, one test each:
//! * `simulation_classic`: the schedule above, with readers besides the writers: reads without a
//!   log entry ([`reader`]: `read_index` and `read_lease`, on the leader, on any node that says it
//!   leads, a deposed leader cut off from the cluster among them, and on followers), each judged
//!   by the linearizability check with the state the node's state machine held when it answered;
//!   and at the end a read of each kind on every node must be served. With the confirmation round
//!   of ReadIndex skipped (raft-core's `Engine::read_index` releasing the read at once), 80 of seeds
//!   0 to 1999 fail that check (stale reads: a deposed leader missing writes its successor
//!   acknowledged); `classic_stale_read_seeds` pins some ([`STALE_READ_SEEDS`]). On correct code,
//!   seeds 0 to 9999 pass (353 s in release, one thread; 4.48 million reads served, 0.80 million
//!   of them on followers; in 2800 seeds a deposed leader is asked for reads).
//! * `simulation_split_appends`: the same schedule, plus what figure 8 of the Raft paper (§5.4.2)
//!   needs. AppendEntries leave with their entries cut to a random shorter prefix (a probability of
//!   10 % to 80 % per seed, see [`ClusterOptions::append_truncation`]), so a new leader's older
//!   entries reach followers without its own blank entry, which otherwise travels with them; and a
//!   third of the steps wait for a leader to learn that a majority holds an entry of an older term
//!   and nothing of its own ([`Cluster::wait_old_term_majority`]), then crash or isolate it, at once
//!   or up to 30 ms later. A leader that committed such an entry by counting replicas (which Raft
//!   forbids) loses a committed entry when the next leader replaces it: with that rule broken in
//!   `maybe_commit` (its term condition removed), about 2 seeds in 1000 of this profile fail (3 of
//!   seeds 0 to 1999 with pre-vote and check-quorum on and the driver's batching of concurrent
//!   writes: leader completeness, a committed entry truncated), and none of the classic profile in
//!   2000. The sweep prints how many seeds reached that state (an entry a majority held
//!   without its leader's own, later replaced).
//!
//! * `simulation_disk_faults`: the same schedule, plus restarts whose disk lost the tail of the log
//!   (the last entries, which the node had acknowledged) and whose storage reports the loss
//!   ([`Cluster::restart_with_lost_tail`]), on old leaders as often as on followers; half of them
//!   right after the node helped a bare majority commit entries, with the rest of that majority away,
//!   so that the damaged node's vote decides whether a leader lacking those entries is elected (see
//!   [`DiskFaults`]). The damaged node must not vote until it has caught up: with that refusal removed
//!   from the engine's `vote_refusal`, about half the seeds fail (621 of seeds 0 to 1148, with
//!   pre-vote and check-quorum on, before seed 1149 livelocked and stopped the sweep: leader
//!   completeness, a committed entry lost), and `disk_faults_catch_up_seeds` pins some of them
//!   ([`CATCH_UP_SEEDS`]). One disk fails at a time (a step waits until the last damaged node is back
//!   in step): two nodes losing the same committed entry lose it for good, whatever the protocol.
//!
//!   A damaged node that restarts again before it has caught up keeps reporting the loss (see
//!   [`ClusterOptions::disk_loss_until_caught_up`]): otherwise it comes back as a node that lost
//!   nothing and votes. `DISK_LOSS_REPORTED_ONCE=1` runs the profile with the loss reported only at
//!   the restart right after it, as a storage that reports a cut only at the open that made it does;
//!   seeds then fail (a committed entry lost).
//!
//! * `simulation_membership`: the classic schedule, plus membership changes (see [`MembershipSteps`]):
//!   learners added (new nodes, ids after the initial ones, that start empty), promoted, demoted and
//!   removed, voters removed and replaced, the leader itself a quarter of the time; a removed node is
//!   retired half the time and otherwise keeps running (it must stay quiet). Half the changes race
//!   with a step of the classic schedule. Every check counts quorums by the configurations in force,
//!   and at the end the membership must settle within [`MEMBERSHIP_LIVENESS_BOUND`], every
//!   acknowledged change among the committed entries. With the joint-majority rule broken (a joint
//!   configuration counted by its new voters alone, in raft-core's `Membership::committed_index` and
//!   `is_quorum`), 77 of seeds 0 to 1999 fail; `membership_joint_seeds` pins some ([`JOINT_SEEDS`]).
//!   On correct code, seeds 0 to 9999 pass (296 s in release, one thread; 2298 of them reach a joint
//!   configuration whose new voters alone hold an uncommitted entry).
//!
//! * `simulation_leases`: the classic schedule and readers, on nodes with leader leases
//!   (`ReadPolicy::Lease`, a drift bound of up to a quarter of the minimum election timeout; the
//!   nodes' clocks run at one rate), readers asking mostly for lease reads, plus leadership
//!   transfers, half of them followed by the isolation of the old leader (see [`LeaseSteps`]).
//!   A plain `cargo test` runs [`DEFAULT_LEASE_SEEDS`] of it (the others, [`DEFAULT_SEEDS`]).
//!   On correct code, seeds 0 to 9999 pass (332 s in release, one thread; 3.59 million reads
//!   served, 2.70 million of them lease reads; 28,338 transfers). The profile alone did not catch
//!   the old leader serving lease reads after abandoning a transfer whose TimeoutNow had elected
//!   its target (2000 seeds pass without the fix, the window is narrow); `tests/reads.rs` plays
//!   that interleaving step by step.
//!
//! The split-appends, disk-fault, membership and lease profiles, and the readers, draw from RNGs of
//! their own (the schedule's, the truncation's, the disk faults', the membership steps', the lease
//! steps', the readers'), so the classic profile's schedule does not depend on them. (Its runs do
//! depend on the readers, whose messages move every later draw of the router; the figure 8 count
//! of the classic profile above was taken before it had readers.)
//! `split_appends_figure_8_seeds` runs, in every `cargo test`, the seeds of the second profile known
//! to reach figure 8's state ([`FIGURE_8_SEEDS`]), and fails if one no longer does;
//! `tests/figure8.rs` plays the same interleaving step by step. `disk_faults_catch_up_seeds` does the
//! same for [`CATCH_UP_SEEDS`], and `classic_stale_read_seeds` for [`STALE_READ_SEEDS`]. The
//! profiles with pinned seeds (split appends, disk faults, membership) have no readers: reads add
//! messages, which would change every seed's run, and those seeds would have to be found again.
//!
//! ```sh
//! cargo test -p lucid-raft-sim --test simulation                                  # a few seeds
//! SEEDS=2000 cargo test --release -p lucid-raft-sim --test simulation -- --nocapture  # many seeds
//! SEED=1234 cargo test -p lucid-raft-sim --test simulation -- --nocapture         # replay one
//! SEEDS=2000 cargo test --release -p lucid-raft-sim --test simulation simulation_split_appends -- --nocapture
//! SEEDS=2000 cargo test --release -p lucid-raft-sim --test simulation simulation_disk_faults -- --nocapture
//! SEEDS=2000 cargo test --release -p lucid-raft-sim --test simulation simulation_membership -- --nocapture
//! SEEDS=2000 cargo test --release -p lucid-raft-sim --test simulation simulation_leases -- --nocapture
//! ```
//! The last five run one profile each (a failure prints the command that replays it). `SEED_START`
//! shifts the range `SEEDS` covers; `SEED_TIMEOUT_SECS` (default 120) is the real-time limit of one
//! seed, past which it is reported as hung (a livelock stops virtual time); and `HARNESS_TRACE=1`
//! prints every observation of the harness (votes, appends, truncations, applies, leaders, crashes)
//! with its virtual time, to follow a failing seed.
//!
//! Each seed runs in a fresh current-thread runtime with paused time, so a seed replays exactly,
//! alone or among others; the `same_seed_same_history` test checks that, for every profile.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raft_core::{
    Entry, LogId, MembershipError, NodeId, RaftStorage, ReadPolicy, SnapshotPolicy, Term,
};
use raft_net_mock::{Faults, RouterStats};
use raft_sim::{
    AppendFaultStats, AppliedState, Client, Cluster, ClusterOptions, HarnessStats, OldTermMajority,
    Op, Outcome, ReadKind, ReadOp, ReadOutcome,
};
use tokio::time::sleep;

/// Seeds run by a plain `cargo test`, per profile.
const DEFAULT_SEEDS: u64 = 100;

/// Seeds run by a plain `cargo test` of [`Profile::Leases`]: fewer, to keep the default run short
/// (its schedule is the classic one, which runs [`DEFAULT_SEEDS`] with readers too).
const DEFAULT_LEASE_SEEDS: u64 = 25;

/// Which fault schedule a seed runs. A seed runs the same way under its profile, alone or among
/// others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    /// Partitions, isolations, crashes, restarts, message faults and manual snapshots.
    Classic,
    /// The classic schedule, plus AppendEntries cut to a random prefix and crashes or isolations of a
    /// leader timed right after a majority came to hold an entry of an older term than its own
    /// without any of its own (figure 8 of the Raft paper).
    SplitAppends,
    /// The classic schedule, plus restarts whose disk lost the tail of the log, of followers and old
    /// leaders alike, some timed right after the node helped a bare majority commit entries (see
    /// [`DiskFaults`]).
    DiskFaults,
    /// The classic schedule, plus membership changes (learners added, promoted and removed, voters
    /// removed and replaced, the leader among them), each racing with a step of the classic
    /// schedule half the time (see [`MembershipSteps`]).
    Membership,
    /// The classic schedule on nodes with leader leases ([`ReadPolicy::Lease`]), plus leadership
    /// transfers, some followed by the isolation of the old leader (see [`LeaseSteps`]); readers
    /// ask mostly for lease reads.
    Leases,
}

impl Profile {
    /// The command that replays one seed of this profile (`{seed}` stands for the seed).
    fn replay(self) -> &'static str {
        match self {
            Profile::Classic => {
                "SEED={seed} cargo test -p lucid-raft-sim --test simulation simulation_classic -- --nocapture"
            }
            Profile::SplitAppends => {
                "SEED={seed} cargo test -p lucid-raft-sim --test simulation simulation_split_appends -- --nocapture"
            }
            Profile::DiskFaults => {
                "SEED={seed} cargo test -p lucid-raft-sim --test simulation simulation_disk_faults -- --nocapture"
            }
            Profile::Membership => {
                "SEED={seed} cargo test -p lucid-raft-sim --test simulation simulation_membership -- --nocapture"
            }
            Profile::Leases => {
                "SEED={seed} cargo test -p lucid-raft-sim --test simulation simulation_leases -- --nocapture"
            }
        }
    }

    /// Whether this profile's clients read (without log entries) besides writing. The profiles
    /// with pinned seeds (split appends, disk faults, membership) do not: reads add messages, which
    /// change every seed's run, and those seeds would have to be found again.
    fn reads(self) -> bool {
        matches!(self, Profile::Classic | Profile::Leases)
    }
}

/// What a run produced: equal summaries for equal seeds prove the run replays exactly.
#[derive(Debug, PartialEq)]
struct Summary {
    nodes: u64,
    history: Vec<Op>,
    reads: Vec<ReadOp>,
    logs: Vec<Vec<Entry<u64>>>,
    snapshots: Vec<Option<LogId>>,
    state_machines: Vec<Option<AppliedState>>,
    leaders: BTreeMap<Term, std::collections::BTreeSet<NodeId>>,
    router: RouterStats,
    harness: HarnessStats,
    append_faults: AppendFaultStats,
    /// The old-term majorities whose entry was later replaced (see [`replaced_majorities`]).
    replaced: Vec<OldTermMajority>,
    /// What the disk faults of [`Profile::DiskFaults`] did.
    disk: DiskFaultStats,
    /// What the membership steps of [`Profile::Membership`] did.
    membership: MembershipStats,
    /// What the lease steps of [`Profile::Leases`] did.
    leases: LeaseStats,
    /// Virtual time from the final heal (every fault off, every node restarted) to the first write
    /// that committed after it, in units of the run's `election_timeout_max` (see
    /// [`LIVENESS_BOUND`]).
    heal_to_write: f64,
}

/// The liveness bound each seed is held to: once every fault is off and every node restarted, a
/// leader is elected and a write commits within this many `election_timeout_max` of virtual time.
/// Why it is enough: a restarted node's first timeout fires within one `election_timeout_max`; a
/// pre-vote round and an election each take a round trip (storage latency and message delays are
/// milliseconds here); a split vote costs another timeout, and a few in a row are rare (see
/// `raft-core/docs/raft-by-questions.md`, "split votes"); a node that lost entries sits out until it has
/// caught up. Over 10,000 seeds per profile the worst seen is printed by the sweep.
const LIVENESS_BOUND: f64 = 10.0;

/// The liveness bound of [`Profile::Membership`]'s changes: once every fault is off and every node
/// restarted, the membership settles (a leader whose membership is committed and not joint, in
/// force and committed on every member of it, each acknowledged change among the committed entries)
/// within this many `election_timeout_max` of virtual time. On top of [`LIVENESS_BOUND`]'s election
/// and write: a joint configuration left by the schedule is finished by the leader (two entries),
/// and members that were down catch up, by snapshot if need be (one chunk per round trip).
const MEMBERSHIP_LIVENESS_BOUND: f64 = 20.0;

impl Summary {
    fn acked(&self) -> usize {
        self.history
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Acked(_)))
            .count()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A random split of `ids` into two or three non-empty groups.
fn random_partition(rng: &mut fastrand::Rng, ids: &[NodeId]) -> Vec<Vec<NodeId>> {
    let mut ids = ids.to_vec();
    rng.shuffle(&mut ids);
    let groups = if ids.len() >= 4 && rng.bool() { 3 } else { 2 };
    let mut cuts: Vec<usize> = (1..ids.len()).collect();
    rng.shuffle(&mut cuts);
    let mut cuts: Vec<usize> = cuts.into_iter().take(groups - 1).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([ids.len()]) {
        out.push(ids[start..cut].to_vec());
        start = cut;
    }
    out
}

fn random_faults(rng: &mut fastrand::Rng) -> Faults {
    let lo = rng.u64(0..5);
    // Now and then a very lossy network.
    let max_drop = if rng.u32(0..5) == 0 { 0.5 } else { 0.2 };
    Faults {
        drop_prob: rng.f64() * max_drop,
        delay_ms: (lo, lo + rng.u64(0..40)),
        duplicate_prob: rng.f64() * 0.1,
        reorder_prob: rng.f64() * 0.3,
    }
}

/// Mixed into the seed for the RNG of [`SplitAppends`], so its draws are not the schedule's.
const SPLIT_APPENDS_STREAM: u64 = 0x0F16_0008;

/// The part of the schedule only [`Profile::SplitAppends`] has. Its draws come from an RNG of its own,
/// derived from the seed.
struct SplitAppends {
    rng: fastrand::Rng,
}

impl SplitAppends {
    fn new(seed: u64) -> Self {
        SplitAppends {
            rng: fastrand::Rng::with_seed(seed ^ SPLIT_APPENDS_STREAM),
        }
    }

    /// How likely an AppendEntries is truncated: from now and then to most of them.
    fn truncation(&mut self) -> f64 {
        0.1 + self.rng.f64() * 0.7
    }

    /// Whether this step of the schedule is a figure 8 step instead of a classic one.
    fn takes_step(&mut self) -> bool {
        self.rng.u32(0..3) == 0
    }

    /// Waits for a leader's older entries to reach a majority without its own, then (at once, or a
    /// few milliseconds later, once it may have committed and applied them) crashes or isolates it.
    /// The followers may then elect a leader whose log holds another entry at that index.
    async fn step<S: RaftStorage<u64>>(&mut self, c: &Cluster<S>) {
        let wait = ms(self.rng.u64(50..1500));
        let Some(moment) = c.wait_old_term_majority(wait).await else {
            return;
        };
        let after = if self.rng.bool() {
            0
        } else {
            self.rng.u64(0..30)
        };
        sleep(ms(after)).await;
        if self.rng.u32(0..3) == 0 {
            c.router().isolate(moment.leader);
        } else {
            c.crash(moment.leader).await;
        }
    }
}

/// Mixed into the seed for the RNG of [`DiskFaults`], so its draws are not the schedule's.
const DISK_FAULTS_STREAM: u64 = 0xD15C_FA17;

/// What the disk-fault steps of one run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DiskFaultStats {
    /// Steps that crashed a node (or took a down one) and restarted it with the tail of its log lost.
    plain: u64,
    /// Steps that made a bare majority commit entries, then restarted one of that majority (the
    /// leader or a follower) with those entries lost, while the rest of it was away: the lost entries
    /// were then on no running node, and the damaged node's vote decided elections.
    bare_majority: u64,
    /// Steps skipped because a node was still recovering from an earlier disk fault (a second loss
    /// could destroy the last copy of an entry, which no protocol survives).
    skipped: u64,
}

/// The part of the schedule only [`Profile::DiskFaults`] has: restarts whose disk lost the last
/// entries of the log, which the node's storage reports ([`Cluster::restart_with_lost_tail`]). Its
/// draws come from an RNG of its own, derived from the seed.
///
/// Half the steps are plain: a node (the leader half the time, so old leaders are hit as often as
/// followers) crashes and comes back missing 1 to 10 entries. The other half make the loss matter:
///
/// 1. cut a bare majority (the leader and just enough followers) off from the others, and wait until
///    it has committed (and the leader applied) a few more entries, which that majority alone holds;
/// 2. crash one of it (the leader or a follower), and restart it with those entries lost;
/// 3. crash or isolate the rest of that majority, and reconnect the damaged node with the others: the
///    committed entries are now on no reachable node, and the others need the damaged node's vote
///    to elect a leader, whose log would lack them;
/// 4. after a while, bring everything back.
///
/// A node that lost entries must not vote until it holds its leader's commit index again (it may
/// have been part of the majority that committed what it lost): with that rule, step 3 elects no
/// one, and the cluster goes on once the majority is back. Without it, the others elect one of
/// themselves and a committed entry is lost ([`CATCH_UP_SEEDS`]).
///
/// One disk fails at a time: a step waits for every earlier damaged node to be back in step
/// ([`Cluster::recovering_from_disk_faults`]), else it does nothing.
struct DiskFaults {
    rng: fastrand::Rng,
    stats: DiskFaultStats,
}

impl DiskFaults {
    fn new(seed: u64) -> Self {
        DiskFaults {
            rng: fastrand::Rng::with_seed(seed ^ DISK_FAULTS_STREAM),
            stats: DiskFaultStats::default(),
        }
    }

    /// Whether this step of the schedule is a disk-fault step instead of a classic one.
    fn takes_step(&mut self) -> bool {
        self.rng.u32(0..3) == 0
    }

    async fn step<S: RaftStorage<u64>>(&mut self, c: &Cluster<S>, ids: &[NodeId]) {
        sleep(ms(self.rng.u64(20..400))).await;
        if !c.recovering_from_disk_faults().is_empty() {
            self.stats.skipped += 1;
            return;
        }
        if self.rng.bool() {
            self.plain(c, ids).await;
        } else {
            self.bare_majority(c, ids).await;
        }
    }

    /// A node (the leader half the time) crashes and restarts with its last 1 to 10 entries lost.
    async fn plain<S: RaftStorage<u64>>(&mut self, c: &Cluster<S>, ids: &[NodeId]) {
        let victim = match c.leader() {
            Some(leader) if self.rng.bool() => leader,
            _ => ids[self.rng.usize(0..ids.len())],
        };
        c.crash(victim).await;
        sleep(ms(self.rng.u64(0..200))).await;
        if c.restart_with_lost_tail(victim, self.rng.u64(1..=10)).await > 0 {
            self.stats.plain += 1;
        }
    }

    /// Steps 1 to 4 of [`DiskFaults`].
    async fn bare_majority<S: RaftStorage<u64>>(&mut self, c: &Cluster<S>, ids: &[NodeId]) {
        let Some(leader) = c.leader() else {
            return;
        };
        let Some(start) = c.metrics(leader) else {
            return;
        };
        // 1. The leader and quorum - 1 followers, cut off from the rest.
        let mut followers: Vec<NodeId> = ids.iter().copied().filter(|&id| id != leader).collect();
        self.rng.shuffle(&mut followers);
        let quorum = ids.len() / 2 + 1;
        let mut majority = vec![leader];
        majority.extend_from_slice(&followers[..quorum - 1]);
        let others = followers[quorum - 1..].to_vec();
        c.router().partition(&[&majority, &others]);
        let goal = start.commit_index + self.rng.u64(1..=4);
        let committed = c
            .wait_applied(leader, goal, ms(self.rng.u64(200..2000)))
            .await
            .is_ok()
            && c.metrics(leader).is_some_and(|m| {
                m.role == raft_core::Role::Leader && m.current_term == start.current_term
            });
        if !committed {
            c.router().heal();
            return;
        }
        // 2. One of the majority loses what it got since the cut (and a few entries before).
        let victim = majority[self.rng.usize(0..majority.len())];
        let rest: Vec<NodeId> = majority
            .iter()
            .copied()
            .filter(|&id| id != victim)
            .collect();
        c.crash(victim).await;
        let last = c
            .durable_log(victim)
            .last()
            .map_or(c.durable_base(victim).index, |e| e.log_id.index);
        let lose = last.saturating_sub(start.commit_index) + self.rng.u64(0..3);
        // 3. The rest of the majority goes away; the damaged node meets the others.
        let crash_rest = self.rng.bool();
        if crash_rest {
            for &id in &rest {
                c.crash(id).await;
            }
            c.router().heal();
        } else {
            let mut reachable = others.clone();
            reachable.push(victim);
            c.router().partition(&[&rest, &reachable]);
        }
        sleep(ms(self.rng.u64(0..100))).await;
        if c.restart_with_lost_tail(victim, lose).await > 0 {
            self.stats.bare_majority += 1;
        }
        // 4. Elections among the others and the damaged node, then everything comes back.
        sleep(ms(self.rng.u64(300..2000))).await;
        c.router().heal();
        for &id in &rest {
            c.restart(id).await;
        }
    }
}

/// Mixed into the seed for the RNG of [`MembershipSteps`], so its draws are not the schedule's.
const MEMBERSHIP_STREAM: u64 = 0x3E3B_E125_0000;

/// The most members (voters and learners) the schedule grows a cluster to.
const MAX_MEMBERS: usize = 7;

/// The fewest voters the schedule shrinks a cluster to (so that a crash or a partition still
/// leaves a majority now and then).
const MIN_VOTERS: usize = 3;

/// What the membership steps of one run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MembershipStats {
    /// Learners added (acknowledged).
    learners_added: u64,
    /// Learners promoted to voters (acknowledged).
    promoted: u64,
    /// Voters demoted to learners (acknowledged).
    demoted: u64,
    /// Members removed (acknowledged), the leader's own removals included.
    removed: u64,
    /// Removals and replacements of the node that led when the change was asked (acknowledged).
    leaders_removed: u64,
    /// Voters replaced: a new node added, caught up, promoted, and the old one removed (all
    /// acknowledged).
    replaced: u64,
    /// Changes refused without being proposed (no leader, another change in progress, a learner
    /// behind, ...).
    refused: u64,
    /// Changes proposed whose outcome was unknown (timed out, or the leader stopped): they may
    /// have completed since.
    uncertain: u64,
    /// Removed nodes stopped for good right after their removal (the others keep running until
    /// the end, and must stay quiet).
    retired: u64,
    /// Voters and learners of the final membership.
    final_voters: usize,
    final_learners: usize,
}

/// The part of the schedule only [`Profile::Membership`] has: membership changes through the leader
/// ([`Cluster::add_learner`], [`Cluster::promote`], [`Cluster::demote`], [`Cluster::remove_node`],
/// [`Cluster::replace`]). New nodes get ids after the initial ones and start empty; the leader
/// itself is removed or replaced now and then; a removed node is retired (stopped for good) half the
/// time, and otherwise keeps running, where it must not disturb the cluster. Each change races, half
/// the time, with one step of the classic schedule (crashes, partitions, message faults). Its draws
/// come from an RNG of its own, derived from the seed.
struct MembershipSteps {
    rng: fastrand::Rng,
    stats: MembershipStats,
    /// The id the next new node gets.
    next_id: NodeId,
}

impl MembershipSteps {
    fn new(seed: u64, nodes: u64) -> Self {
        MembershipSteps {
            rng: fastrand::Rng::with_seed(seed ^ MEMBERSHIP_STREAM),
            stats: MembershipStats::default(),
            next_id: nodes + 1,
        }
    }

    /// Whether this step of the schedule is a membership step instead of a classic one.
    fn takes_step(&mut self) -> bool {
        self.rng.u32(0..5) < 2
    }

    /// Whether the membership change of this step races with a classic step.
    fn with_fault(&mut self) -> bool {
        self.rng.bool()
    }

    fn pick(&mut self, from: &[NodeId]) -> Option<NodeId> {
        (!from.is_empty()).then(|| from[self.rng.usize(0..from.len())])
    }

    /// Counts the outcome of a change: `Ok` in `done`, errors as refused or uncertain.
    fn count<T>(&mut self, result: &Result<T, MembershipError>, done: fn(&mut MembershipStats)) {
        match result {
            Ok(_) => done(&mut self.stats),
            Err(MembershipError::TimedOut | MembershipError::Stopped(_)) => {
                self.stats.uncertain += 1
            }
            Err(_) => self.stats.refused += 1,
        }
    }

    /// Retires `id` (removed, acknowledged) half the time.
    async fn maybe_retire<S: RaftStorage<u64>>(&mut self, c: &Cluster<S>, id: NodeId) {
        if self.rng.bool() {
            c.retire(id).await;
            self.stats.retired += 1;
        }
    }

    async fn step<S: RaftStorage<u64>>(&mut self, c: &Cluster<S>) {
        sleep(ms(self.rng.u64(0..300))).await;
        let (Some(leader), Some(lm)) = (c.leader(), c.leader_metrics()) else {
            return;
        };
        let m = lm.membership;
        let voters: Vec<NodeId> = m.voters.iter().copied().collect();
        let learners: Vec<NodeId> = m.learners.iter().copied().collect();
        let room = m.members().len() < MAX_MEMBERS;
        // A voter to remove or replace: the leader itself a quarter of the time.
        let victim = if self.rng.u32(0..4) == 0 {
            Some(leader)
        } else {
            self.pick(&voters)
        };
        match self.rng.u32(0..100) {
            0..=29 if room => {
                let id = self.next_id;
                self.next_id += 1;
                let result = c.add_learner(id).await;
                self.count(&result, |s| s.learners_added += 1);
            }
            30..=54 if !learners.is_empty() => {
                let Some(id) = self.pick(&learners) else {
                    return;
                };
                let _ = c.wait_caught_up(id, ms(self.rng.u64(0..2000))).await;
                let result = c.promote(id).await;
                self.count(&result, |s| s.promoted += 1);
            }
            55..=74 => {
                // A voter while there are more than the fewest, else a learner.
                let target = if voters.len() > MIN_VOTERS {
                    victim
                } else {
                    self.pick(&learners)
                };
                let Some(id) = target else {
                    return;
                };
                let result = c.remove_node(id).await;
                self.count(&result, |s| s.removed += 1);
                if result.is_ok() {
                    if id == leader {
                        self.stats.leaders_removed += 1;
                    }
                    self.maybe_retire(c, id).await;
                }
            }
            75..=94 if room => {
                let Some(old) = victim else {
                    return;
                };
                let new = self.next_id;
                self.next_id += 1;
                let result = c.replace(old, new, ms(self.rng.u64(500..3000))).await;
                self.count(&result, |s| s.replaced += 1);
                if result.is_ok() {
                    if old == leader {
                        self.stats.leaders_removed += 1;
                    }
                    self.maybe_retire(c, old).await;
                }
            }
            95..=99 if voters.len() > MIN_VOTERS => {
                let Some(id) = victim else {
                    return;
                };
                let result = c.demote(id).await;
                self.count(&result, |s| s.demoted += 1);
            }
            _ => {}
        }
    }
}

/// Mixed into the seed for the RNG of the readers, so their draws are not the schedule's.
const READS_STREAM: u64 = 0x2EAD_5EED;

/// One reader of the workload, until `stop`: reads without a log entry, a random moment apart, on
/// the leader of the highest term (four in ten), on a node that says it leads, whatever its term
/// (three in ten: a leader cut off from the cluster that does not know it was replaced is one),
/// or on any running node (follower reads). Half the reads ask for the lease, three quarters under
/// [`Profile::Leases`] (without a lease configured, a lease read is a ReadIndex read). Each read
/// runs in a task of its own: a read that waits (for a round no majority answers, say) does not
/// hold up the next, so reads keep coming while the cluster changes leaders, and reads asked
/// together share rounds.
async fn reader(client: Client, mut rng: fastrand::Rng, leases: bool, stop: Arc<AtomicBool>) {
    let mut reads = tokio::task::JoinSet::new();
    while !stop.load(Ordering::SeqCst) {
        let lease = if leases {
            rng.u32(0..4) != 0
        } else {
            rng.bool()
        };
        let kind = if lease {
            ReadKind::Lease
        } else {
            ReadKind::Index
        };
        let target = match rng.u32(0..10) {
            0..=3 => None,
            4..=6 => pick(&mut rng, &client.claimed_leaders()),
            _ => pick(&mut rng, &client.reachable_nodes()),
        };
        let client = client.clone();
        // Failures read nothing: the history keeps them, the checker ignores them.
        reads.spawn(async move {
            let _ = match target {
                Some(node) => client.read_on(node, kind).await.map(|_| ()),
                None => client.read_leader(kind).await.map(|_| ()),
            };
        });
        sleep(ms(rng.u64(1..40))).await;
        while reads.try_join_next().is_some() {}
    }
    while reads.join_next().await.is_some() {}
}

fn pick(rng: &mut fastrand::Rng, from: &[NodeId]) -> Option<NodeId> {
    (!from.is_empty()).then(|| from[rng.usize(0..from.len())])
}

/// Mixed into the seed for the RNG of [`LeaseSteps`], so its draws are not the schedule's.
const LEASE_STREAM: u64 = 0x1EA5_E5ED;

/// What the lease steps of one run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LeaseStats {
    /// Leadership transfers asked of the leader.
    transfers: u64,
    /// Of those, transfers after which the old leader was isolated (while the transfer ran, or
    /// after it ended).
    isolated: u64,
}

/// The part of the schedule only [`Profile::Leases`] has: the drift bound of the lease, and
/// leadership transfers (a transfer suspends the lease: the target's votes ignore stickiness),
/// half of them followed, up to an election timeout later, by the isolation of the old leader, so
/// that a leader whose transfer went through without its knowing is left with its reads. Its
/// draws come from an RNG of its own, derived from the seed.
struct LeaseSteps {
    rng: fastrand::Rng,
    stats: LeaseStats,
}

impl LeaseSteps {
    fn new(seed: u64) -> Self {
        LeaseSteps {
            rng: fastrand::Rng::with_seed(seed ^ LEASE_STREAM),
            stats: LeaseStats::default(),
        }
    }

    /// The lease's clock drift bound: none to a quarter of the minimum election timeout (the
    /// simulation's clocks run at one rate, so any bound is safe).
    fn drift(&mut self, election_timeout_min: Duration) -> Duration {
        let min = election_timeout_min.as_millis() as u64;
        ms(self.rng.u64(0..=min / 4))
    }

    /// Whether this step of the schedule is a lease step instead of a classic one.
    fn takes_step(&mut self) -> bool {
        self.rng.u32(0..4) == 0
    }

    async fn step<S: RaftStorage<u64>>(&mut self, c: &Cluster<S>, timeout_max: Duration) {
        sleep(ms(self.rng.u64(0..300))).await;
        let Some(leader) = c.leader() else {
            return;
        };
        let Some(raft) = c.raft(leader) else {
            return;
        };
        self.stats.transfers += 1;
        tokio::spawn(async move {
            let _ = raft.transfer_leadership(None).await;
        });
        if self.rng.bool() {
            let max = timeout_max.as_millis() as u64 * 3 / 2;
            sleep(ms(self.rng.u64(0..=max))).await;
            c.router().isolate(leader);
            self.stats.isolated += 1;
        }
    }
}

/// One step of the classic schedule: a pause, then a partition, an isolation, a heal, a manual
/// snapshot, a crash, a restart, a change of message faults, or a crash of the leader or of every
/// node, drawn from `rng`, among nodes `ids`.
async fn classic_step<S: RaftStorage<u64>>(
    c: &Cluster<S>,
    rng: &mut fastrand::Rng,
    ids: &[NodeId],
) {
    sleep(ms(rng.u64(20..800))).await;
    let live = c.live_ids();
    let down: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|id| !live.contains(id))
        .collect();
    match rng.u32(0..100) {
        0..=14 => {
            let groups = random_partition(rng, ids);
            let slices: Vec<&[NodeId]> = groups.iter().map(Vec::as_slice).collect();
            c.router().partition(&slices);
        }
        15..=24 => c.router().isolate(ids[rng.usize(0..ids.len())]),
        25..=36 => c.router().heal(),
        37..=39 => {
            // A manual snapshot on some node, racing with everything else.
            if !live.is_empty() {
                if let Some(raft) = c.raft(live[rng.usize(0..live.len())]) {
                    tokio::spawn(async move {
                        let _ = raft.trigger_snapshot().await;
                    });
                }
            }
        }
        40..=54 => {
            if !live.is_empty() {
                c.crash(live[rng.usize(0..live.len())]).await;
            }
        }
        55..=69 => {
            if !down.is_empty() {
                c.restart(down[rng.usize(0..down.len())]).await;
            }
        }
        70..=76 => c.router().set_faults(random_faults(rng)),
        77..=79 => {
            // Snapshot chunks get faults of their own (or follow the others again).
            let faults = rng.bool().then(|| random_faults(rng));
            c.router().set_snapshot_faults(faults);
        }
        80..=84 => c.router().set_faults(Faults::default()),
        85..=89 => {
            if let Some(l) = c.leader() {
                c.crash(l).await;
            }
        }
        90..=94 => {
            // A leader that crashes and comes straight back.
            if let Some(l) = c.leader() {
                c.crash(l).await;
                sleep(ms(rng.u64(0..50))).await;
                c.restart(l).await;
            }
        }
        _ => {
            c.crash_all().await;
            sleep(ms(rng.u64(0..500))).await;
            c.restart_all().await;
        }
    }
}

async fn scenario(seed: u64, profile: Profile) -> Summary {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut split = (profile == Profile::SplitAppends).then(|| SplitAppends::new(seed));
    let mut disk = (profile == Profile::DiskFaults).then(|| DiskFaults::new(seed));
    let n = if rng.bool() { 3 } else { 5 };
    let mut membership = (profile == Profile::Membership).then(|| MembershipSteps::new(seed, n));
    let mut leases = (profile == Profile::Leases).then(|| LeaseSteps::new(seed));
    let ids: Vec<NodeId> = (1..=n).collect();
    // Half the runs give storage writes a latency, so crashes can land mid-write.
    let latency = if rng.bool() {
        ms(rng.u64(1..4))
    } else {
        Duration::ZERO
    };
    // Half the runs send few entries per AppendEntries and pipeline little, so that logs are
    // repaired and replicated in many small steps (more interleavings of old and new terms).
    let mut config = raft_core::Config::default();
    if rng.bool() {
        config.max_entries_per_append = rng.usize(1..8);
        config.max_in_flight = rng.usize(1..4);
    }
    // A third of the runs have shorter, tighter timers: more elections, more RPC timeouts.
    if rng.u32(0..3) == 0 {
        let min = rng.u64(40..150);
        config.election_timeout_min = ms(min);
        config.election_timeout_max = ms(min + rng.u64(10..150));
        config.heartbeat_interval = ms(rng.u64(5..min / 2));
        config.rpc_timeout = ms(rng.u64(10..300));
    }
    if let Some(leases) = leases.as_mut() {
        config.read_policy = ReadPolicy::Lease {
            clock_drift_bound: leases.drift(config.election_timeout_min),
        };
    }
    // Snapshots in every run, small and often.
    let config_timeout_max = config.election_timeout_max;
    let snapshot_every = rng.u64(5..=30);
    config.snapshot_policy = SnapshotPolicy::AfterAppliedEntries(snapshot_every);
    config.snapshot_keep_entries = rng.u64(0..=10);
    config.snapshot_chunk_size = rng.usize(16..=64);
    let mut opts = ClusterOptions::new(n, seed)
        .config(config)
        .replay(profile.replay())
        .storage_latency(latency);
    if let Some(split) = split.as_mut() {
        opts = opts.append_truncation(split.truncation());
    }
    if disk.is_some() && std::env::var_os("DISK_LOSS_REPORTED_ONCE").is_some() {
        opts = opts.disk_loss_until_caught_up(false);
    }
    let c = Cluster::with_options(opts).await;
    c.initialize().await;

    // Clients: each writes fresh values, pausing a random moment between writes.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for k in 0..rng.u64(1..=4) {
        let client = c.client();
        let stop = Arc::clone(&stop);
        let mut crng = fastrand::Rng::with_seed(seed ^ (k + 1).wrapping_mul(0x9E37_79B9));
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let _ = client.write(client.next_value()).await;
                sleep(ms(crng.u64(1..40))).await;
            }
        }));
    }

    // Readers, in the profiles that read: each with an RNG of its own.
    let mut readers = Vec::new();
    if profile.reads() {
        let mut rrng = fastrand::Rng::with_seed(seed ^ READS_STREAM);
        for _ in 0..rrng.u64(1..=3) {
            let rng = fastrand::Rng::with_seed(rrng.u64(..));
            let task = reader(c.client(), rng, leases.is_some(), Arc::clone(&stop));
            readers.push(tokio::spawn(task));
        }
    }

    // The fault schedule.
    let steps = rng.usize(10..40);
    // A membership step can take seconds (a change waits for its commit, a replacement for a catch-up):
    // fewer steps keep that profile's runs as long as the others'.
    let steps = if membership.is_some() {
        steps.min(28)
    } else {
        steps
    };
    for _ in 0..steps {
        if let Some(split) = split.as_mut() {
            if split.takes_step() {
                split.step(&c).await;
                c.assert_safe();
                continue;
            }
        }
        if let Some(disk) = disk.as_mut() {
            if disk.takes_step() {
                disk.step(&c, &ids).await;
                c.assert_safe();
                continue;
            }
        }
        if let Some(leases) = leases.as_mut() {
            if leases.takes_step() {
                leases.step(&c, config_timeout_max).await;
                c.assert_safe();
                continue;
            }
        }
        if let Some(steps) = membership.as_mut() {
            if steps.takes_step() {
                let racing = steps.with_fault();
                let ids = c.ids();
                let fault = async {
                    if racing {
                        classic_step(&c, &mut rng, &ids).await;
                    }
                };
                tokio::join!(steps.step(&c), fault);
                c.assert_safe();
                continue;
            }
        }
        let ids = if membership.is_some() {
            c.ids()
        } else {
            ids.clone()
        };
        classic_step(&c, &mut rng, &ids).await;
        c.assert_safe();
    }

    // Calm down: stop the clients, repair everything, and check the end state.
    stop.store(true, Ordering::SeqCst);
    for t in clients.into_iter().chain(readers) {
        let _ = t.await;
    }
    let healed = tokio::time::Instant::now();
    c.router().set_faults(Faults::default());
    c.router().set_snapshot_faults(None);
    c.set_append_truncation(0.0);
    c.router().heal();
    c.restart_all().await;
    c.assert_safe();
    c.wait_for_leader(Duration::from_secs(10)).await;
    // One more write must get through once the cluster is whole again, within the liveness bound.
    let client = c.client();
    let mut ok = false;
    for _ in 0..5 {
        if client.write(client.next_value()).await.is_ok() {
            ok = true;
            break;
        }
    }
    if !ok {
        c.fail("no write succeeded after healing everything");
    }
    let heal_to_write =
        healed.elapsed().as_secs_f64() / config_timeout_max.as_secs_f64().max(f64::EPSILON);
    if heal_to_write > LIVENESS_BOUND {
        c.fail(&format!(
            "liveness: the first write after the final heal committed {:?} later, {heal_to_write:.1} \
             x election_timeout_max, over the bound of {LIVENESS_BOUND}",
            healed.elapsed()
        ));
    }
    if profile.reads() {
        read_everywhere(&c, config_timeout_max).await;
    }
    if let Some(steps) = membership.as_mut() {
        // Every acknowledged change in force on every member of the final configuration, within
        // the bound; then the nodes outside it (removed, or never admitted) are retired.
        let bound = config_timeout_max.mul_f64(MEMBERSHIP_LIVENESS_BOUND);
        let settled = c
            .wait_membership_settled(bound.saturating_sub(healed.elapsed()))
            .await
            .unwrap_or_else(|v| c.fail(&v.0));
        c.retire_non_members(&settled).await;
        steps.stats.final_voters = settled.voters.len();
        steps.stats.final_learners = settled.learners.len();
    }
    c.assert_final(Duration::from_secs(30)).await;
    if membership.is_some() {
        // Nothing changed the membership while the cluster converged.
        let now = c.leader_metrics().map(|m| m.membership);
        let members: Vec<NodeId> = c.ids();
        if now
            .as_ref()
            .map(|m| m.members().into_iter().collect::<Vec<_>>())
            != Some(members)
        {
            c.fail(&format!(
                "membership: the final membership {now:?} is not the running nodes {:?}",
                c.ids()
            ));
        }
    }
    // Every node applied the whole log since its last start at the latest, so a log of twice the
    // threshold means some node snapshotted. (A seed whose faults let almost nothing commit may not
    // reach it.)
    let committed = c
        .all_metrics()
        .values()
        .map(|m| m.commit_index)
        .max()
        .unwrap_or(0);
    if committed >= 2 * snapshot_every && c.stats().snapshot_stores == 0 {
        c.fail(&format!(
            "no node stored a snapshot, with {committed} entries committed and a snapshot due every \
             {snapshot_every}: compaction did not run"
        ));
    }

    Summary {
        nodes: n,
        history: c.history(),
        reads: c.read_history(),
        logs: c
            .started_ids()
            .iter()
            .map(|&id| c.durable_log(id))
            .collect(),
        snapshots: c
            .started_ids()
            .iter()
            .map(|&id| c.durable_snapshot(id).map(|m| m.last_log_id))
            .collect(),
        state_machines: c
            .started_ids()
            .iter()
            .map(|&id| c.state_machine(id))
            .collect(),
        leaders: c.observed_leaders(),
        router: c.router().stats(),
        harness: c.stats(),
        append_faults: c.append_fault_stats(),
        replaced: replaced_majorities(&c),
        disk: disk.map(|d| d.stats).unwrap_or_default(),
        membership: membership.map(|m| m.stats).unwrap_or_default(),
        leases: leases.map(|l| l.stats).unwrap_or_default(),
        heal_to_write,
    }
}

/// Once the cluster is whole again, a read of each kind on every running node (the leader's and
/// followers' reads) is served within a few election timeouts, and sees the last write (the
/// linearizability check judges them with the rest of the history).
async fn read_everywhere<S: RaftStorage<u64>>(c: &Cluster<S>, timeout_max: Duration) {
    let client = c.client();
    for node in c.live_ids() {
        for kind in [ReadKind::Index, ReadKind::Lease] {
            let mut served = false;
            for _ in 0..10 {
                if client.read_on(node, kind).await.is_ok() {
                    served = true;
                    break;
                }
                sleep(timeout_max).await;
            }
            if !served {
                c.fail(&format!(
                    "liveness: no {kind:?} read served on node {node} after healing everything"
                ));
            }
        }
    }
    c.assert_safe();
}

/// The moments a majority held an entry of an older term than its leader's, with nothing of the
/// leader's term, whose entry is not the one finally committed at its index: a later leader replaced
/// it. This is the state of figure 8 of the Raft paper, reached and survived: had that leader
/// committed the entry by counting replicas, a committed entry would have been lost. (Entries no
/// node applied, only restored from a snapshot, are not judged.)
fn replaced_majorities<S: RaftStorage<u64>>(c: &Cluster<S>) -> Vec<OldTermMajority> {
    let committed: BTreeMap<u64, LogId> = c
        .ids()
        .into_iter()
        .flat_map(|id| c.applied(id))
        .flatten()
        .map(|(log_id, _)| (log_id.index, log_id))
        .collect();
    c.old_term_majorities()
        .into_iter()
        .filter(|m| {
            committed
                .get(&m.entry.index)
                .is_some_and(|&id| id != m.entry)
        })
        .collect()
}

/// Runs one seed in a fresh runtime with paused time.
fn run_seed(seed: u64, profile: Profile) -> Summary {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(scenario(seed, profile))
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

fn seeds() -> Vec<u64> {
    seeds_or(DEFAULT_SEEDS)
}

/// The seeds `SEED`, `SEEDS` and `SEED_START` ask for; `default` seeds from 0 if none are set.
fn seeds_or(default: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("SEED") {
        return vec![seed];
    }
    let count = env_u64("SEEDS").unwrap_or(default);
    let start = env_u64("SEED_START").unwrap_or(0);
    (start..start + count).collect()
}

/// How a seed ended.
enum SeedResult {
    Passed(Box<Summary>),
    Failed,
    /// No result within the real-time limit: virtual time stopped advancing (a livelock: nodes
    /// exchanging messages forever at one instant) or the run is pathologically slow.
    Hung,
}

/// Runs one seed on a thread of its own, with a real-time limit (env `SEED_TIMEOUT_SECS`, default
/// 120 s), so that a livelock is reported with its seed instead of hanging the test.
fn run_seed_watched(seed: u64, profile: Profile) -> SeedResult {
    let limit = Duration::from_secs(env_u64("SEED_TIMEOUT_SECS").unwrap_or(120));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| run_seed(seed, profile)));
            let _ = tx.send(result);
        })
        .expect("spawn a thread");
    match rx.recv_timeout(limit) {
        Ok(Ok(summary)) => SeedResult::Passed(Box::new(summary)),
        Ok(Err(_)) => SeedResult::Failed,
        Err(_) => SeedResult::Hung,
    }
}

/// The `q` quantile (0 to 1) of `values` by their first field, with its seed; (0, 0) if empty.
fn percentile(values: &mut [(f64, u64)], q: f64) -> (f64, u64) {
    if values.is_empty() {
        return (0.0, 0);
    }
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let at = ((values.len() - 1) as f64 * q).round() as usize;
    values[at.min(values.len() - 1)]
}

/// The reads of a sweep, summed over its seeds.
#[derive(Debug, Default)]
struct ReadStats {
    served: u64,
    follower: u64,
    lease: u64,
    failed: u64,
    deposed: u64,
    deposed_served: u64,
    deposed_seeds: u64,
}

impl ReadStats {
    fn add(&mut self, s: &Summary) {
        let h = &s.harness;
        self.served += h.reads_served;
        self.follower += h.follower_reads_served;
        self.failed += h.reads_failed;
        self.deposed += h.reads_on_deposed_leader;
        self.deposed_served += h.reads_on_deposed_leader_served;
        self.deposed_seeds += u64::from(h.reads_on_deposed_leader > 0);
        self.lease += s
            .reads
            .iter()
            .filter(|r| r.kind == ReadKind::Lease && matches!(r.outcome, ReadOutcome::Served(_)))
            .count() as u64;
    }
}

/// Runs `seeds` under `profile`, prints what they did, and fails with every failing seed.
fn sweep(profile: Profile, seeds: &[u64]) {
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let (mut acked, mut writes, mut crashes, mut elections) = (0, 0, 0, 0);
    let (mut snapshots, mut transfers, mut chunks, mut restores) = (0, 0, 0, 0);
    let (mut truncated, mut old_term_majorities, mut replaced) = (0, 0, 0);
    let mut disk = DiskFaultStats::default();
    let (mut lost_entries, mut withheld) = (0, 0);
    let mut changes = MembershipStats::default();
    let mut grown_or_shrunk = 0;
    let mut joint_new_only = 0;
    let mut reads = ReadStats::default();
    let mut lease_steps = LeaseStats::default();
    let mut heal_to_write: Vec<(f64, u64)> = Vec::new();
    for &seed in seeds {
        let replay = profile.replay().replace("{seed}", &seed.to_string());
        match run_seed_watched(seed, profile) {
            SeedResult::Passed(s) => {
                acked += s.acked();
                writes += s.history.len();
                crashes += s.harness.crashes;
                elections += s.leaders.len();
                snapshots += s.harness.snapshot_stores;
                transfers += s.harness.snapshots_installed.values().sum::<u64>();
                chunks += s.harness.snapshot_chunks_sent.values().sum::<u64>();
                restores += s.harness.restores;
                truncated += s.append_faults.truncated;
                old_term_majorities += s.append_faults.old_term_majorities;
                replaced += u64::from(!s.replaced.is_empty());
                disk.plain += s.disk.plain;
                disk.bare_majority += s.disk.bare_majority;
                disk.skipped += s.disk.skipped;
                lost_entries += s.harness.entries_lost_to_disk;
                withheld += s.harness.votes_withheld_after_disk_fault;
                joint_new_only += u64::from(s.harness.joint_new_majority_only > 0);
                let m = s.membership;
                changes.learners_added += m.learners_added;
                changes.promoted += m.promoted;
                changes.demoted += m.demoted;
                changes.removed += m.removed;
                changes.leaders_removed += m.leaders_removed;
                changes.replaced += m.replaced;
                changes.refused += m.refused;
                changes.uncertain += m.uncertain;
                changes.retired += m.retired;
                grown_or_shrunk +=
                    u64::from(profile == Profile::Membership && m.final_voters as u64 != s.nodes);
                reads.add(&s);
                lease_steps.transfers += s.leases.transfers;
                lease_steps.isolated += s.leases.isolated;
                heal_to_write.push((s.heal_to_write, seed));
            }
            SeedResult::Failed => {
                eprintln!("simulation FAILED for SEED={seed}; replay: {replay}");
                failed.push(seed);
            }
            SeedResult::Hung => {
                // The seed's thread still spins; stop here rather than run on beside it.
                panic!(
                    "simulation HUNG for SEED={seed} (no result in real time: a livelock?); \
                     earlier failures: {failed:?}; replay: {replay}"
                );
            }
        }
    }
    println!(
        "simulation ({profile:?}): {} seeds in {:.1?} ({} failed); {writes} client writes, {acked} acknowledged, \
         {crashes} crashes, {elections} terms with a leader; {snapshots} snapshots stored, {chunks} snapshot \
         chunks sent, {transfers} snapshots installed from a leader, {restores} state machine restores; \
         {truncated} AppendEntries truncated, {old_term_majorities} old-term majorities, {replaced} seeds \
         where an entry a majority held without its leader's own was later replaced; disk faults: {} plain, \
         {} after a bare majority, {} skipped (a node still recovering), {lost_entries} entries lost, \
         {withheld} votes withheld by a node catching up from a candidate lacking a committed entry; \
         final heal to a committed write, in election_timeout_max: median {:.2}, 99th percentile {:.2}, \
         worst {:.2} (seed {}), bound {LIVENESS_BOUND}; membership changes acknowledged: {} learners added, \
         {} promoted, {} demoted, {} removed, {} replaced (the leader was the node leaving {} times); {} refused, {} of unknown \
         outcome; {} removed nodes retired at once; {grown_or_shrunk} seeds ended with another number of \
         voters than they started with, {joint_new_only} seeds with joint majorities of the new voters only \
         (an uncommitted entry held by a majority of a joint configuration's new voters, not of its old)",
        seeds.len(),
        started.elapsed(),
        failed.len(),
        disk.plain,
        disk.bare_majority,
        disk.skipped,
        percentile(&mut heal_to_write, 0.5).0,
        percentile(&mut heal_to_write, 0.99).0,
        percentile(&mut heal_to_write, 1.0).0,
        percentile(&mut heal_to_write, 1.0).1,
        changes.learners_added,
        changes.promoted,
        changes.demoted,
        changes.removed,
        changes.replaced,
        changes.leaders_removed,
        changes.refused,
        changes.uncertain,
        changes.retired,
    );
    if profile.reads() {
        println!(
            "reads ({profile:?}): {} served ({} on a follower, {} lease reads), {} failed; {} asked of a \
             deposed leader ({} served) in {} seeds; {} leadership transfers ({} followed by the old \
             leader's isolation)",
            reads.served,
            reads.follower,
            reads.lease,
            reads.failed,
            reads.deposed,
            reads.deposed_served,
            reads.deposed_seeds,
            lease_steps.transfers,
            lease_steps.isolated,
        );
    }
    if seeds.len() >= 20 && failed.is_empty() {
        if profile.reads() {
            assert!(
                reads.served > 0 && reads.follower > 0 && reads.deposed > 0,
                "{} seeds of the {profile:?} profile and not every kind of read exercised ({reads:?})",
                seeds.len()
            );
        }
        assert!(
            transfers > 0 && restores > 0,
            "{} seeds and not one snapshot sent to a follower and restored: the simulation does not exercise \
             InstallSnapshot",
            seeds.len()
        );
        if profile == Profile::Membership {
            assert!(
                changes.learners_added > 0
                    && changes.promoted > 0
                    && changes.removed > 0
                    && changes.leaders_removed > 0
                    && changes.replaced > 0,
                "{} seeds of the membership profile and not every kind of change acknowledged ({changes:?})",
                seeds.len()
            );
        }
        if profile == Profile::DiskFaults {
            assert!(
                disk.plain > 0 && disk.bare_majority > 0,
                "{} seeds of the disk-fault profile and not both kinds of disk fault ({disk:?})",
                seeds.len()
            );
        }
    }
    assert!(
        failed.is_empty(),
        "failing seeds: {failed:?}; replay one with: {}",
        profile.replay().replace(
            "{seed}",
            &failed.first().copied().unwrap_or_default().to_string()
        )
    );
}

#[test]
fn simulation_classic() {
    sweep(Profile::Classic, &seeds());
}

#[test]
fn simulation_split_appends() {
    sweep(Profile::SplitAppends, &seeds());
}

#[test]
fn simulation_disk_faults() {
    sweep(Profile::DiskFaults, &seeds());
}

#[test]
fn simulation_membership() {
    sweep(Profile::Membership, &seeds());
}

#[test]
fn simulation_leases() {
    sweep(Profile::Leases, &seeds_or(DEFAULT_LEASE_SEEDS));
}

/// Seeds of [`Profile::SplitAppends`] whose run reaches the state of figure 8: a majority held an
/// entry of an older term than its leader's, with nothing of the leader's term, and a later leader
/// replaced it. With the term condition of `maybe_commit` (raft-core's engine) removed, each of them
/// fails with a committed entry lost (found with the `SEEDS=2000` sweep of that profile).
///
/// A change to the nodes or to the schedule changes what every seed does: if one of these no longer
/// reaches the state, pick new ones the same way (seeds that fail with the rule removed and, on
/// correct code, pass and count in the sweep's "later replaced").
const FIGURE_8_SEEDS: [u64; 3] = [1185, 1624, 1689];

/// The [`FIGURE_8_SEEDS`] pass, and each still reaches the state of figure 8.
#[test]
fn split_appends_figure_8_seeds() {
    let profile = Profile::SplitAppends;
    for seed in FIGURE_8_SEEDS {
        let replay = profile.replay().replace("{seed}", &seed.to_string());
        match run_seed_watched(seed, profile) {
            SeedResult::Passed(s) => assert!(
                !s.replaced.is_empty(),
                "seed {seed} no longer reaches the state of figure 8 (no entry a majority held without its \
                 leader's own was replaced; {} such majorities): pick new FIGURE_8_SEEDS; replay: {replay}",
                s.append_faults.old_term_majorities
            ),
            SeedResult::Failed => panic!("simulation FAILED for SEED={seed}; replay: {replay}"),
            SeedResult::Hung => panic!("simulation HUNG for SEED={seed}; replay: {replay}"),
        }
    }
}

/// Seeds of [`Profile::Membership`] that guard the joint-consensus rule: while a configuration is
/// joint, commitment (and election) needs a majority of the new voters *and* of the old (Raft
/// thesis, section 4.3; `Membership::committed_index` and `Membership::is_quorum` in raft-core's
/// `types.rs`). With both made to count the new voters alone, 99 of seeds 0 to 1999 of this profile
/// fail, these four among the first: the commitment checker (state machine safety) sees an entry
/// applied while held by a majority of the joint configuration's new voters but not of its old
/// ones, e.g. seed 99, "node 5 applied 2-46 while only nodes {2, 5} held it durably ... (voters
/// {2, 3, 4, 5}; voters {2, 3, 5} joint with {2, 3, 4, 5}, learners {4})". On correct code each
/// passes and reaches that state (an uncommitted entry held by a majority of the new voters only:
/// [`HarnessStats::joint_new_majority_only`]).
///
/// A change to the nodes or to the schedule changes what every seed does: if one of these no longer
/// reaches the state, pick new ones the same way (seeds that fail with the rule broken and, on
/// correct code, pass and count in the sweep's "joint majorities of the new voters only").
const JOINT_SEEDS: [u64; 4] = [19, 67, 85, 87];

/// The [`JOINT_SEEDS`] pass, and each still reaches the state where counting the new voters of a
/// joint configuration alone would commit an entry.
#[test]
fn membership_joint_seeds() {
    let profile = Profile::Membership;
    for seed in JOINT_SEEDS {
        let replay = profile.replay().replace("{seed}", &seed.to_string());
        match run_seed_watched(seed, profile) {
            SeedResult::Passed(s) => assert!(
                s.harness.joint_new_majority_only > 0,
                "seed {seed} no longer reaches a joint configuration whose new voters alone hold an uncommitted \
                 entry ({:?}): pick new JOINT_SEEDS; replay: {replay}",
                s.membership
            ),
            SeedResult::Failed => panic!("simulation FAILED for SEED={seed}; replay: {replay}"),
            SeedResult::Hung => panic!("simulation HUNG for SEED={seed}; replay: {replay}"),
        }
    }
}

/// Seeds of [`Profile::Classic`] that guard the confirmation round of ReadIndex (Raft thesis,
/// section 6.4; `Engine::read_index` in raft-core's `engine/read.rs`): a leader serves a read only
/// once a majority has answered a round of heartbeats started after the read arrived, so a leader
/// cut off from the cluster, and replaced without knowing it, serves none. With the round skipped
/// (the read released at once at the leader's commit index), 80 of seeds 0 to 1999 of this profile
/// fail the linearizability check, these four among them with a deposed leader missing a write
/// acknowledged by its successor, e.g. seed 182: "stale read: value 57 was acknowledged at index
/// 62 (logical time 1434), but a ReadIndex read on node 2 (it saw the log up to 6-60, read index
/// 60), invoked later (at logical time 1547), did not see it". On correct code each passes, and
/// in each a node that said it led a term for which a newer leader had been seen was asked for
/// reads ([`HarnessStats::reads_on_deposed_leader`]; it served none of them).
///
/// A change to the nodes, to the schedule or to the readers changes what every seed does: if one
/// of these no longer reaches that state, pick new ones the same way (seeds that fail with the
/// round skipped and, on correct code, pass with reads asked of a deposed leader).
const STALE_READ_SEEDS: [u64; 4] = [182, 284, 733, 905];

/// The [`STALE_READ_SEEDS`] pass, and in each a deposed leader that does not know it was replaced
/// is asked for reads.
#[test]
fn classic_stale_read_seeds() {
    let profile = Profile::Classic;
    for seed in STALE_READ_SEEDS {
        let replay = profile.replay().replace("{seed}", &seed.to_string());
        match run_seed_watched(seed, profile) {
            SeedResult::Passed(s) => {
                let h = &s.harness;
                assert!(
                    h.reads_on_deposed_leader > 0,
                    "seed {seed} no longer asks a deposed leader for reads: pick new STALE_READ_SEEDS; \
                     replay: {replay}"
                );
            }
            SeedResult::Failed => panic!("simulation FAILED for SEED={seed}; replay: {replay}"),
            SeedResult::Hung => panic!("simulation HUNG for SEED={seed}; replay: {replay}"),
        }
    }
}

/// Seeds of [`Profile::DiskFaults`] that guard the rule "a node that lost entries does not vote until
/// it has caught up" (`VoteRefusal::CatchingUp` in raft-core's `Engine::vote_refusal`, set from
/// `RaftStorage::lost_entries_on_open`). In each, a node whose disk lost entries it had helped a bare
/// majority commit refuses its vote to a candidate lacking one of them; with the refusal removed from
/// `vote_refusal`, each fails (leader completeness: the candidate wins and a committed entry is lost).
/// Found with `catch_up_seed_scan` and a sweep of the profile with the refusal removed (see that
/// test for the steps). Checked again with pre-vote and check-quorum on: each is still in both lists
/// (with pre-votes, the damaged node withholds its pre-vote, and the candidate never asks for real
/// votes).
///
/// A change to the nodes or to the schedule changes what every seed does: if one of these no longer
/// withholds such a vote, or no longer fails with the refusal removed, pick new ones the same way.
const CATCH_UP_SEEDS: [u64; 4] = [0, 1, 9, 14];

/// The [`CATCH_UP_SEEDS`] pass, and in each a node catching up after a disk fault still withholds a
/// vote that would have elected a leader lacking a committed entry.
#[test]
fn disk_faults_catch_up_seeds() {
    let profile = Profile::DiskFaults;
    for seed in CATCH_UP_SEEDS {
        let replay = profile.replay().replace("{seed}", &seed.to_string());
        match run_seed_watched(seed, profile) {
            SeedResult::Passed(s) => assert!(
                s.harness.votes_withheld_after_disk_fault > 0,
                "seed {seed} no longer reaches the state where a node catching up after a disk fault withholds \
                 a vote from a candidate lacking a committed entry ({:?}): pick new CATCH_UP_SEEDS (see \
                 catch_up_seed_scan); replay: {replay}",
                s.disk
            ),
            SeedResult::Failed => panic!("simulation FAILED for SEED={seed}; replay: {replay}"),
            SeedResult::Hung => panic!("simulation HUNG for SEED={seed}; replay: {replay}"),
        }
    }
}

/// Lists the seeds of [`Profile::DiskFaults`] (the `SEEDS` / `SEED_START` range) that pass and in
/// which a node catching up after a disk fault withholds a vote from a candidate lacking a committed
/// entry: the candidates for [`CATCH_UP_SEEDS`]. To re-pick those:
///
/// 1. on the engine as it is, list the candidates:
///    `SEEDS=2000 cargo test --release -p lucid-raft-sim --test simulation catch_up_seed_scan -- --ignored --nocapture`
/// 2. remove the refusal `if self.catching_up { return Some(VoteRefusal::CatchingUp); }` from
///    `Engine::ballot_refusal` (raft-core/src/engine/election.rs), locally, and sweep the profile:
///    `SEEDS=2000 cargo test --release -p lucid-raft-sim --test simulation simulation_disk_faults -- --nocapture`
///    (it fails, printing `simulation FAILED for SEED=...` for each failing seed);
/// 3. restore the engine, and pin a few seeds that are in both lists.
#[test]
#[ignore = "a scan to re-pick CATCH_UP_SEEDS, not a check"]
fn catch_up_seed_scan() {
    let profile = Profile::DiskFaults;
    let mut found = Vec::new();
    for seed in seeds() {
        let replay = profile.replay().replace("{seed}", &seed.to_string());
        match run_seed_watched(seed, profile) {
            SeedResult::Passed(s) if s.harness.votes_withheld_after_disk_fault > 0 => {
                found.push(seed)
            }
            SeedResult::Passed(_) => {}
            SeedResult::Failed => eprintln!("simulation FAILED for SEED={seed}; replay: {replay}"),
            SeedResult::Hung => panic!("simulation HUNG for SEED={seed}; replay: {replay}"),
        }
    }
    println!(
        "{} seeds withhold a vote from a candidate lacking a committed entry after a disk fault: {found:?}",
        found.len()
    );
}

/// The same seed gives the same run: same client history, same logs, same leaders, same message
/// counts. This is what makes a failing seed replay exactly.
#[test]
fn same_seed_same_history() {
    let runs = match env_u64("SEED") {
        Some(seed) => vec![
            (seed, Profile::Classic),
            (seed, Profile::SplitAppends),
            (seed, Profile::DiskFaults),
            (seed, Profile::Membership),
            (seed, Profile::Leases),
        ],
        None => vec![
            (7, Profile::Classic),
            (8, Profile::Classic),
            (9, Profile::Classic),
            (9, Profile::SplitAppends),
            (9, Profile::DiskFaults),
            (9, Profile::Membership),
            (9, Profile::Leases),
        ],
    };
    for (seed, profile) in runs {
        let first = run_seed(seed, profile);
        let second = run_seed(seed, profile);
        assert!(first.acked() > 0, "the run did some work");
        if first != second {
            let diverge = first
                .history
                .iter()
                .zip(&second.history)
                .position(|(a, b)| a != b);
            panic!(
                "seed {seed} ({profile:?}) did not replay exactly: first difference in the history at {diverge:?}; \
                 router {:?} vs {:?}; harness {:?} vs {:?}; append faults {:?} vs {:?}",
                first.router,
                second.router,
                first.harness,
                second.harness,
                first.append_faults,
                second.append_faults
            );
        }
    }
}
