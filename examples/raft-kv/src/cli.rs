//! The `raft-kv` command line: `serve`, `cluster`, the client subcommands `get`, `put`,
//! `delete`, `cas`, `status`, and the operator's `transfer-leader`, `members`, `add-learner`,
//! `promote`, `demote`, `remove`, `set-voters`.
//!
//! Client exit codes: `0` success; `1` the key was not found (`get`, `delete`), a
//! compare-and-swap did not swap, or a member did not answer `status --all`; `2` any other error
//! (no leader, outcome unknown, transport failure, bad arguments).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use raft_core::{Config, NodeId};
use raft_net_tcp::{Security, TlsConfig};

use crate::client::{ClientError, KvClient, Reply};
use crate::cluster_view::{StatusFetcher, FETCH_TIMEOUT};
use crate::http_auth::{check_exposure, ApiToken};
use crate::http_limits::HttpLimits;
use crate::http_members::{MembersRequest, NewMember};
use crate::http_read::Consistency;
use crate::join::JoinConfig;
use crate::launcher::ClusterArgs;
use crate::logging::LogArgs;
use crate::read_flags::ReadArgs;
use crate::server::{parse_peers, serve, shutdown_signal, NodeConfig, PeerSpec};
use crate::snapshot_flags::SnapshotArgs;
use crate::status_table;

/// How long `status --all` waits for the membership from the node it asks.
const STATUS_ALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A replicated key-value store on Raft.
#[derive(Debug, Parser)]
#[command(name = "raft-kv", version)]
pub struct Cli {
    /// `--log` and `--log-format`.
    #[command(flatten)]
    pub logging: LogArgs,
    /// A file holding the HTTP API's bearer token: `serve` requires it of every request; the client
    /// commands send it.
    #[arg(long, global = true, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node: file storage in --data-dir, Raft over TCP, HTTP API for clients.
    Serve(ServeArgs),
    /// Run a local cluster: one `serve` child process per node, until Ctrl-C.
    Cluster(ClusterArgs),
    /// Read a key (linearizable by default, served by the node asked, no log entry).
    Get {
        /// Any node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// The read mode: linearizable (ReadIndex), lease (the leader's lease when the cluster runs
        /// with --read-lease-drift-ms, else linearizable), stale (this node's copy as it is), log
        /// (a Get entry through the log, at the leader).
        #[arg(long, value_parser = parse_consistency, default_value = "linearizable")]
        consistency: Consistency,
        /// The same as --consistency stale.
        #[arg(long, conflicts_with = "consistency")]
        local: bool,
        /// The key.
        key: String,
    },
    /// Set a key.
    Put {
        /// Any node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// The key.
        key: String,
        /// The value (several words are joined with spaces).
        #[arg(required = true)]
        value: Vec<String>,
    },
    /// Delete a key.
    Delete {
        /// Any node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// The key.
        key: String,
    },
    /// Compare-and-swap: set KEY to NEW only if it holds --expected (absent if not given).
    Cas {
        /// Any node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// The value the key must hold; omit it to require that the key is absent.
        #[arg(long)]
        expected: Option<String>,
        /// The key.
        key: String,
        /// The new value.
        new: String,
    },
    /// Show a node's status (role, term, leader, indexes, members); with --all, every member's,
    /// as a table.
    Status {
        /// The node's HTTP address (with --all: the node whose membership is shown).
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// Ask the node for the membership, then every member for its status (a short timeout
        /// each), and print one row per member. Exit code 1 if a member did not answer.
        #[arg(long)]
        all: bool,
    },
    /// Move leadership to another node (before restarting the leader, say), without an election
    /// timeout of unavailability.
    TransferLeader {
        /// Any node's HTTP address (a follower redirects to the leader).
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// The node to hand leadership to; by default the follower whose log is most up to date.
        #[arg(long)]
        to: Option<u64>,
    },
    /// Show the membership: voters, learners, the outgoing voters while a change is under way,
    /// every member's addresses and (from the leader) how far behind each member is.
    Members {
        /// Any node's HTTP address (a follower redirects to the leader, unless --local).
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// Show this node's own view instead of the leader's (no lag).
        #[arg(long)]
        local: bool,
    },
    /// Add a node as a learner: it receives the log but does not vote (start it first with
    /// `serve --join`, which does this, catches up and asks for its promotion on its own).
    AddLearner {
        /// Any node's HTTP address (a follower redirects to the leader).
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// The new node's id.
        id: NodeId,
        /// Where the other nodes reach its Raft server (IP:PORT).
        #[arg(long)]
        raft_addr: String,
        /// Where clients reach its HTTP API (HOST:PORT).
        #[arg(long)]
        http_addr: String,
    },
    /// Make a caught-up learner a voter.
    Promote {
        /// Any node's HTTP address (a follower redirects to the leader).
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// The learner.
        id: NodeId,
    },
    /// Make a voter a learner.
    Demote {
        /// Any node's HTTP address (a follower redirects to the leader).
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// The voter.
        id: NodeId,
    },
    /// Remove a node (voter or learner) from the cluster.
    Remove {
        /// Any node's HTTP address (a follower redirects to the leader).
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// The node.
        id: NodeId,
    },
    /// Make exactly these nodes the voters (new ones must be caught-up learners; voters left out
    /// leave the cluster), through a joint configuration.
    SetVoters {
        /// Any node's HTTP address (a follower redirects to the leader).
        #[arg(long, default_value = "127.0.0.1:8001")]
        addr: String,
        /// The voters, comma-separated: `3,4,5`.
        #[arg(value_delimiter = ',', required = true)]
        voters: Vec<NodeId>,
    },
}

