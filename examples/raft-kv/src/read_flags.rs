//! The read flag `serve` and `cluster` share: `--read-lease-drift-ms`, which turns leader leases on.

use std::time::Duration;

use clap::Args;
use raft_core::{Config, ReadPolicy};

/// The read flags of `serve` and `cluster`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args)]
pub struct ReadArgs {
    /// Serve `GET ...?consistency=lease` reads on the leader's lease, without a heartbeat round,
    /// assuming no node's clock runs slower than another's by more than MS over an election
    /// timeout (the lease is the minimum election timeout, 150 ms, less MS; MS must be below it).
    /// Without this flag, lease reads are served like linearizable ones (ReadIndex).
    #[arg(long, value_name = "MS")]
    pub read_lease_drift_ms: Option<u64>,
}

impl ReadArgs {
    /// `base` with the read policy these flags ask for (`Config::validate` at start refuses a drift
    /// bound that leaves no lease).
    pub fn apply_to(&self, base: Config) -> Config {
        let read_policy = match self.read_lease_drift_ms {
            Some(ms) => ReadPolicy::Lease {
                clock_drift_bound: Duration::from_millis(ms),
            },
            None => ReadPolicy::ReadIndex,
        };
        Config {
            read_policy,
            ..base
        }
    }

    /// The same flags for a child `serve` process.
    pub fn to_args(&self) -> Vec<String> {
        match self.read_lease_drift_ms {
            Some(ms) => vec!["--read-lease-drift-ms".into(), ms.to_string()],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_sets_a_lease_that_validates_and_its_absence_keeps_read_index() {
        let none = ReadArgs::default().apply_to(Config::default());
        assert_eq!(none.read_policy, ReadPolicy::ReadIndex);
        assert!(ReadArgs::default().to_args().is_empty());
        let lease = ReadArgs {
            read_lease_drift_ms: Some(20),
        };
        let config = lease.apply_to(Config::default());
        assert_eq!(
            config.read_policy,
            ReadPolicy::Lease {
                clock_drift_bound: Duration::from_millis(20)
            }
        );
        assert!(config.validate().is_ok());
        assert_eq!(lease.to_args(), ["--read-lease-drift-ms", "20"]);
        let too_much = ReadArgs {
            read_lease_drift_ms: Some(150),
        };
        assert!(too_much.apply_to(Config::default()).validate().is_err());
    }
}
