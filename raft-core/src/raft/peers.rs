//! One task per peer that sends RPCs in order, keeps several in flight, bounds each with a timeout and
//! reports every outcome back to the driver.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::error::NetworkError;
use crate::message::{Request, Response};
use crate::network::RaftNetwork;
use crate::state_machine::AppCommand;
use crate::types::NodeId;

/// The outcome of one RPC, reported to the driver.
#[derive(Debug)]
pub(crate) struct RpcOutcome {
    pub(crate) from: NodeId,
    /// Whether the request replicates (AppendEntries or InstallSnapshot): a failure makes the leader
    /// probe again, or resume a snapshot transfer.
    pub(crate) replicates: bool,
    /// Whether the request was a follower's `ReadIndex`: its outcome answers a batch of reads.
    pub(crate) reads: bool,
    pub(crate) result: Result<Response, NetworkError>,
}

/// The sending side of a peer's task.
pub(crate) struct PeerSender<C> {
    tx: mpsc::UnboundedSender<Request<C>>,
}

impl<C: AppCommand> PeerSender<C> {
    pub(crate) fn spawn<N: RaftNetwork<C>>(
        target: NodeId,
        network: Arc<N>,
        rpc_timeout: Duration,
        outcomes: mpsc::UnboundedSender<RpcOutcome>,
        node_span: &tracing::Span,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        // Under the node's span, not the term's in force when the peer was first needed.
        let span = tracing::debug_span!(parent: node_span, "peer", target);
        tokio::spawn(run(target, network, rpc_timeout, rx, outcomes).instrument(span));
        PeerSender { tx }
    }

    pub(crate) fn send(&self, request: Request<C>) {
        // The task ends only when the driver drops this sender or the driver's channel closes.
        let _ = self.tx.send(request);
    }
}

async fn run<C: AppCommand, N: RaftNetwork<C>>(
    target: NodeId,
    network: Arc<N>,
    rpc_timeout: Duration,
    mut requests: mpsc::UnboundedReceiver<Request<C>>,
    outcomes: mpsc::UnboundedSender<RpcOutcome>,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            done = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(outcome) = done {
                    if outcomes.send(outcome).is_err() {
                        return;
                    }
                }
            }
            req = requests.recv() => {
                let Some(req) = req else { return };
                let network = Arc::clone(&network);
                in_flight.push(async move {
                    let replicates = matches!(req, Request::AppendEntries(_) | Request::InstallSnapshot(_));
                    let reads = matches!(req, Request::ReadIndex(_));
                    let call = async {
                        match req {
                            Request::AppendEntries(r) => network.append_entries(target, r).await.map(Response::AppendEntries),
                            Request::Vote(r) => network.vote(target, r).await.map(Response::Vote),
                            Request::PreVote(r) => network.pre_vote(target, r).await.map(Response::PreVote),
                            Request::TimeoutNow(r) => network.timeout_now(target, r).await.map(Response::TimeoutNow),
                            Request::InstallSnapshot(r) => network.install_snapshot(target, r).await.map(Response::InstallSnapshot),
                            Request::ReadIndex(r) => network.read_index(target, r).await.map(Response::ReadIndex),
                        }
                    };
                    let result = match tokio::time::timeout(rpc_timeout, call).await {
                        Ok(r) => r,
                        Err(_) => Err(NetworkError::Timeout { target }),
                    };
                    RpcOutcome { from: target, replicates, reads, result }
                });
            }
        }
    }
}
