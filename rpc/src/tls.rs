//! TLS material of nodes and clients: PEM files loaded into rustls configurations (ring
//! provider), the names certificates must carry, and the peer certificate a connection
//! presented. No socket code: `conn` runs the handshakes.
//!
//! Names (subject alternative names, DNS type):
//!
//! | certificate | carries | checked by |
//! |---|---|---|
//! | node `N` | `node-N` (and optionally host names and IPs) | peers dialing node N (server name `node-N`); a node accepting a peer's handshake that claims node N; clients dialing node N |
//! | client | its identity, e.g. `alice` | the node, against `[[auth.identities]]` |
//!
//! Peers use mutual TLS: every node presents its node certificate on both sides, and a
//! handshake claiming node N is refused unless the certificate names `node-N`. Clients may
//! present a certificate (mutual TLS) or authenticate with a token instead; whether a client
//! without a certificate is let in is the access policy's call, not the TLS layer's, so that
//! it gets a readable refusal instead of a TLS alert.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_rustls::{TlsAcceptor, TlsConnector};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::message::NodeId;

/// The DNS name a node's certificate carries: `node-<id>`.
pub fn node_name(node: NodeId) -> String {
    format!("node-{}", node.0)
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{path} holds no {what}: give a PEM file (e.g. from `quasar certs`)")]
    Empty { what: &'static str, path: PathBuf },
    #[error("cannot use the TLS material ({what}): {source}")]
    Rustls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the client-certificate verifier from {path}: {reason}")]
    Verifier { path: PathBuf, reason: String },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (a chain: leaf first).
pub fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |reason: String| TlsError::Read {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        what: "a private key",
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The trusted CA certificates.
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "CA certificates")? {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            what: "CA certificate",
            source,
        })?;
    }
    Ok(Arc::new(roots))
}

/// The three files of a node: its certificate (chain), its key, the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A node's TLS: the acceptor of its listeners (client certificates verified against the
/// CA when presented) and the connector it dials peers with (presenting its own
/// certificate).
#[derive(Clone)]
pub struct NodeTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
    /// The same server configuration as `acceptor`, for the admin HTTP port.
    pub server_config: Arc<ServerConfig>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls")
    }
}

impl NodeTls {
    pub fn load(files: &TlsFiles) -> Result<NodeTls, TlsError> {
        let chain = load_certs(&files.cert, "a certificate")?;
        let key = load_key(&files.key)?;
        let roots = load_roots(&files.ca)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Verifier {
                path: files.ca.clone(),
                reason: e.to_string(),
            })?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "protocol versions",
                source,
            })?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|source| TlsError::Rustls {
                what: "node certificate and key",
                source,
            })?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "protocol versions",
                source,
            })?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|source| TlsError::Rustls {
                what: "node certificate and key",
                source,
            })?;
        let server = Arc::new(server);
        Ok(NodeTls {
            acceptor: TlsAcceptor::from(Arc::clone(&server)),
            connector: TlsConnector::from(Arc::new(client)),
            server_config: server,
        })
    }
}

/// A client's TLS: the cluster CA and, optionally, a client certificate and key.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// `ca`: the cluster CA; `identity`: the client certificate and key, if any.
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let roots = load_roots(ca)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "protocol versions",
                source,
            })?
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert, "a certificate")?, load_key(key)?)
                .map_err(|source| TlsError::Rustls {
                    what: "client certificate and key",
                    source,
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(Arc::clone(&self.config))
    }
}

/// Node ids from here up are placeholders for endpoints whose node is not known yet
/// (`client::discover` counts down from `u64::MAX`).
pub const PLACEHOLDER_NODE_IDS: u64 = u64::MAX - (1 << 32);

/// The name a client checks the server certificate against: `node-<id>` when the node is
/// known, else the address's IP (node certificates from `quasar certs` carry both).
pub fn server_name(node: NodeId, addr: SocketAddr) -> ServerName<'static> {
    if node.0 != 0 && node.0 < PLACEHOLDER_NODE_IDS {
        if let Ok(name) = ServerName::try_from(node_name(node)) {
            return name;
        }
    }
    ServerName::IpAddress(addr.ip().into())
}

/// The end-entity certificate a peer presented, already verified against the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate(pub CertificateDer<'static>);

impl PeerCertificate {
    /// Whether the certificate names `name` (a DNS name among its subject alternative names).
    pub fn names(&self, name: &str) -> bool {
        let Ok(dns) = rustls::pki_types::DnsName::try_from(name) else {
            return false;
        };
        let Ok(cert) = webpki::EndEntityCert::try_from(&self.0) else {
            return false;
        };
        cert.verify_is_valid_for_subject_name(&ServerName::DnsName(dns.to_owned()))
            .is_ok()
    }

    /// Whether the certificate is node `node`'s.
    pub fn names_node(&self, node: NodeId) -> bool {
        self.names(&node_name(node))
    }
}
