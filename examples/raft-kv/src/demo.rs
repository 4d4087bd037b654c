//! The failover demo: a 3-node cluster loses its leader and keeps every acknowledged write.
//!
//! [`run_failover`] is the whole scenario; it narrates each step in plain sentences through a callback
//! and checks everything it shows, against an independent model of the table. The `failover` example
//! runs it on the real clock and prints the story; the `failover` integration test runs it on tokio's
//! paused clock and asserts on the returned [`DemoReport`].

use std::collections::BTreeMap;
use std::time::Duration;

use raft_core::{Config, LogIndex, NodeId, Role, Term};
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterError};
use crate::command::{KvCommand, KvResponse};

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The configuration of every node. Its `seed` also seeds the mock network.
    pub config: Config,
    /// The longest any single step (an election, a write, a catch-up) may take.
    pub step_timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            config: Config::default(),
            step_timeout: Duration::from_secs(5),
        }
    }
}

/// What happened in a successful run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoReport {
    /// The first leader (the node that is killed, then restarted).
    pub first_leader: NodeId,
    /// Its term.
    pub first_term: Term,
    /// From initialization until every node followed the first leader.
    pub first_election: Duration,
    /// The leader elected after the first one was killed.
    pub new_leader: NodeId,
    /// Its term.
    pub new_term: Term,
    /// From the kill until the new leader was elected.
    pub failover: Duration,
    /// From the restart until the old leader had applied everything the new leader had.
    pub catch_up: Duration,
    /// The log index every node had applied at the end.
    pub final_index: LogIndex,
    /// The table every node held at the end.
    pub data: BTreeMap<String, String>,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A cluster operation failed (a timeout, a stopped node, a failed write).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The cluster answered, but not what a correct replicated table must answer.
    #[error("wrong result: {0}")]
    Check(String),
}

/// The node ids of the demo cluster.
pub const NODES: [NodeId; 3] = [1, 2, 3];