/// `raft-kv serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id.
    #[arg(long)]
    pub id: NodeId,
    /// Address for Raft traffic from peers.
    #[arg(long)]
    pub raft_addr: SocketAddr,
    /// Address of the HTTP API.
    #[arg(long)]
    pub http_addr: SocketAddr,
    /// Data directory (created if missing; reuse it to restart the node).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Every voter: `ID=RAFT_ADDR/HTTP_ADDR,...`, this node included (to bootstrap a new cluster;
    /// not needed with --join).
    #[arg(long, value_parser = parse_peer_list, required_unless_present = "join")]
    pub peers: Option<PeerList>,
    /// Join the running cluster that the node at this HTTP address belongs to, instead of
    /// bootstrapping one: this node asks to be added as a learner, catches up, then asks to be
    /// promoted to voter. Harmless on a restart (a member does not join again).
    #[arg(long, value_name = "HTTP_ADDR")]
    pub join: Option<String>,
    /// How long --join may take (seconds) before the node gives up and exits.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub join_timeout: u64,
    /// Cluster id; peers of another cluster are refused.
    #[arg(long, default_value = "raft-kv")]
    pub cluster_id: String,
    /// When to snapshot and compact the log.
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    /// How linearizable reads are confirmed.
    #[command(flatten)]
    pub read: ReadArgs,
    /// How peers authenticate each other.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The TLS flags of `serve`. Peers authenticate each other with mutual TLS: every node's certificate
/// is issued by the cluster CA and names the node (`node-<id>.<cluster id>.raft`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Args)]
pub struct TlsArgs {
    /// The cluster CA's certificate (PEM): peers must present certificates it issued.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate chain (PEM), naming `node-<id>.<cluster id>.raft`.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// Allow what is unsafe on a network: without the TLS files, Raft traffic in plaintext and
    /// unauthenticated (anyone who reaches the Raft port can write data); an HTTP API reachable from
    /// other machines without `--api-token-file`. For experiments on a machine you trust only.
    #[arg(long)]
    pub insecure: bool,
}

impl TlsArgs {
    /// The transport security these flags ask for.
    ///
    /// # Errors
    /// Neither the three TLS files nor `--insecure` were given, or a file cannot be loaded.
    pub fn security(&self) -> Result<Security, String> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => TlsConfig::from_pem_files(ca, cert, key)
                .map(Security::Tls)
                .map_err(|e| format!("cannot load the TLS files: {e}")),
            _ if self.insecure => Ok(Security::Insecure),
            _ => Err(
                "serve needs --tls-ca, --tls-cert and --tls-key (`raft-kv cluster` generates \
                      them for a local cluster), or --insecure for unauthenticated plaintext"
                    .to_string(),
            ),
        }
    }
}

/// The value of `get --consistency`.
fn parse_consistency(s: &str) -> Result<Consistency, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?}: expected linearizable, lease, stale or log"))
}

/// The value of `--peers`.
#[derive(Clone, Debug)]
pub struct PeerList(pub Vec<PeerSpec>);

fn parse_peer_list(s: &str) -> Result<PeerList, String> {
    parse_peers(s).map(PeerList)
}

