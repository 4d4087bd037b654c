//! [`TlsError`]: why TLS settings or node names are refused.

use std::path::PathBuf;

/// Why a [`TlsConfig`](crate::TlsConfig) or a [`NodeName`](crate::NodeName) could not be built, or a node's certificate does not fit
/// it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The cluster id cannot be part of a node name (a DNS name).
    #[error("invalid cluster id {cluster_id:?} for TLS node names: {reason}")]
    ClusterId {
        /// The cluster id.
        cluster_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A string is not a node name `node-<id>.<cluster id>.raft`.
    #[error("{name:?} is not a node name node-<id>.<cluster id>.raft: {reason}")]
    NodeName {
        /// The string.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A PEM input holds nothing usable.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input ("CA certificates", "certificate chain", "private key").
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A PEM file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// rustls refused the certificates or the key (e.g. a key that does not match the certificate,
    /// an unsupported key type, a CA certificate it cannot parse).
    #[error("TLS configuration refused: {0}")]
    Config(String),
    /// This node's certificate does not name the identity it is used for.
    #[error("this node's certificate is not valid for {expected}: {reason}")]
    Identity {
        /// The node name the certificate should carry.
        expected: String,
        /// What rustls found.
        reason: String,
    },
}
