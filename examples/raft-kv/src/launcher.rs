//! `raft-kv cluster`: a local cluster as child processes of this same binary running `serve`.

use std::process::{ExitCode, Stdio};

use tokio::process::{Child, Command};

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::client::KvClient;
use crate::logging::LogArgs;
use crate::snapshot_flags::SnapshotArgs;

/// How long the cluster launcher waits for children to stop after SIGTERM before SIGKILL.
pub const CHILD_STOP_GRACE: Duration = Duration::from_secs(5);

/// `raft-kv cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Parent data directory: node N uses DIR/node-N.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Raft port of node 1 (node N uses base + N - 1).
    #[arg(long, default_value_t = 7001)]
    pub base_raft_port: u16,
    /// HTTP port of node 1 (node N uses base + N - 1).
    #[arg(long, default_value_t = 8001)]
    pub base_http_port: u16,
    /// Host to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Cluster id.
    #[arg(long, default_value = "raft-kv")]
    pub cluster_id: String,
    /// When each node snapshots and compacts its log (passed to every node).
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    /// How linearizable reads are confirmed (passed to every node).
    #[command(flatten)]
    pub read: crate::read_flags::ReadArgs,
    /// Also issue certificates for this many more nodes (ids after the last node's), so nodes can
    /// join the cluster later with `serve --join` (the throwaway CA's key is not kept, so no
    /// certificate can be issued afterwards).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub spare_certs: u64,
    /// Run the nodes' Raft traffic in plaintext, unauthenticated (by default the launcher generates a
    /// throwaway cluster CA and node certificates in DATA_DIR/tls/ and the nodes use mutual TLS).
    #[arg(long)]
    pub insecure: bool,
}

struct Member {
    id: u64,
    http: String,
    child: Option<Child>,
}