/// Runs the failover scenario, calling `say` with one plain sentence per step:
///
/// 1. start 3 nodes, initialize them and wait for a leader;
/// 2. write keys through the leader (puts, compare-and-swaps that succeed and fail, a delete) and read
///    them back through the log;
/// 3. kill the leader and wait for a new one;
/// 4. read everything back through the new leader's log and its local table, then write more;
/// 5. restart the old leader from its storage and wait until it has caught up;
/// 6. check that all 3 nodes hold the same table, the one the model predicts.
///
/// # Errors
/// [`DemoError::Cluster`] if a step fails or times out, [`DemoError::Check`] if a response or a node's
/// table differs from the model.
pub async fn run_failover(
    options: DemoOptions,
    mut say: impl FnMut(&str),
) -> Result<DemoReport, DemoError> {
    let mut say = |s: String| say(&s);
    let mut model = Model::default();

    say(format!(
        "Starting 3 Raft nodes ({}) in this process. Each keeps its log in memory; they talk through \
         an in-process network.",
        list_ids(&NODES)
    ));
    let mut cluster = Cluster::start(NODES, options.config.clone()).await?;
    cluster.set_timeout(options.step_timeout);
    let started = Instant::now();
    cluster.initialize().await?;
    say("Initialized the cluster with all 3 nodes as voters; waiting for an election...".into());
    let (leader, term) = cluster.wait_for_leader(0).await?;
    cluster
        .wait_until("every node to follow the first leader", |all| {
            all.values()
                .all(|m| m.current_leader == Some(leader))
                .then_some(())
        })
        .await?;
    let first_election = started.elapsed();
    say(format!(
        "Node {leader} is leader of term {term} (elected after {} ms); the other nodes follow it.",
        first_election.as_millis()
    ));
    let log_len = cluster
        .metrics(leader)
        .map(|m| m.last_log_id.index)
        .unwrap_or_default();
    say(format!(
        "Its log already holds {log_len} entries: the cluster membership, and the empty entry a \
         new leader writes to start its term. Client commands come next."
    ));

    say(
        "Writing through the leader. A write returns once a majority of the nodes have stored it \
         and the leader has applied it:"
            .into(),
    );
    for command in [
        KvCommand::put("apple", "red"),
        KvCommand::put("banana", "yellow"),
        KvCommand::put("cherry", "dark red"),
        KvCommand::compare_and_swap("banana", Some("yellow"), "green"),
        KvCommand::compare_and_swap("cherry", Some("red"), "black"),
        KvCommand::compare_and_swap("date", None, "brown"),
        KvCommand::put("elderberry", "purple"),
        KvCommand::delete("elderberry"),
    ] {
        write_checked(&cluster, &mut model, command, &mut say).await?;
    }
    say("Reading back through the log (a GET is a log entry too, so it sees every write before it):"
        .into());
    for key in ["apple", "banana", "cherry", "date", "elderberry"] {
        write_checked(&cluster, &mut model, KvCommand::get(key), &mut say).await?;
    }
    let index = applied_index(&cluster, leader)?;
    cluster.wait_for_applied(&NODES, index).await?;
    check_tables(&cluster, &NODES, &model)?;
    say(format!(
        "All 3 nodes hold the same {} keys (each applied the log up to index {index}).",
        model.data.len()
    ));

    say(format!(
        "Killing leader {leader}: it stops and drops off the network. Nodes {} are still a majority \
         (2 of 3), so they can elect a new leader.",
        list_ids(&others(leader))
    ));
    let killed_at = Instant::now();
    cluster.kill(leader).await?;
    let (new_leader, new_term) = cluster.wait_for_leader(term).await?;
    let failover = killed_at.elapsed();
    say(format!(
        "Node {new_leader} elected leader of term {new_term} after {} ms.",
        failover.as_millis()
    ));

    say(format!(
        "Reading every key through node {new_leader}'s log:"
    ));
    for key in ["apple", "banana", "cherry", "date", "elderberry"] {
        write_checked(&cluster, &mut model, KvCommand::get(key), &mut say).await?;
    }
    check_tables(&cluster, &[new_leader], &model)?;
    say(format!(
        "Node {new_leader}'s local copy of the table agrees: {}.",
        describe_table(&model.data)
    ));

    say("Writing more through the new leader:".into());
    for command in [
        KvCommand::put("fig", "purple"),
        KvCommand::compare_and_swap("grape", None, "green"),
        KvCommand::put("apple", "green"),
    ] {
        write_checked(&cluster, &mut model, command, &mut say).await?;
    }
    let survivors = others(leader);
    let index = applied_index(&cluster, new_leader)?;
    cluster.wait_for_applied(&survivors, index).await?;
    check_tables(&cluster, &survivors, &model)?;
    say(format!(
        "Nodes {} hold the same {} keys.",
        list_ids(&survivors),
        model.data.len()
    ));

    say(format!(
        "Restarting node {leader} from its storage: its log survived the crash, but its table was in \
         memory, so it starts empty and is rebuilt by replaying the log..."
    ));
    let restarted_at = Instant::now();
    cluster.restart(leader).await?;
    let target = applied_index(&cluster, new_leader)?;
    let role = cluster
        .wait_until(
            &format!("node {leader} to catch up to index {target}"),
            |all| {
                all.get(&leader)
                    .filter(|m| m.current_leader == Some(new_leader) && m.last_applied >= target)
                    .map(|m| m.role)
            },
        )
        .await?;
    let catch_up = restarted_at.elapsed();
    if role != Role::Follower {
        return Err(DemoError::Check(format!(
            "restarted node {leader} is {role:?}, expected a follower of {new_leader}"
        )));
    }
    say(format!(
        "Node {leader} rejoined as a follower of node {new_leader} and caught up to log index \
         {target} after {} ms.",
        catch_up.as_millis()
    ));
    cluster.wait_for_applied(&NODES, target).await?;
    check_tables(&cluster, &NODES, &model)?;
    let final_index = NODES
        .iter()
        .filter_map(|&id| cluster.metrics(id).map(|m| m.last_applied))
        .min()
        .unwrap_or_default();
    say(format!(
        "All 3 nodes hold the same {} keys: {}.",
        model.data.len(),
        describe_table(&model.data)
    ));
    cluster.shutdown().await;
    say("Success: no acknowledged write was lost when the leader died, and the restarted node caught up."
        .into());

    Ok(DemoReport {
        first_leader: leader,
        first_term: term,
        first_election,
        new_leader,
        new_term,
        failover,
        catch_up,
        final_index,
        data: model.data,
    })
}

/// An independent model of the table: what each command must answer.
#[derive(Default)]
struct Model {
    data: BTreeMap<String, String>,
}

impl Model {
    fn apply(&mut self, command: &KvCommand) -> KvResponse {
        match command {
            KvCommand::Put { key, value } => KvResponse::Put {
                previous: self.data.insert(key.clone(), value.clone()),
            },
            KvCommand::Get { key } => KvResponse::Value(self.data.get(key).cloned()),
            KvCommand::Delete { key } => KvResponse::Deleted {
                previous: self.data.remove(key),
            },
            KvCommand::CompareAndSwap { key, expected, new } => {
                if self.data.get(key) == expected.as_ref() {
                    self.data.insert(key.clone(), new.clone());
                    KvResponse::CasResult {
                        swapped: true,
                        current: Some(new.clone()),
                    }
                } else {
                    KvResponse::CasResult {
                        swapped: false,
                        current: self.data.get(key).cloned(),
                    }
                }
            }
            // The demo opens no sessions; a command in one would be applied once, like this.
            KvCommand::Session { command, .. } => self.apply(command),
        }
    }
}

