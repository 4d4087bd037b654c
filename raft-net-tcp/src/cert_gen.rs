//! Throwaway certificates for local clusters and tests (feature `cert-gen`): a cluster CA and node
//! certificates in PEM, made with `rcgen`, so that an authenticated cluster starts with no external
//! tools.
//!
//! **Not for production.** The CA's key lives only in memory (drop the [`ClusterCa`] and no further
//! node certificate can be issued for that cluster), certificates are valid from 1975 to 4096 and
//! cannot be revoked. A real deployment issues node certificates from its own CA, with the names
//! described in [`NodeName`], and loads them with [`TlsConfig::from_pem_files`].
//!
//! ```
//! use raft_net_tcp::cert_gen::ClusterCa;
//!
//! let ca = ClusterCa::generate("demo")?;
//! let node_1 = ca.issue(1)?; // PEM text: write ca.cert_pem(), node_1.cert_pem(), node_1.key_pem()
//! let tls = ca.tls_config(1)?; // or use them at once
//! # let _ = (node_1, tls);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use raft_core::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType,
};

use crate::identity::{validate_cluster_id, NodeName};
use crate::tls::{TlsConfig, TlsError};

/// Certificate generation failed.
#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    /// The cluster id cannot be part of a node name.
    #[error(transparent)]
    Name(#[from] TlsError),
    /// `rcgen` failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

impl From<rcgen::Error> for CertGenError {
    fn from(e: rcgen::Error) -> Self {
        CertGenError::Generate(e.to_string())
    }
}

/// A throwaway certificate authority for one cluster, held in memory.
///
/// Its certificate is constrained to names under `<cluster id>.raft`, so it can only vouch for this
/// cluster's nodes. Node certificates it issues carry [`NodeName`] as their DNS subject
/// alternative name and allow both TLS client and server authentication. Keys are ECDSA P-256.
pub struct ClusterCa {
    cluster_id: String,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

/// A node's certificate and private key, in PEM.
#[derive(Clone)]
pub struct NodeCertificate {
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCertificate").finish_non_exhaustive()
    }
}

impl NodeCertificate {
    /// The certificate (signed by the cluster CA), in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key (PKCS#8), in PEM. Keep it private: whoever holds it can speak as the node.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl ClusterCa {
    /// Generates a new CA for `cluster_id`.
    ///
    /// # Errors
    /// [`CertGenError::Name`] if the cluster id cannot be part of a DNS name
    /// ([`NodeName`]); [`CertGenError::Generate`] if rcgen fails.
    pub fn generate(cluster_id: &str) -> Result<Self, CertGenError> {
        validate_cluster_id(cluster_id)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("raft cluster {cluster_id} (throwaway CA)"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DnsName(format!("{cluster_id}.raft"))],
            excluded_subtrees: Vec::new(),
        });
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(ClusterCa {
            cluster_id: cluster_id.to_string(),
            cert_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The CA certificate, in PEM: what every node trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate and a new key for node `node_id`, named
    /// `node-<node_id>.<cluster id>.raft`.
    ///
    /// # Errors
    /// [`CertGenError::Generate`] if rcgen fails.
    pub fn issue(&self, node_id: NodeId) -> Result<NodeCertificate, CertGenError> {
        let name = NodeName::new(&self.cluster_id, node_id)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name.dns_name());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(name.dns_name().try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(NodeCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `node_id` and builds the node's [`TlsConfig`] from it.
    ///
    /// # Errors
    /// As [`issue`](Self::issue), or [`CertGenError::Name`] if the configuration cannot be built.
    pub fn tls_config(&self, node_id: NodeId) -> Result<TlsConfig, CertGenError> {
        let node = self.issue(node_id)?;
        Ok(TlsConfig::from_pem(
            self.cert_pem.as_bytes(),
            node.cert_pem.as_bytes(),
            node.key_pem.as_bytes(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_node_and_cluster() {
        let ca = ClusterCa::generate("unit").expect("CA");
        let tls = ca.tls_config(7).expect("config");
        tls.check_identity(&NodeName::new("unit", 7).unwrap())
            .expect("names node 7");
        for other in [
            NodeName::new("unit", 8).unwrap(),
            NodeName::new("other", 7).unwrap(),
        ] {
            assert!(
                matches!(tls.check_identity(&other), Err(TlsError::Identity { .. })),
                "{other} accepted"
            );
        }
    }

    #[test]
    fn refuses_a_cluster_id_that_is_no_dns_name() {
        assert!(matches!(
            ClusterCa::generate("Not A Name"),
            Err(CertGenError::Name(TlsError::ClusterId { .. }))
        ));
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let ca = ClusterCa::generate("unit").expect("CA");
        let (a, b) = (ca.issue(1).expect("1"), ca.issue(2).expect("2"));
        let mixed = TlsConfig::from_pem(
            ca.cert_pem().as_bytes(),
            a.cert_pem().as_bytes(),
            b.key_pem().as_bytes(),
        );
        assert!(matches!(mixed, Err(TlsError::Config(_))), "{mixed:?}");
        let empty = TlsConfig::from_pem(b"", a.cert_pem().as_bytes(), a.key_pem().as_bytes());
        assert!(matches!(empty, Err(TlsError::Pem { .. })), "{empty:?}");
        let no_key = TlsConfig::from_pem(
            ca.cert_pem().as_bytes(),
            a.cert_pem().as_bytes(),
            a.cert_pem().as_bytes(),
        );
        assert!(matches!(no_key, Err(TlsError::Pem { .. })), "{no_key:?}");
    }
}
