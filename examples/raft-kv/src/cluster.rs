//! [`Cluster`]: several key-value nodes in one process, on in-memory storage and the mock network,
//! with the operations a test or a demo needs (find the leader, write, kill, restart, wait).

use std::collections::BTreeMap;
use std::time::Duration;

use raft_core::{
    ClientWriteError, ClientWriteResponse, Config, InitializeError, LogIndex, Metrics, NodeId,
    NodeStatus, Raft, Role, StartError, Term,
};
use raft_net_mock::Router;
use raft_storage_mem::{MemStorage, MemStorageHandle};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::command::{KvCommand, KvResponse};
use crate::state_machine::{KvReader, KvStateMachine};

/// A key-value Raft node.
pub type KvRaft = Raft<KvStateMachine>;

/// What went wrong in a [`Cluster`] operation.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The id is not one of the cluster's nodes.
    #[error("node {0} is not part of the cluster")]
    UnknownNode(NodeId),
    /// The node is down (killed and not restarted).
    #[error("node {0} is down")]
    NodeDown(NodeId),
    /// The node is up, but wants to be down for this operation (e.g. restart of a running node).
    #[error("node {0} is running")]
    NodeRunning(NodeId),
    /// A node that should be running stopped on its own (storage or state machine failure).
    #[error("node {id} stopped unexpectedly: {reason}")]
    NodeStopped {
        /// The node.
        id: NodeId,
        /// Why it stopped, from its metrics.
        reason: String,
    },
    /// `Raft::start` failed.
    #[error("node {id} failed to start: {source}")]
    Start {
        /// The node.
        id: NodeId,
        /// The error.
        #[source]
        source: StartError,
    },
    /// `Raft::initialize` failed.
    #[error("node {id} refused to initialize: {source}")]
    Initialize {
        /// The node.
        id: NodeId,
        /// The error.
        #[source]
        source: InitializeError,
    },
    /// A client write failed with an error that retrying cannot fix safely.
    #[error("{command:?} failed at node {node}: {source}")]
    Write {
        /// The node the write was sent to.
        node: NodeId,
        /// The command.
        command: KvCommand,
        /// The error. `OutcomeUnknown` and `Stopped` mean the command may or may not have been applied.
        #[source]
        source: ClientWriteError,
    },
    /// The state machine answered a command with a response of the wrong kind.
    #[error("unexpected response {0:?}")]
    UnexpectedResponse(KvResponse),
    /// Something did not happen within the cluster's timeout.
    #[error("timed out after {} ms waiting for {what}", after.as_millis())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
}

struct Node {
    /// `None` while the node is down.
    raft: Option<KvRaft>,
    /// The reader of the node's current (or, while down, last) state machine.
    reader: KvReader,
    storage: MemStorageHandle<KvCommand>,
}

/// Key-value nodes in one process: each on a [`MemStorage`], all connected by one [`Router`].
///
/// Every wait is bounded by the cluster's [timeout](Self::set_timeout) (default 5 s of tokio time,
/// so virtual time under a paused test clock). Dropping the cluster stops its nodes.
pub struct Cluster {
    router: Router<KvStateMachine>,
    config: Config,
    timeout: Duration,
    nodes: BTreeMap<NodeId, Node>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.ids())
            .field("running", &self.running())
            .finish()
    }
}

impl Cluster {
    /// Starts one node per id with `config`, each with empty storage, and connects them. The router's
    /// random generator is seeded with `config.seed`. Call [`initialize`](Self::initialize) next.
    ///
    /// # Errors
    /// [`ClusterError::Start`] if a node refuses to start (e.g. an invalid `config`).
    pub async fn start(
        ids: impl IntoIterator<Item = NodeId>,
        config: Config,
    ) -> Result<Self, ClusterError> {
        let mut cluster = Cluster {
            router: Router::new(config.seed),
            config,
            timeout: Duration::from_secs(5),
            nodes: BTreeMap::new(),
        };
        for id in ids {
            let storage = MemStorage::new();
            let handle = storage.handle();
            let (raft, reader) = cluster.boot(id, storage).await?;
            cluster.nodes.insert(
                id,
                Node {
                    raft: Some(raft),
                    reader,
                    storage: handle,
                },
            );
        }
        Ok(cluster)
    }

    /// Starts node `id` on `storage` with a fresh state machine and registers it with the router.
    async fn boot(
        &self,
        id: NodeId,
        storage: MemStorage<KvCommand>,
    ) -> Result<(KvRaft, KvReader), ClusterError> {
        let state_machine = KvStateMachine::new();
        let reader = state_machine.reader();
        let raft = Raft::start(
            id,
            self.config.clone(),
            storage,
            self.router.network(id),
            state_machine,
        )
        .await
        .map_err(|source| ClusterError::Start { id, source })?;
        self.router.register(id, raft.clone());
        Ok((raft, reader))
    }

