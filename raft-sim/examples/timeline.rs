//! Prints how a small Raft cluster behaves in one scenario, as a time-ordered trace.
//!
//! ```sh
//! cargo run --example timeline -- election
//! cargo run --example timeline -- split-vote
//! cargo run --example timeline -- leader-crash
//! cargo run --example timeline -- no-majority
//! cargo run --example timeline -- log-repair
//! cargo run --example timeline -- split-vote --seed 7   # the same story with other timings
//! cargo run --example timeline -- split-vote --nodes 5 --seed 39   # three candidates split 5 nodes
//! ```
//!
//! The same seed prints the same trace. See `raft_sim::timeline` for what is simulated, and
//! `raft-core/docs/raft-by-questions.md` for the questions each scenario answers.

use std::io::Write;
use std::process::ExitCode;

use raft_sim::timeline::{self, Scenario};

fn usage() -> ExitCode {
    eprintln!("usage: timeline <scenario> [--seed N] [--nodes N]");
    eprintln!("scenarios:");
    for s in Scenario::ALL {
        eprintln!("  {:<13} {}", s.name(), s.description());
    }
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(scenario) = args.first().and_then(|name| Scenario::from_name(name)) else {
        return usage();
    };
    let (mut seed, mut nodes) = (scenario.default_seed(), scenario.default_nodes());
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--seed", Some(v)) => seed = v,
            ("--nodes", Some(v)) if v >= 3 => nodes = v,
            _ => return usage(),
        }
    }
    let trace = timeline::run_with(scenario, seed, nodes);
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = write!(std::io::stdout().lock(), "{trace}");
    ExitCode::SUCCESS
}
