//! Three Raft nodes in one process: write, kill the leader, watch a new one take over with the data
//! intact, restart the old leader and watch it catch up.
//!
//! ```sh
//! cargo run -p raft-kv --example failover
//! RUST_LOG=raft_core=debug cargo run -p raft-kv --example failover   # and see the protocol at work
//! ```
//!
//! Exits 0 if every check passed, 1 (with the reason) otherwise.

use std::process::ExitCode;
use std::time::Duration;

use raft_kv::demo::{run_failover, DemoOptions};
use tracing_subscriber::EnvFilter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    // Default node configuration (elections after 150-300 ms of silence, heartbeats every 50 ms), on
    // the real clock. No step may take more than 5 seconds.
    let options = DemoOptions {
        step_timeout: Duration::from_secs(5),
        ..DemoOptions::default()
    };
    match run_failover(options, |line| println!("{line}")).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