    /// Sets how long waits and writes may take before they fail with [`ClusterError::Timeout`].
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Bootstraps the cluster: every running node is initialized with all the cluster's ids as voters.
    ///
    /// # Errors
    /// [`ClusterError::Initialize`] if a node refuses (e.g. it was initialized before).
    pub async fn initialize(&self) -> Result<(), ClusterError> {
        let voters = self.ids();
        for (id, raft) in self.running_nodes() {
            raft.initialize(voters.iter().copied())
                .await
                .map_err(|source| ClusterError::Initialize { id, source })?;
        }
        Ok(())
    }

    /// Bootstraps the cluster with only `voters` as voters: those of them running are initialized;
    /// the cluster's other nodes stay empty, to be added later (as learners, say).
    ///
    /// # Errors
    /// [`ClusterError::UnknownNode`] for a voter that is not one of the cluster's nodes;
    /// [`ClusterError::Initialize`] if a node refuses.
    pub async fn initialize_voters(&self, voters: &[NodeId]) -> Result<(), ClusterError> {
        if let Some(&id) = voters.iter().find(|id| !self.nodes.contains_key(id)) {
            return Err(ClusterError::UnknownNode(id));
        }
        for (id, raft) in self.running_nodes().filter(|(id, _)| voters.contains(id)) {
            raft.initialize(voters.iter().copied())
                .await
                .map_err(|source| ClusterError::Initialize { id, source })?;
        }
        Ok(())
    }

    /// The router connecting the nodes: partition, isolate or inject faults with it.
    pub fn router(&self) -> &Router<KvStateMachine> {
        &self.router
    }

    /// All the cluster's node ids, up or down.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The ids of the running nodes.
    pub fn running(&self) -> Vec<NodeId> {
        self.running_nodes().map(|(id, _)| id).collect()
    }

    /// The handle of node `id`, if it is running.
    pub fn raft(&self, id: NodeId) -> Option<&KvRaft> {
        self.nodes.get(&id).and_then(|n| n.raft.as_ref())
    }

    /// The reader of node `id`'s state machine (while the node is down: of its last one).
    pub fn reader(&self, id: NodeId) -> Option<&KvReader> {
        self.nodes.get(&id).map(|n| &n.reader)
    }

    /// The durable storage of node `id`, for inspection.
    pub fn storage(&self, id: NodeId) -> Option<&MemStorageHandle<KvCommand>> {
        self.nodes.get(&id).map(|n| &n.storage)
    }

    /// The latest metrics of node `id`, if it is running.
    pub fn metrics(&self, id: NodeId) -> Option<Metrics> {
        self.raft(id).map(|r| r.metrics().borrow().clone())
    }