/// Starts `args.nodes` `serve` children, prints their addresses, and waits: a child that exits is
/// reported (the others keep running, so a killed leader shows a failover); Ctrl-C or SIGTERM
/// stops them all: the followers first, then the leader (each with SIGTERM, then SIGKILL after a
/// grace period), so no stopping node triggers an election or a transfer to a node about to stop.
/// The children run in process groups of their own, so a terminal's Ctrl-C reaches only the
/// launcher, which stops them in that order. With `api_token_file`, every child requires that
/// token of its HTTP clients (the path as given, read by each child).
pub async fn run_cluster(
    args: ClusterArgs,
    logging: &LogArgs,
    api_token_file: Option<&std::path::Path>,
) -> ExitCode {
    if args.nodes == 0 {
        eprintln!("error: --nodes must be at least 1");
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find this executable: {e}");
            return ExitCode::from(2);
        }
    };
    let mut specs = Vec::new();
    for i in 0..args.nodes {
        let (Some(raft_port), Some(http_port)) = (
            u16::try_from(i)
                .ok()
                .and_then(|i| args.base_raft_port.checked_add(i)),
            u16::try_from(i)
                .ok()
                .and_then(|i| args.base_http_port.checked_add(i)),
        ) else {
            eprintln!("error: port out of range");
            return ExitCode::from(2);
        };
        let raft = format!("{}:{raft_port}", args.host);
        let http = format!("{}:{http_port}", args.host);
        specs.push((i + 1, raft, http));
    }
    let peers = specs
        .iter()
        .map(|(id, raft, http)| format!("{id}={raft}/{http}"))
        .collect::<Vec<_>>()
        .join(",");
    let tls = if args.insecure {
        None
    } else {
        let Some(last) = args.nodes.checked_add(args.spare_certs) else {
            eprintln!("error: --spare-certs out of range");
            return ExitCode::from(2);
        };
        let ids = 1..=last;
        match crate::tls_files::generate(&args.data_dir.join("tls"), &args.cluster_id, ids) {
            Ok(files) => Some(
                files
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            ),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let mut members = Vec::new();
    for (id, raft, http) in &specs {
        let dir = args.data_dir.join(format!("node-{id}"));
        let security: Vec<std::ffi::OsString> = match tls.as_ref().and_then(|t| t.get(id)) {
            Some(files) => files.to_args(),
            None => vec!["--insecure".into()],
        };
        let mut child = Command::new(&exe);
        child
            .args(logging.to_args())
            .arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--raft-addr", raft])
            .args(["--http-addr", http])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--peers", &peers])
            .args(["--cluster-id", &args.cluster_id])
            .args(args.snapshot.to_args())
            .args(args.read.to_args())
            .args(security)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(file) = api_token_file {
            child.arg("--api-token-file").arg(file);
        }
        #[cfg(unix)]
        child.process_group(0);
        let child = child.spawn();
        match child {
            Ok(child) => {
                println!(
                    "node {id}: http://{http} (raft {raft}, data {}, pid {})",
                    dir.display(),
                    child.id().unwrap_or(0)
                );
                members.push(Member {
                    id: *id,
                    http: http.clone(),
                    child: Some(child),
                });
            }
            Err(e) => {
                eprintln!("error: cannot start node {id}: {e}");
                stop_all(&mut members).await;
                return ExitCode::from(2);
            }
        }
    }
    println!(
        "cluster of {} nodes running; try: curl -X PUT -d red http://{}/kv/apple ; Ctrl-C stops it",
        members.len(),
        members[0].http
    );
    if tls.is_some() && args.spare_certs > 0 {
        println!(
            "certificates for nodes {}..={} are in {} for `raft-kv serve --join {}` \
             (see the README)",
            args.nodes + 1,
            args.nodes + args.spare_certs,
            args.data_dir.join("tls").display(),
            members[0].http
        );
    }

    let signal = crate::server::shutdown_signal();
    tokio::pin!(signal);
    loop {
        if members.iter().all(|m| m.child.is_none()) {
            eprintln!("every node has exited");
            return ExitCode::from(1);
        }
        // Poll every running child's exit and the signal together.
        let exited = poll_exits(&mut members);
        tokio::select! {
            () = &mut signal => {
                println!("stopping the cluster");
                stop_all(&mut members).await;
                return ExitCode::SUCCESS;
            }
            (i, status) = exited => {
                let m = &mut members[i];
                m.child = None;
                match status {
                    Ok(s) => eprintln!("node {} (http://{}) exited: {s}", m.id, m.http),
                    Err(e) => eprintln!("node {} (http://{}): cannot wait for it: {e}", m.id, m.http),
                }
            }
        }
    }
}

/// Waits for the first running child to exit; returns its position and exit status.
async fn poll_exits(members: &mut [Member]) -> (usize, std::io::Result<std::process::ExitStatus>) {
    let waits = members
        .iter_mut()
        .enumerate()
        .filter_map(|(i, m)| m.child.as_mut().map(|c| (i, c)))
        .map(|(i, c)| Box::pin(async move { (i, c.wait().await) }));
    let ((i, status), _, _) = futures::future::select_all(waits).await;
    (i, status)
}

/// Stops every running member: those that do not say they lead first, then the leader.
async fn stop_all(members: &mut [Member]) {
    let mut leaders = Vec::new();
    for (i, m) in members.iter().enumerate() {
        if m.child.is_none() {
            continue;
        }
        let client = KvClient::new(&m.http).with_timeout(STATUS_TIMEOUT);
        if client.status().await.is_ok_and(|s| s.role == "leader") {
            leaders.push(i);
        }
    }
    let followers: Vec<usize> = (0..members.len())
        .filter(|i| !leaders.contains(i))
        .collect();
    stop_members(members, &followers).await;
    stop_members(members, &leaders).await;
}

/// How long the launcher waits for a node's `/status` when it looks for the leader to stop last.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// SIGTERM to the members at `which`, then waits for each (SIGKILL after the grace period).
async fn stop_members(members: &mut [Member], which: &[usize]) {
    for &i in which {
        if let Some(child) = &members[i].child {
            terminate(child);
        }
    }
    for &i in which {
        let m = &mut members[i];
        if let Some(mut child) = m.child.take() {
            match tokio::time::timeout(CHILD_STOP_GRACE, child.wait()).await {
                Ok(_) => println!("node {} stopped", m.id),
                Err(_) => {
                    let _ = child.kill().await;
                    println!("node {} killed (did not stop in time)", m.id);
                }
            }
        }
    }
}

#[cfg(unix)]
fn terminate(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a pid of our own child and a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

#[cfg(not(unix))]
fn terminate(child: &Child) {
    let _ = child;
}
