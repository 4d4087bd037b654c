//! How a certificate names a node: [`NodeName`], the DNS name `node-<id>.<cluster id>.raft`.

use std::fmt;
use std::str::FromStr;

use raft_core::NodeId;

use crate::tls_error::TlsError;

/// The top-level label of every node name.
const SUFFIX: &str = "raft";
/// The prefix of a node name's first label.
const NODE_PREFIX: &str = "node-";
/// The longest DNS name (RFC 1035, without the trailing dot).
const MAX_DNS_NAME: usize = 253;
/// The longest DNS label.
const MAX_LABEL: usize = 63;

/// A node's identity in its certificate: node `node_id` of cluster `cluster_id`, written as the DNS
/// name **`node-<node_id>.<cluster_id>.raft`** (e.g. `node-3.raft-kv.raft`).
///
/// Each node's certificate carries its name as a DNS subject alternative name (SAN). A client
/// connecting to node 3 of cluster `raft-kv` accepts only a server certificate valid for
/// `node-3.raft-kv.raft`; a server accepts a client's handshake claiming to come from node 2 only if
/// the client's certificate is valid for `node-2.raft-kv.raft`.
///
/// The cluster id must be a valid DNS name itself: one or more labels separated by dots, each of 1 to
/// 63 lowercase ASCII letters, digits and hyphens, not starting or ending with a hyphen; the whole
/// node name at most 253 characters. The node id is written in decimal, without leading zeros.
/// Names are lowercase only: parsing refuses upper case rather than guessing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeName {
    cluster_id: String,
    node_id: NodeId,
}

impl NodeName {
    /// The name of node `node_id` of cluster `cluster_id`.
    ///
    /// # Errors
    /// [`TlsError::ClusterId`] if the cluster id cannot be part of a DNS name (see the type's docs).
    pub fn new(cluster_id: &str, node_id: NodeId) -> Result<Self, TlsError> {
        validate_cluster_id(cluster_id)?;
        let name = NodeName {
            cluster_id: cluster_id.to_string(),
            node_id,
        };
        let len = name.dns_name().len();
        if len > MAX_DNS_NAME {
            return Err(TlsError::ClusterId {
                cluster_id: cluster_id.to_string(),
                reason: format!(
                    "the node name would be {len} characters, over the {MAX_DNS_NAME} of a DNS name"
                ),
            });
        }
        Ok(name)
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The node id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The DNS name, `node-<node_id>.<cluster_id>.raft`.
    pub fn dns_name(&self) -> String {
        self.to_string()
    }

    /// Parses a DNS name of the form `node-<node_id>.<cluster_id>.raft`.
    ///
    /// # Errors
    /// [`TlsError::NodeName`] naming what is wrong.
    pub fn parse(name: &str) -> Result<Self, TlsError> {
        let bad = |reason: &str| TlsError::NodeName {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let rest = name
            .strip_suffix(SUFFIX)
            .and_then(|r| r.strip_suffix('.'))
            .ok_or_else(|| bad("does not end in \".raft\""))?;
        let (first, cluster_id) = rest
            .split_once('.')
            .ok_or_else(|| bad("expected node-<id>.<cluster id>.raft"))?;
        let digits = first
            .strip_prefix(NODE_PREFIX)
            .ok_or_else(|| bad("the first label does not start with \"node-\""))?;
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if !canonical {
            return Err(bad(
                "the node id is not a decimal number without leading zeros",
            ));
        }
        let node_id = digits
            .parse::<NodeId>()
            .map_err(|_| bad("the node id does not fit in 64 bits"))?;
        NodeName::new(cluster_id, node_id).map_err(|e| bad(&e.to_string()))
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{NODE_PREFIX}{}.{}.{SUFFIX}",
            self.node_id, self.cluster_id
        )
    }
}

impl FromStr for NodeName {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, TlsError> {
        NodeName::parse(s)
    }
}

/// Checks that `cluster_id` can be part of a node name (see [`NodeName`]).
///
/// # Errors
/// [`TlsError::ClusterId`] naming the first problem.
pub fn validate_cluster_id(cluster_id: &str) -> Result<(), TlsError> {
    let bad = |reason: String| TlsError::ClusterId {
        cluster_id: cluster_id.to_string(),
        reason,
    };
    if cluster_id.is_empty() {
        return Err(bad("it is empty".into()));
    }
    for label in cluster_id.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err(bad(format!(
                "each dot-separated label must have 1 to {MAX_LABEL} characters"
            )));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad(
                "only lowercase ASCII letters, digits, hyphens and dots are allowed".into(),
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label may not start or end with a hyphen".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_the_documented_form() {
        let name = NodeName::new("raft-kv", 3).expect("valid");
        assert_eq!(name.dns_name(), "node-3.raft-kv.raft");
        assert_eq!(
            NodeName::parse("node-3.raft-kv.raft").expect("parses"),
            name
        );
        let dotted = NodeName::new("prod.eu-west", u64::MAX).expect("valid");
        assert_eq!(
            dotted.dns_name(),
            format!("node-{}.prod.eu-west.raft", u64::MAX)
        );
        let back: NodeName = dotted.dns_name().parse().expect("parses");
        assert_eq!(
            (back.cluster_id(), back.node_id()),
            ("prod.eu-west", u64::MAX)
        );
    }

    #[test]
    fn refuses_cluster_ids_that_are_not_dns_names() {
        for bad in [
            "", "Raft-KV", "raft kv", "raft_kv", "-raft", "raft-", "a..b", ".a", "a.", "ü",
        ] {
            assert!(
                matches!(NodeName::new(bad, 1), Err(TlsError::ClusterId { .. })),
                "{bad:?} accepted"
            );
        }
        let long_label = "a".repeat(64);
        assert!(NodeName::new(&long_label, 1).is_err());
        let long_name = vec!["a".repeat(60); 4].join(".");
        assert!(NodeName::new(&long_name, 1).is_err(), "over 253 characters");
    }

    #[test]
    fn parse_refuses_everything_else() {
        for bad in [
            "",
            "raft",
            "node-1.raft",
            "node-1.c.raftx",
            "node-1.c.raft.",
            "node-.c.raft",
            "node-01.c.raft",
            "node-+1.c.raft",
            "node-x.c.raft",
            "node-18446744073709551616.c.raft",
            "nodes-1.c.raft",
            "NODE-1.c.raft",
            "node-1.C.raft",
            "node-1..raft",
        ] {
            assert!(
                matches!(NodeName::parse(bad), Err(TlsError::NodeName { .. })),
                "{bad:?} parsed"
            );
        }
        assert_eq!(NodeName::parse("node-0.c.raft").expect("zero").node_id(), 0);
    }
}