    fn running_nodes(&self) -> impl Iterator<Item = (NodeId, &KvRaft)> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| n.raft.as_ref().map(|r| (id, r)))
    }

    /// Waits until `check`, given the metrics of every running node, returns `Some`, and returns it.
    /// `check` runs again each time a node publishes new metrics.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`] (naming `what`) after the cluster's timeout;
    /// [`ClusterError::NodeStopped`] if a running node stops on its own meanwhile.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        mut check: impl FnMut(&BTreeMap<NodeId, Metrics>) -> Option<T>,
    ) -> Result<T, ClusterError> {
        let mut watches: Vec<(NodeId, watch::Receiver<Metrics>)> = self
            .running_nodes()
            .map(|(id, raft)| (id, raft.metrics()))
            .collect();
        let wait = async {
            loop {
                let mut metrics = BTreeMap::new();
                for (id, rx) in &mut watches {
                    let m = rx.borrow_and_update().clone();
                    if let NodeStatus::Stopped(reason) = &m.status {
                        return Err(ClusterError::NodeStopped {
                            id: *id,
                            reason: reason.clone(),
                        });
                    }
                    metrics.insert(*id, m);
                }
                if let Some(found) = check(&metrics) {
                    return Ok(found);
                }
                if watches.is_empty() {
                    std::future::pending::<()>().await;
                }
                let (changed, i, rest) = futures::future::select_all(
                    watches.iter_mut().map(|(_, rx)| Box::pin(rx.changed())),
                )
                .await;
                drop(rest);
                if changed.is_err() {
                    let id = watches[i].0;
                    let reason = match &watches[i].1.borrow().status {
                        NodeStatus::Stopped(reason) => reason.clone(),
                        NodeStatus::Running => "its driver ended".to_string(),
                    };
                    return Err(ClusterError::NodeStopped { id, reason });
                }
            }
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .unwrap_or_else(|_| {
                Err(ClusterError::Timeout {
                    what: what.to_string(),
                    after: self.timeout,
                })
            })
    }

    /// Waits until a running node is leader of a term above `newer_than`, and returns it and its term
    /// (the highest such term if several nodes believe they lead, e.g. a deposed leader that is cut
    /// off).
    ///
    /// # Errors
    /// See [`wait_until`](Self::wait_until).
    pub async fn wait_for_leader(&self, newer_than: Term) -> Result<(NodeId, Term), ClusterError> {
        self.wait_until(&format!("a leader of a term above {newer_than}"), |all| {
            all.iter()
                .filter(|(_, m)| m.role == Role::Leader && m.current_term > newer_than)
                .map(|(&id, m)| (id, m.current_term))
                .max_by_key(|&(_, term)| term)
        })
        .await
    }

    /// Waits until every node of `ids` (all running) has applied the log up to `index`.
    ///
    /// # Errors
    /// [`ClusterError::NodeDown`] if one of them is not running; see also
    /// [`wait_until`](Self::wait_until).
    pub async fn wait_for_applied(
        &self,
        ids: &[NodeId],
        index: LogIndex,
    ) -> Result<(), ClusterError> {
        for &id in ids {
            self.raft(id).ok_or_else(|| self.down_or_unknown(id))?;
        }
        self.wait_until(&format!("nodes {ids:?} to apply index {index}"), |all| {
            ids.iter()
                .all(|id| all.get(id).is_some_and(|m| m.last_applied >= index))
                .then_some(())
        })
        .await
    }

    /// Sends `command` to the current leader and waits until it is applied. A `NotLeader` answer
    /// (nothing was proposed) is retried at the next leader; any other error is returned, as it may
    /// leave the command applied or not.
    ///
    /// # Errors
    /// [`ClusterError::Write`], or [`ClusterError::Timeout`] (outcome unknown) after the cluster's
    /// timeout.
    pub async fn write(
        &self,
        command: KvCommand,
    ) -> Result<ClientWriteResponse<KvResponse>, ClusterError> {
        let deadline = Instant::now() + self.timeout;
        let timed_out = || ClusterError::Timeout {
            what: format!("{command:?} to be applied"),
            after: self.timeout,
        };
        loop {
            let (leader, _) = self.wait_for_leader(0).await?;
            let raft = self.raft(leader).ok_or(ClusterError::NodeDown(leader))?;
            let write = tokio::time::timeout_at(deadline, raft.client_write(command.clone()));
            match write.await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(ClientWriteError::NotLeader { .. })) if Instant::now() < deadline => {
                    // It lost leadership before its metrics said so; give the election a moment.
                    tokio::time::sleep(self.config.heartbeat_interval).await;
                }
                Ok(Err(source)) => {
                    return Err(ClusterError::Write {
                        node: leader,
                        command,
                        source,
                    })
                }
                Err(_) => return Err(timed_out()),
            }
        }
    }

    /// Reads `key` through the log (a [`KvCommand::Get`] sent to the leader): linearizable.
    ///
    /// # Errors
    /// See [`write`](Self::write).
    pub async fn read(&self, key: &str) -> Result<Option<String>, ClusterError> {
        match self.write(KvCommand::get(key)).await?.data {
            KvResponse::Value(value) => Ok(value),
            other => Err(ClusterError::UnexpectedResponse(other)),
        }
    }

    /// Crashes node `id`: removes it from the network, then stops it. Its storage survives (see
    /// [`restart`](Self::restart)); its in-memory state machine is gone.
    ///
    /// # Errors
    /// [`ClusterError::NodeDown`] if it is already down, [`ClusterError::UnknownNode`].
    pub async fn kill(&mut self, id: NodeId) -> Result<(), ClusterError> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(ClusterError::UnknownNode(id))?;
        let raft = node.raft.take().ok_or(ClusterError::NodeDown(id))?;
        self.router.unregister(id);
        raft.shutdown().await;
        Ok(())
    }

    /// Starts node `id` again on what its storage holds, with a new, empty state machine (the log is
    /// replayed into it), and reconnects it.
    ///
    /// # Errors
    /// [`ClusterError::NodeRunning`], [`ClusterError::UnknownNode`], [`ClusterError::Start`].
    pub async fn restart(&mut self, id: NodeId) -> Result<(), ClusterError> {
        let node = self.nodes.get(&id).ok_or(ClusterError::UnknownNode(id))?;
        if node.raft.is_some() {
            return Err(ClusterError::NodeRunning(id));
        }
        let storage = node.storage.open();
        let (raft, reader) = self.boot(id, storage).await?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.raft = Some(raft);
            node.reader = reader;
        }
        Ok(())
    }

    /// Stops every running node and waits for them to end.
    pub async fn shutdown(&mut self) {
        for id in self.running() {
            let _ = self.kill(id).await;
        }
    }

    fn down_or_unknown(&self, id: NodeId) -> ClusterError {
        if self.nodes.contains_key(&id) {
            ClusterError::NodeDown(id)
        } else {
            ClusterError::UnknownNode(id)
        }
    }
}

impl Drop for Cluster {
    /// The router holds every node's handle and every node holds the router (in its network), so the
    /// nodes would keep each other running; unregistering breaks that cycle and the nodes stop once
    /// their last handle is dropped.
    fn drop(&mut self) {
        for id in self.nodes.keys() {
            self.router.unregister(*id);
        }
    }
}
