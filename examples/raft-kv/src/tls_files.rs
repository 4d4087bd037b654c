//! The certificate files of a local cluster: `raft-kv cluster` generates a throwaway cluster CA and
//! one certificate per node in `DATA_DIR/tls/`, and starts each `serve` child with them, so the
//! README's one command runs an authenticated cluster. (For real machines, issue certificates with
//! your own CA: each names its node as `node-<id>.<cluster id>.raft`.)

use std::path::{Path, PathBuf};

use raft_core::NodeId;
use raft_net_tcp::cert_gen::ClusterCa;

/// The paths of one node's TLS files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTlsFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// The node's certificate.
    pub cert: PathBuf,
    /// The node's private key (readable by the owner only).
    pub key: PathBuf,
}

impl NodeTlsFiles {
    /// The `serve` flags that load these files.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--tls-ca".into(),
            self.ca.clone().into(),
            "--tls-cert".into(),
            self.cert.clone().into(),
            "--tls-key".into(),
            self.key.clone().into(),
        ]
    }
}

/// Generates a new cluster CA for `cluster_id` and certificates for `nodes` in `dir` (created if
/// missing; files there are replaced), and returns each node's paths.
///
/// # Errors
/// A message naming what could not be generated or written.
pub fn generate(
    dir: &Path,
    cluster_id: &str,
    nodes: impl IntoIterator<Item = NodeId>,
) -> Result<Vec<(NodeId, NodeTlsFiles)>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca = ClusterCa::generate(cluster_id).map_err(|e| format!("cannot generate a CA: {e}"))?;
    let ca_path = dir.join("ca.pem");
    write(&ca_path, ca.cert_pem(), false)?;
    let mut files = Vec::new();
    for id in nodes {
        let node = ca
            .issue(id)
            .map_err(|e| format!("cannot issue node {id}'s certificate: {e}"))?;
        let cert = dir.join(format!("node-{id}.pem"));
        let key = dir.join(format!("node-{id}.key"));
        write(&cert, node.cert_pem(), false)?;
        write(&key, node.key_pem(), true)?;
        files.push((
            id,
            NodeTlsFiles {
                ca: ca_path.clone(),
                cert,
                key,
            },
        ));
    }
    Ok(files)
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(fail)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(fail)?;
    #[cfg(unix)]
    if private {
        // An existing key file keeps its old mode through `open`: set it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    Ok(())
}
