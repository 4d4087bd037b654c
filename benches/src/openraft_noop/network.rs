//! The in-process network of the openraft nodes: an RPC is a direct call of the target node's
//! [`Raft`](openraft::Raft) handle, the request moved, not serialized (as `raft-net-mock` without
//! faults does for ours).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{EmptyNode, RaftNetwork, RaftNetworkFactory};

use super::{NoopConfig, NoopRaft};

/// The nodes of one cluster by id; the network factory every node is given. Clones share the table.
#[derive(Clone, Default)]
pub struct NoopRouter {
    nodes: Arc<Mutex<BTreeMap<u64, NoopRaft>>>,
    /// AppendEntries calls dropped before the target answered: openraft bounds each one by the
    /// heartbeat interval and drops it when that expires.
    abandoned_appends: Arc<AtomicU64>,
}

impl NoopRouter {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, NoopRaft>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes node `id` reachable through `raft`.
    pub fn register(&self, id: u64, raft: NoopRaft) {
        self.lock().insert(id, raft);
    }

    /// Forgets every node (drops the handles the table holds).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many AppendEntries calls were dropped before the target answered (openraft's timeout),
    /// since the router was made.
    pub fn abandoned_appends(&self) -> u64 {
        self.abandoned_appends.load(Ordering::Relaxed)
    }
}

/// Counts a call as abandoned when it is dropped before [`answered`](CallGuard::answered).
struct CallGuard<'a> {
    abandoned: &'a AtomicU64,
    answered: bool,
}

impl CallGuard<'_> {
    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl RaftNetworkFactory<NoopConfig> for NoopRouter {
    type Network = NoopConnection;

    async fn new_client(&mut self, target: u64, _node: &EmptyNode) -> NoopConnection {
        NoopConnection {
            target,
            router: self.clone(),
            raft: None,
        }
    }
}

/// A node that is not (or no longer) in the router's table.
#[derive(Debug)]
struct NotRegistered(u64);

impl std::fmt::Display for NotRegistered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} is not registered with the router", self.0)
    }
}

impl std::error::Error for NotRegistered {}

/// One node's connection to `target`: the target's handle, looked up once it is registered.
pub struct NoopConnection {
    target: u64,
    router: NoopRouter,
    raft: Option<NoopRaft>,
}

impl NoopConnection {
    /// The target's handle (looked up on the first call that finds it registered, then kept).
    fn target(&mut self) -> Result<NoopRaft, Unreachable> {
        if self.raft.is_none() {
            self.raft = self.router.lock().get(&self.target).cloned();
        }
        self.raft
            .clone()
            .ok_or_else(|| Unreachable::new(&NotRegistered(self.target)))
    }
}

impl RaftNetwork<NoopConfig> for NoopConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<NoopConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, EmptyNode, RaftError<u64>>> {
        let raft = self.target()?;
        let abandoned = Arc::clone(&self.router.abandoned_appends);
        let guard = CallGuard {
            abandoned: &abandoned,
            answered: false,
        };
        let answer = raft.append_entries(rpc).await;
        guard.answered();
        answer.map_err(|e| RemoteError::new(self.target, e).into())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<NoopConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, EmptyNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let raft = self.target()?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RemoteError::new(self.target, e).into())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, EmptyNode, RaftError<u64>>> {
        let raft = self.target()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RemoteError::new(self.target, e).into())
    }
}
