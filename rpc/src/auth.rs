//! Who is at the other end of a connection, and what it may do.
//!
//! A client proves who it is with its TLS client certificate (an identity: a DNS name in the
//! certificate's subject alternative names, signed by the cluster CA) or with a bearer token
//! sent in the [`Handshake`](crate::message::Handshake). An [`AccessPolicy`] maps identities
//! and tokens to a [`Principal`]: a name and a [`Role`]. Roles nest: `admin` may do what
//! `write` may, which may do what `read` may.
//!
//! | role | may |
//! |---|---|
//! | `read` | get, scan; admin reads (status, list ranges and members, describe a range) |
//! | `write` | the above, and put, delete, compare-and-set, increment, transactions |
//! | `admin` | the above, and split, merge, replica moves, leadership transfer, members |
//!
//! An empty policy (no token, no identity binding) allows everything: plaintext loopback
//! development needs no setup. The policy is pure: the transport calls
//! [`AccessPolicy::authenticate`] once per connection, the shard runtime calls
//! [`Role::allows`] per request.

use std::fmt;

use rkyv::{Archive, Deserialize, Serialize};

/// What a principal may do; ordered: `Read < Write < Admin`.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    /// Whether this role may do what `needed` guards.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role `{other}`: use read, write or admin")),
        }
    }
}

/// The role a client operation needs: `read` for get and scan, `write` for the rest.
pub fn role_for_operation(op: &crate::message::ArchivedOperation) -> Role {
    use crate::message::ArchivedOperation as Op;
    match op {
        Op::Get { .. } | Op::Scan(_) => Role::Read,
        Op::Put { .. }
        | Op::Delete { .. }
        | Op::CompareAndSet { .. }
        | Op::DeleteRange { .. }
        | Op::Txn(_)
        | Op::Increment { .. } => Role::Write,
    }
}

/// The role an admin operation needs: `read` to look (status, ranges, members), `admin` to
/// change anything (ranges, replicas, leadership, membership).
pub fn role_for_admin(op: &crate::message::ArchivedAdminOp) -> Role {
    use crate::message::ArchivedAdminOp as Op;
    match op {
        Op::ListRanges { .. } | Op::DescribeRange(_) | Op::ListMembers | Op::Status => Role::Read,
        Op::SplitRange { .. }
        | Op::MergeRanges { .. }
        | Op::AddReplica { .. }
        | Op::RemoveReplica { .. }
        | Op::MoveReplica { .. }
        | Op::TransferLeader { .. }
        | Op::AddMember { .. }
        | Op::RemoveMember { .. } => Role::Admin,
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Its client certificate names an identity bound to a role.
    Certificate,
    /// It sent a configured bearer token.
    Token,
    /// A peer node, by its node certificate (or any node when TLS is off).
    Node,
    /// No policy is configured: everything is allowed.
    Open,
}

/// Who is asking, as authenticated at the start of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The identity or token name, for logs ("who asked").
    pub name: String,
    pub role: Role,
    pub method: AuthMethod,
}

impl Principal {
    /// The principal of a connection when no policy is configured.
    pub fn open() -> Principal {
        Principal {
            name: "anonymous".into(),
            role: Role::Admin,
            method: AuthMethod::Open,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.method {
            AuthMethod::Certificate => "certificate",
            AuthMethod::Token => "token",
            AuthMethod::Node => "node certificate",
            AuthMethod::Open => "no auth configured",
        };
        write!(f, "{} (role {}, by {how})", self.name, self.role)
    }
}

/// A secret (a bearer token): compared in constant time, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A bearer token and whom it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBinding {
    /// The secret the client sends.
    pub token: Secret,
    /// The name logged for requests made with it.
    pub name: String,
    pub role: Role,
}

/// A certificate identity (a DNS name in the client certificate) and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityBinding {
    pub identity: String,
    pub role: Role,
}

/// Why a connection could not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no credentials: present a client certificate bound to a role (--cert/--key) or a \
         bearer token (--token)"
    )]
    NoCredentials,
    #[error("the bearer token is not valid: check --token against the node's [[auth.tokens]]")]
    BadToken,
    #[error(
        "the client certificate names no identity bound to a role: add an [[auth.identities]] \
         entry for it, or use a token"
    )]
    UnboundCertificate,
}

/// Tokens and identity bindings; empty means open (everything allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    pub tokens: Vec<TokenBinding>,
    pub identities: Vec<IdentityBinding>,
}

impl AccessPolicy {
    /// Whether no authentication is configured (development: everything is allowed).
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty() && self.identities.is_empty()
    }

    /// The principal of a connection that presented `certificate` (already verified against
    /// the cluster CA by TLS) and/or `token`. A token, when sent, must be valid even if the
    /// certificate alone would do: a wrong token is a mistake worth reporting.
    pub fn authenticate(
        &self,
        certificate: Option<&crate::tls::PeerCertificate>,
        token: Option<&str>,
    ) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal::open());
        }
        if let Some(token) = token {
            let found = self.tokens.iter().fold(None, |found, b| {
                match constant_time_eq(b.token.expose(), token) {
                    true => Some(b),
                    false => found,
                }
            });
            return match found {
                Some(b) => Ok(Principal {
                    name: b.name.clone(),
                    role: b.role,
                    method: AuthMethod::Token,
                }),
                None => Err(AuthError::BadToken),
            };
        }
        let Some(certificate) = certificate else {
            return Err(AuthError::NoCredentials);
        };
        self.identities
            .iter()
            .find(|b| certificate.names(&b.identity))
            .map(|b| Principal {
                name: b.identity.clone(),
                role: b.role,
                method: AuthMethod::Certificate,
            })
            .ok_or(AuthError::UnboundCertificate)
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AccessPolicy {
        AccessPolicy {
            tokens: vec![TokenBinding {
                token: Secret("s3cret".into()),
                name: "ci".into(),
                role: Role::Write,
            }],
            identities: vec![],
        }
    }

    #[test]
    fn roles_nest() {
        assert!(Role::Admin.allows(Role::Write));
        assert!(Role::Write.allows(Role::Read));
        assert!(!Role::Read.allows(Role::Write));
        assert!(!Role::Write.allows(Role::Admin));
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn an_empty_policy_allows_everything() {
        let p = AccessPolicy::default().authenticate(None, None);
        assert_eq!(p.map(|p| p.role), Ok(Role::Admin));
    }

    #[test]
    fn tokens_must_match_exactly() {
        let p = policy();
        assert_eq!(p.authenticate(None, None), Err(AuthError::NoCredentials));
        assert_eq!(
            p.authenticate(None, Some("s3cre")),
            Err(AuthError::BadToken)
        );
        assert_eq!(
            p.authenticate(None, Some("s3cret!")),
            Err(AuthError::BadToken)
        );
        let ok = p.authenticate(None, Some("s3cret"));
        assert_eq!(ok.map(|p| (p.name, p.role)), Ok(("ci".into(), Role::Write)));
    }
}
