//! Mutual TLS between nodes: [`TlsConfig`] (the cluster CA, this node's certificate chain and key)
//! and [`Security`], the choice between it and plaintext.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::identity::NodeName;
pub use crate::tls_error::TlsError;

/// How a node's connections are secured. Pass it to [`TcpNetwork::new`](crate::TcpNetwork::new)
/// and [`TcpServer::start`](crate::TcpServer::start); a [`TlsConfig`] converts into
/// `Security::Tls`.
#[derive(Clone, Debug)]
pub enum Security {
    /// Mutual TLS 1.3: both ends prove their node identity with a certificate from the cluster CA
    /// (see [`TlsConfig`]).
    Tls(TlsConfig),
    /// **Plaintext, no authentication.** Anyone who can reach the Raft port can then join the
    /// conversation as any node: vote, append entries, install snapshots. The handshake's cluster id
    /// only keeps apart clusters that trust each other; it is no secret. Only for tests, benchmarks
    /// and networks where every host that can reach the port is trusted.
    Insecure,
}

impl From<TlsConfig> for Security {
    fn from(tls: TlsConfig) -> Self {
        Security::Tls(tls)
    }
}

/// A node's TLS settings: the cluster CA it trusts, and its own certificate chain and private key.
///
/// Both directions are mutual TLS 1.3, through rustls with its `ring` crypto provider:
/// * as a client, the node presents its certificate and accepts a server only if the server's
///   chain leads to the cluster CA **and** its certificate is valid for the node it dialled,
///   `node-<target>.<cluster>.raft` ([`NodeName`]);
/// * as a server, it accepts only clients whose chain leads to the cluster CA (a client without a
///   certificate, or with one from another CA, fails the TLS handshake), and then requires the
///   client's certificate to be valid for the node id its handshake claims (`from`): a node holding
///   node 2's certificate cannot speak as node 1.
///
/// The node's own certificate must therefore carry its node name as a DNS subject alternative name,
/// allow both TLS server and client authentication (extended key usages `serverAuth` and
/// `clientAuth`, or no extended key usage extension), and chain to the CA.
/// [`TcpNetwork::new`](crate::TcpNetwork::new) and [`TcpServer::start`](crate::TcpServer::start)
/// refuse a certificate that does not name their node. With OpenSSL, a node certificate needs
/// `subjectAltName = DNS:node-1.my-cluster.raft` and
/// `extendedKeyUsage = serverAuth, clientAuth`; the crate's `cert-gen` feature
/// (`cert_gen::ClusterCa`) generates such certificates for local clusters and tests.
///
/// Keys in PKCS#8, SEC1 (EC) or PKCS#1 (RSA) PEM; ECDSA P-256/P-384, Ed25519 and RSA keys work.
/// The configuration is fixed once built: replacing certificates means building a new one and
/// restarting the network and server. Revocation lists are not consulted.
#[derive(Clone)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    /// This node's own certificate (the chain's first).
    end_entity: CertificateDer<'static>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig")
            .field("end_entity_len", &self.end_entity.len())
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Builds the configuration from PEM text: `ca_pem` holds the cluster CA certificate(s) (every
    /// certificate in it is trusted), `cert_chain_pem` this node's certificate followed by any
    /// intermediate certificates, `key_pem` this node's private key.
    ///
    /// # Errors
    /// [`TlsError::Pem`] if an input holds no certificate or key or does not parse;
    /// [`TlsError::Config`] if rustls refuses them (a key that does not match the certificate
    /// included).
    pub fn from_pem(
        ca_pem: &[u8],
        cert_chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let pem_error = |what: &'static str| {
            move |e: rustls::pki_types::pem::Error| TlsError::Pem {
                what,
                reason: e.to_string(),
            }
        };
        let cas = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error("CA certificates"))?;
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error("certificate chain"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(pem_error("private key"))?;
        Self::from_der(cas, chain, key)
    }

    /// [`from_pem`](Self::from_pem) with each input read from a file.
    ///
    /// # Errors
    /// [`TlsError::Read`] if a file cannot be read; otherwise as [`from_pem`](Self::from_pem).
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        Self::from_pem(
            &read(ca.as_ref())?,
            &read(cert_chain.as_ref())?,
            &read(key.as_ref())?,
        )
    }

    fn from_der(
        cas: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        if cas.is_empty() {
            return Err(TlsError::Pem {
                what: "CA certificates",
                reason: "no CERTIFICATE block found".into(),
            });
        }
        let Some(end_entity) = chain.first().cloned() else {
            return Err(TlsError::Pem {
                what: "certificate chain",
                reason: "no CERTIFICATE block found".into(),
            });
        };
        let config_error = |e: rustls::Error| TlsError::Config(e.to_string());
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca).map_err(config_error)?;
        }
        let roots = Arc::new(roots);
        // Set explicitly, so that nothing depends on a process-wide default provider.
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let mut client = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_root_certificates(Arc::clone(&roots))
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(config_error)?;
        // One long-lived connection per peer: resuming sessions saves little and would keep
        // identities in caches.
        client.resumption = rustls::client::Resumption::disabled();

        let verifier = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(config_error)?;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        Ok(TlsConfig {
            client: Arc::new(client),
            server: Arc::new(server),
            end_entity,
        })
    }

    /// Checks that this node's own certificate is valid for `name` (carries it as a DNS subject
    /// alternative name). The network and the server check it at construction; a server binary may
    /// call it earlier to fail fast with a clear message.
    ///
    /// # Errors
    /// [`TlsError::Identity`].
    pub fn check_identity(&self, name: &NodeName) -> Result<(), TlsError> {
        certificate_names(&self.end_entity, name).map_err(|reason| TlsError::Identity {
            expected: name.dns_name(),
            reason,
        })
    }

    pub(crate) fn connector(&self) -> TlsConnector {
        TlsConnector::from(Arc::clone(&self.client))
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.server))
    }
}

/// The server name a client expects of the node it dials.
pub(crate) fn server_name(name: &NodeName) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.dns_name()).map_err(|e| TlsError::NodeName {
        name: name.dns_name(),
        reason: e.to_string(),
    })
}

/// Whether `cert` (already verified against the CA by the TLS handshake) is valid for `name`; the
/// error says why not.
pub(crate) fn certificate_names(cert: &CertificateDer<'_>, name: &NodeName) -> Result<(), String> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert).map_err(|e| e.to_string())?;
    let server_name = server_name(name).map_err(|e| e.to_string())?;
    rustls::client::verify_server_name(&parsed, &server_name).map_err(|e| e.to_string())
}
