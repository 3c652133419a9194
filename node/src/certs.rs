//! `quasar certs`: a development certificate authority and the certificates Quasar expects,
//! generated with rcgen (ECDSA P-256), written as PEM into one directory.
//!
//! ```text
//!  quasar certs init   --dir D              D/ca.pem, D/ca.key
//!  quasar certs node   --dir D --id N       D/node-N.pem, D/node-N.key
//!                      [--host NAME|IP]...  SAN: node-N, localhost, 127.0.0.1, ::1, hosts
//!  quasar certs client --dir D --name NAME  D/NAME.pem, D/NAME.key    SAN: NAME
//! ```
//!
//! Node certificates serve both sides of mutual TLS (server and client authentication);
//! client certificates only authenticate clients. A client name may not start with `node-`:
//! that prefix is how a peer proves which node it is. Keys are written with mode 0600.
//!
//! NOTE: rcgen 0.13 cannot parse a CA certificate back without the x509-parser feature, so
//! signing rebuilds the CA's parameters (fixed subject, key usages) around the stored key:
//! the issuer name and key identifier of the new certificate are the stored CA's.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// `quasar certs` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a development CA (ca.pem, ca.key) in --dir.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace an existing CA (every certificate it signed stops being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Create the certificate of node --id, signed by the CA in --dir.
    Node {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, value_name = "N")]
        id: u64,
        /// More names or IP addresses the node is reached at (repeatable).
        #[arg(long = "host", value_name = "NAME|IP")]
        hosts: Vec<String>,
    },
    /// Create a client certificate for identity --name, signed by the CA in --dir.
    Client {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The identity (a DNS-style name) that `[[auth.identities]]` binds to a role.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
}

const CA_NAME: &str = "Quasar development CA";

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Quasar");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// The paths of one certificate and its key in `dir`.
pub fn cert_paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}

fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Creates the CA in `dir` (refusing to replace one unless `force`).
pub fn init(dir: &Path, force: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (cert_path, key_path) = cert_paths(dir, "ca");
    if !force && (cert_path.exists() || key_path.exists()) {
        bail!(
            "{} already holds a CA; pass --force to replace it (certificates it signed will no \
             longer be trusted)",
            dir.display()
        );
    }
    let key = KeyPair::generate().context("cannot generate the CA key")?;
    let cert = ca_params()?
        .self_signed(&key)
        .context("cannot sign the CA")?;
    write_file(&key_path, &key.serialize_pem(), true)?;
    write_file(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

/// Signs `params` with the CA in `dir`, writing `stem.pem` and `stem.key`.
fn issue(dir: &Path, stem: &str, params: CertificateParams) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (_, ca_key_path) = cert_paths(dir, "ca");
    let ca_key_text = std::fs::read_to_string(&ca_key_path).with_context(|| {
        format!(
            "cannot read the CA key {}: run `quasar certs init --dir {}` first",
            ca_key_path.display(),
            dir.display()
        )
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_text)
        .with_context(|| format!("{} is not a PEM private key", ca_key_path.display()))?;
    let ca = ca_params()?
        .self_signed(&ca_key)
        .context("cannot rebuild the CA")?;
    let key = KeyPair::generate().context("cannot generate a key")?;
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .context("cannot sign the certificate")?;
    let (cert_path, key_path) = cert_paths(dir, stem);
    write_file(&key_path, &key.serialize_pem(), true)?;
    write_file(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

/// Issues node `id`'s certificate: SAN `node-<id>`, localhost, the loopback IPs and `hosts`.
pub fn node(dir: &Path, id: u64, hosts: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    if id == 0 {
        bail!("node ids start at 1");
    }
    let name = quasar_rpc::tls::node_name(quasar_rpc::message::NodeId(id));
    let mut names = vec![
        name.clone(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(hosts.iter().cloned());
    let mut params = CertificateParams::new(names).context("invalid --host")?;
    params.distinguished_name.push(DnType::CommonName, &name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    issue(dir, &name, params)
}

/// Issues a client certificate for identity `name`.
pub fn client(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    if rustls::pki_types::DnsName::try_from(name).is_err() || name.contains('/') {
        bail!("client name `{name}` must be a DNS-style name (letters, digits, '-', '.')");
    }
    if name.starts_with("node-") || name == "ca" {
        bail!("client name `{name}` is reserved: `node-*` names identify nodes");
    }
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(dir, name, params)
}

/// Runs one `quasar certs` subcommand, printing what it wrote.
pub fn run(command: &CertsCommand) -> anyhow::Result<()> {
    let (cert, key) = match command {
        CertsCommand::Init { dir, force } => init(dir, *force)?,
        CertsCommand::Node { dir, id, hosts } => node(dir, *id, hosts)?,
        CertsCommand::Client { dir, name } => client(dir, name)?,
    };
    println!("wrote {} and {}", cert.display(), key.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quasar_rpc::message::NodeId;
    use quasar_rpc::tls::{ClientTls, NodeTls, PeerCertificate, TlsFiles};

    #[test]
    fn generated_certificates_load_and_carry_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = init(dir.path(), false).unwrap();
        assert!(init(dir.path(), false).is_err(), "an existing CA is kept");
        let (cert, key) = node(dir.path(), 2, &["db2.example".into()]).unwrap();
        NodeTls::load(&TlsFiles {
            cert: cert.clone(),
            key,
            ca: ca.clone(),
        })
        .unwrap();
        let der = quasar_rpc::tls::load_certs(&cert, "a certificate").unwrap();
        let peer = PeerCertificate(der[0].clone());
        assert!(peer.names_node(NodeId(2)));
        assert!(!peer.names_node(NodeId(3)));
        assert!(peer.names("db2.example"));
        let (ccert, ckey) = client(dir.path(), "alice").unwrap();
        ClientTls::load(&ca, Some((&ccert, &ckey))).unwrap();
        let der = quasar_rpc::tls::load_certs(&ccert, "a certificate").unwrap();
        assert!(PeerCertificate(der[0].clone()).names("alice"));
        assert!(client(dir.path(), "node-2").is_err());
        assert!(client(dir.path(), "not a name").is_err());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "keys are private");
    }
}