/// Writes `command` through the leader, prints it, and checks its response against the model.
async fn write_checked(
    cluster: &Cluster,
    model: &mut Model,
    command: KvCommand,
    say: &mut impl FnMut(String),
) -> Result<KvResponse, DemoError> {
    let reply = cluster.write(command.clone()).await?;
    let expected = model.apply(&command);
    say(format!(
        "  {:<38} -> {} (log index {})",
        describe_command(&command),
        describe_response(&reply.data),
        reply.log_id.index
    ));
    if reply.data != expected {
        return Err(DemoError::Check(format!(
            "{command:?} answered {:?}, expected {expected:?}",
            reply.data
        )));
    }
    Ok(reply.data)
}

/// Checks that the local table of each of `ids` is the model's.
fn check_tables(cluster: &Cluster, ids: &[NodeId], model: &Model) -> Result<(), DemoError> {
    for &id in ids {
        let table = cluster
            .reader(id)
            .map(|r| r.to_map())
            .ok_or(ClusterError::UnknownNode(id))?;
        if table != model.data {
            return Err(DemoError::Check(format!(
                "node {id} holds {}, expected {}",
                describe_table(&table),
                describe_table(&model.data)
            )));
        }
    }
    Ok(())
}

fn applied_index(cluster: &Cluster, id: NodeId) -> Result<LogIndex, ClusterError> {
    cluster
        .metrics(id)
        .map(|m| m.last_applied)
        .ok_or(ClusterError::NodeDown(id))
}

fn others(id: NodeId) -> Vec<NodeId> {
    NODES.iter().copied().filter(|&n| n != id).collect()
}

/// "1, 2 and 3".
fn list_ids(ids: &[NodeId]) -> String {
    let names: Vec<String> = ids.iter().map(NodeId::to_string).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

fn describe_table(table: &BTreeMap<String, String>) -> String {
    if table.is_empty() {
        return "an empty table".into();
    }
    table
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_command(command: &KvCommand) -> String {
    match command {
        KvCommand::Put { key, value } => format!("PUT {key} = {value:?}"),
        KvCommand::Get { key } => format!("GET {key}"),
        KvCommand::Delete { key } => format!("DELETE {key}"),
        KvCommand::CompareAndSwap {
            key,
            expected: Some(expected),
            new,
        } => format!("CAS {key}: if {expected:?} then {new:?}"),
        KvCommand::CompareAndSwap {
            key,
            expected: None,
            new,
        } => format!("CAS {key}: if absent then {new:?}"),
        KvCommand::Session {
            client_id,
            seq,
            command,
            ..
        } => format!("{} (client {client_id}, #{seq})", describe_command(command)),
    }
}

fn describe_response(response: &KvResponse) -> String {
    match response {
        KvResponse::Value(Some(v)) => format!("{v:?}"),
        KvResponse::Value(None) => "not found".into(),
        KvResponse::Put { previous: None } => "created".into(),
        KvResponse::Put {
            previous: Some(old),
        } => format!("replaced {old:?}"),
        KvResponse::Deleted {
            previous: Some(old),
        } => format!("deleted (it was {old:?})"),
        KvResponse::Deleted { previous: None } => "not found, nothing deleted".into(),
        KvResponse::CasResult {
            swapped: true,
            current: Some(v),
        } => format!("swapped, now {v:?}"),
        KvResponse::CasResult {
            swapped: true,
            current: None,
        } => "swapped, now absent".into(),
        KvResponse::CasResult {
            swapped: false,
            current: Some(v),
        } => format!("not swapped: the value is {v:?}"),
        KvResponse::CasResult {
            swapped: false,
            current: None,
        } => "not swapped: the key is absent".into(),
        KvResponse::NoOp => "no-op".into(),
        KvResponse::Duplicate { index, response } => format!(
            "already applied at index {index}: {}",
            describe_response(response)
        ),
        KvResponse::SessionStale { latest } => {
            format!("stale: the session is at #{latest}, nothing applied")
        }
        KvResponse::SessionExpired => "session expired, nothing applied".into(),
        KvResponse::Refused(why) => format!("refused: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_ids_in_plain_english() {
        assert_eq!(list_ids(&[1, 2, 3]), "1, 2 and 3");
        assert_eq!(list_ids(&[2, 3]), "2 and 3");
        assert_eq!(list_ids(&[2]), "2");
    }
}