/// Runs the command line; returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.logging.init();
    let runtime = match cli.command {
        Command::Serve(_) | Command::Cluster(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let token = cli
        .api_token_file
        .as_deref()
        .map(ApiToken::from_file)
        .transpose();
    let client_token = match (&cli.command, &token) {
        (Command::Serve(_) | Command::Cluster(_), _) => None,
        (_, Ok(token)) => token.clone(),
        (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let client = |addr: &str| {
        let client = KvClient::new(addr);
        match &client_token {
            Some(token) => client.with_token(token.clone()),
            None => client,
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let security = match args.tls.security() {
                Ok(security) => security,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if matches!(security, Security::Insecure) {
                tracing::warn!("--insecure: Raft traffic is plaintext and unauthenticated");
            }
            let api_token = match token {
                Ok(token) => token,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = check_exposure(args.http_addr, api_token.as_ref(), args.tls.insecure) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            let join = args.join.map(|via| JoinConfig {
                via,
                timeout: Duration::from_secs(args.join_timeout),
                token: api_token.clone(),
            });
            let cfg = NodeConfig {
                id: args.id,
                raft_addr: args.raft_addr,
                http_addr: args.http_addr,
                data_dir: args.data_dir,
                peers: args.peers.map(|p| p.0).unwrap_or_default(),
                join,
                cluster_id: args.cluster_id,
                raft: args
                    .read
                    .apply_to(args.snapshot.apply_to(Config::default())),
                http_limits: HttpLimits::default(),
                security,
                api_token,
            };
            match serve(cfg, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Cluster(args) => {
            crate::launcher::run_cluster(args, &cli.logging, cli.api_token_file.as_deref()).await
        }
        Command::Get {
            addr,
            consistency,
            local,
            key,
        } => {
            let consistency = if local {
                Consistency::Stale
            } else {
                consistency
            };
            let read = client(&addr).get_with(&key, consistency).await;
            match read {
                Ok(Ok(Some(value))) => {
                    println!("{value}");
                    ExitCode::SUCCESS
                }
                Ok(Ok(None)) => {
                    eprintln!("not found: {key}");
                    ExitCode::from(1)
                }
                Ok(Err(reply)) => failed(&reply),
                Err(e) => transport(e),
            }
        }
        Command::Put { addr, key, value } => {
            let value = value.join(" ");
            match client(&addr).put(&key, &value).await {
                Ok(reply) if reply.status.is_success() => {
                    println!("{}", reply.body);
                    ExitCode::SUCCESS
                }
                Ok(reply) => failed(&reply),
                Err(e) => transport(e),
            }
        }
        Command::Delete { addr, key } => match client(&addr).delete(&key).await {
            Ok(reply) if reply.status.is_success() => {
                println!("{}", reply.body);
                ExitCode::SUCCESS
            }
            Ok(reply) if reply.error_code() == Some("not_found") => {
                eprintln!("not found: {key}");
                ExitCode::from(1)
            }
            Ok(reply) => failed(&reply),
            Err(e) => transport(e),
        },
        Command::Cas {
            addr,
            expected,
            key,
            new,
        } => match client(&addr).cas(&key, expected.as_deref(), &new).await {
            Ok(reply) if reply.status.is_success() => {
                println!("{}", reply.body);
                ExitCode::SUCCESS
            }
            Ok(reply) if reply.status.as_u16() == 409 => {
                println!("{}", reply.body);
                eprintln!("not swapped: the current value differs");
                ExitCode::from(1)
            }
            Ok(reply) => failed(&reply),
            Err(e) => transport(e),
        },
        Command::TransferLeader { addr, to } => match client(&addr).transfer_leader(to).await {
            Ok(reply) if reply.status.is_success() => {
                println!("{}", reply.body);
                ExitCode::SUCCESS
            }
            Ok(reply) => failed(&reply),
            Err(e) => transport(e),
        },
        Command::Members { addr, local } => answer(client(&addr).members(!local).await),
        Command::AddLearner {
            addr,
            id,
            raft_addr,
            http_addr,
        } => {
            let request = MembersRequest::AddLearner(NewMember {
                id,
                raft_addr,
                http_addr,
            });
            change(&client(&addr), request).await
        }
        Command::Promote { addr, id } => change(&client(&addr), MembersRequest::Promote(id)).await,
        Command::Demote { addr, id } => change(&client(&addr), MembersRequest::Demote(id)).await,
        Command::Remove { addr, id } => change(&client(&addr), MembersRequest::Remove(id)).await,
        Command::SetVoters { addr, voters } => {
            change(&client(&addr), MembersRequest::Voters(voters)).await
        }
        Command::Status { addr, all: true } => {
            status_all(&client(&addr), client_token.as_ref()).await
        }
        Command::Status { addr, all: false } => match client(&addr).status().await {
            Ok(status) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(e) => transport(e),
        },
    }
}

/// `status --all`: the membership from the node `client` talks to, then every member's status,
/// printed as a table (see [`crate::status_table`]). `0` if every member answered, `1` if some did
/// not, `2` if the membership could not be read.
async fn status_all(client: &KvClient, token: Option<&ApiToken>) -> ExitCode {
    let client = client.clone().with_timeout(STATUS_ALL_TIMEOUT);
    let members = match client.members_body(false).await {
        Ok(members) => members,
        Err(e) => return transport(e),
    };
    let fetcher = StatusFetcher::new(FETCH_TIMEOUT, token);
    let view = fetcher.view(&members, &BTreeMap::new(), None).await;
    print!("{}", status_table::render(&view));
    if view.members.iter().all(|m| m.status.is_some()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Sends a membership change, after checking it as the server would (so a typo is reported
/// without a round trip), and prints the resulting membership.
async fn change(client: &KvClient, request: MembersRequest) -> ExitCode {
    if let Err(e) = request.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    answer(client.change_members(&request).await)
}

/// Prints a successful answer's body as pretty JSON; reports anything else.
fn answer(reply: Result<Reply, ClientError>) -> ExitCode {
    match reply {
        Ok(reply) if reply.status.is_success() => {
            println!(
                "{}",
                serde_json::to_string_pretty(&reply.body).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(reply) => failed(&reply),
        Err(e) => transport(e),
    }
}

fn failed(reply: &Reply) -> ExitCode {
    eprintln!("error: {} from {}: {}", reply.status, reply.url, reply.body);
    ExitCode::from(2)
}

fn transport(e: ClientError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::SnapshotPolicy;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(args)
    }

    const SERVE: &[&str] = &[
        "raft-kv",
        "serve",
        "--id",
        "1",
        "--raft-addr",
        "127.0.0.1:7001",
        "--http-addr",
        "127.0.0.1:8001",
        "--data-dir",
        "/tmp/x",
        "--peers",
        "1=127.0.0.1:7001/127.0.0.1:8001",
    ];

    fn serve_snapshot(extra: &[&str]) -> SnapshotArgs {
        let args: Vec<&str> = SERVE.iter().chain(extra).copied().collect();
        match parse(&args).expect("parses").command {
            Command::Serve(s) => s.snapshot,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn snapshot_flags_default_to_the_library_defaults() {
        let snapshot = serve_snapshot(&[]);
        assert_eq!(snapshot, SnapshotArgs::default());
        let config = snapshot.apply_to(Config::default());
        assert_eq!(config, Config::default());
    }

    #[test]
    fn snapshot_flags_reach_the_config() {
        let snapshot = serve_snapshot(&["--snapshot-after", "50", "--snapshot-keep-entries", "10"]);
        let config = snapshot.apply_to(Config::default());
        assert_eq!(
            config.snapshot_policy,
            SnapshotPolicy::AfterAppliedEntries(50)
        );
        assert_eq!(config.snapshot_keep_entries, 10);
        assert!(config.validate().is_ok());
        let never = serve_snapshot(&["--snapshot-after", "0"]).apply_to(Config::default());
        assert_eq!(never.snapshot_policy, SnapshotPolicy::Never);
        assert!(never.validate().is_ok());
        assert!(parse(&[SERVE, &["--snapshot-after", "-1"][..]].concat()).is_err());
    }

    #[test]
    fn cluster_passes_the_snapshot_flags_on_to_its_nodes() {
        let cli = parse(&[
            "raft-kv",
            "cluster",
            "--data-dir",
            "/tmp/x",
            "--snapshot-after",
            "7",
            "--snapshot-keep-entries",
            "3",
        ])
        .expect("parses");
        let Command::Cluster(args) = cli.command else {
            panic!("expected cluster")
        };
        let child: Vec<String> = SERVE
            .iter()
            .map(|s| s.to_string())
            .chain(args.snapshot.to_args())
            .collect();
        let child = Cli::try_parse_from(&child).expect("the child's flags parse");
        let Command::Serve(serve) = child.command else {
            panic!("expected serve")
        };
        assert_eq!(serve.snapshot, args.snapshot);
        assert_eq!(serve.snapshot.snapshot_after, Some(7));
        assert_eq!(serve.snapshot.snapshot_keep_entries, 3);
    }

    #[test]
    fn log_growth_flags_reach_the_config_and_children() {
        let snapshot = serve_snapshot(&[
            "--snapshot-log-factor",
            "2",
            "--snapshot-min-entries",
            "9",
            "--snapshot-max-log-bytes",
            "4096",
        ]);
        assert_eq!(
            snapshot.apply_to(Config::default()).snapshot_policy,
            SnapshotPolicy::LogGrowth {
                factor: 2,
                min_entries: 9,
                max_log_bytes: 4096,
            }
        );
        let child: Vec<String> = SERVE
            .iter()
            .map(|s| s.to_string())
            .chain(snapshot.to_args())
            .collect();
        let Command::Serve(serve) = Cli::try_parse_from(&child).expect("parses").command else {
            panic!("expected serve")
        };
        assert_eq!(serve.snapshot, snapshot);
        assert!(
            parse(
                &[
                    SERVE,
                    &["--snapshot-after", "5", "--snapshot-log-factor", "2"][..]
                ]
                .concat()
            )
            .is_err(),
            "an entry count and a log factor contradict each other"
        );
    }

    #[test]
    fn serve_needs_peers_or_join_and_membership_commands_parse() {
        let base = &SERVE[..SERVE.len() - 2]; // without --peers
        assert!(parse(base).is_err(), "neither --peers nor --join");
        let join = parse(&[base, &["--join", "127.0.0.1:8002"][..]].concat()).expect("parses");
        let Command::Serve(serve) = join.command else {
            panic!("expected serve")
        };
        assert_eq!(serve.join.as_deref(), Some("127.0.0.1:8002"));
        assert!(serve.peers.is_none());
        assert_eq!(serve.join_timeout, 300);

        let cli = parse(&["raft-kv", "set-voters", "3,4,5"]).expect("parses");
        assert!(matches!(cli.command, Command::SetVoters { voters, .. } if voters == [3, 4, 5]));
        assert!(parse(&["raft-kv", "set-voters"]).is_err());
        assert!(parse(&["raft-kv", "set-voters", "3,x"]).is_err());
        let cli = parse(&[
            "raft-kv",
            "add-learner",
            "4",
            "--raft-addr",
            "127.0.0.1:7004",
            "--http-addr",
            "127.0.0.1:8004",
        ])
        .expect("parses");
        assert!(matches!(cli.command, Command::AddLearner { id: 4, .. }));
        for sub in ["promote", "demote", "remove"] {
            assert!(parse(&["raft-kv", sub, "4", "--addr", "127.0.0.1:8002"]).is_ok());
            assert!(parse(&["raft-kv", sub, "-4"]).is_err());
        }
        assert!(parse(&["raft-kv", "members", "--local"]).is_ok());
    }

    #[test]
    fn status_takes_all() {
        let all = |args: &[&str]| match parse(&[&["raft-kv", "status"][..], args].concat())
            .expect("parses")
            .command
        {
            Command::Status { addr, all } => (addr, all),
            other => panic!("expected status, got {other:?}"),
        };
        assert_eq!(all(&[]), ("127.0.0.1:8001".to_string(), false));
        assert_eq!(
            all(&["--all", "--addr", "127.0.0.1:8002"]),
            ("127.0.0.1:8002".to_string(), true)
        );
    }

    #[test]
    fn get_takes_a_consistency_and_serve_a_lease() {
        let get = |args: &[&str]| parse(&[&["raft-kv", "get"][..], args].concat());
        let mode = |args: &[&str]| match get(args).expect("parses").command {
            Command::Get {
                consistency, local, ..
            } => (consistency, local),
            other => panic!("expected get, got {other:?}"),
        };
        assert_eq!(mode(&["k"]), (Consistency::Linearizable, false));
        assert_eq!(
            mode(&["--consistency", "lease", "k"]),
            (Consistency::Lease, false)
        );
        assert_eq!(
            mode(&["--consistency", "log", "k"]),
            (Consistency::Log, false)
        );
        assert_eq!(mode(&["--local", "k"]), (Consistency::Linearizable, true));
        assert!(get(&["--consistency", "strong", "k"]).is_err());
        assert!(get(&["--local", "--consistency", "log", "k"]).is_err());

        let serve = parse(&[SERVE, &["--read-lease-drift-ms", "25"][..]].concat()).expect("parses");
        let Command::Serve(serve) = serve.command else {
            panic!("expected serve")
        };
        assert_eq!(serve.read.read_lease_drift_ms, Some(25));
    }
}
