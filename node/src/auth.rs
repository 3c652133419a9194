//! Authentication settings of a node: the `[auth]` table of the TOML file, validated into
//! a `quasar_rpc::auth::AccessPolicy`, and the decision for one HTTP request (bearer token
//! or client certificate) used by `admin::authorize`.
//!
//! ```toml
//! [[auth.tokens]]            # a bearer token: clients send it (--token / Authorization)
//! name = "ci"
//! token = "a-long-random-secret"
//! role = "write"             # read | write | admin
//!
//! [[auth.identities]]        # a client certificate identity (a DNS name in its SAN)
//! identity = "alice"
//! role = "admin"
//! ```
//!
//! No token and no identity: everything is allowed (development). The binary protocol
//! carries the token in the connection's handshake; HTTP carries it in
//! `Authorization: Bearer <token>`.

use std::collections::BTreeSet;

use quasar_rpc::auth::{AccessPolicy, IdentityBinding, Principal, Role, Secret, TokenBinding};
use quasar_rpc::tls::PeerCertificate;
use serde::Deserialize;

use crate::config::ConfigError;

/// The `[auth]` table as written in the file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    #[serde(default)]
    pub identities: Vec<IdentityEntry>,
}

#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub token: String,
    pub role: String,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdentityEntry {
    pub identity: String,
    pub role: String,
}

/// Tokens shorter than this are refused: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

fn invalid(setting: &'static str, value: &str, reason: String, fix: &str) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_string(),
        reason,
        fix: fix.to_string(),
    }
}

impl AuthFile {
    /// Validates the table: roles known, token names and identities non-empty and unique,
    /// tokens long enough and unique.
    pub fn into_policy(self) -> Result<AccessPolicy, ConfigError> {
        let mut policy = AccessPolicy::default();
        let mut names = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for t in self.tokens {
            let role: Role = t.role.parse().map_err(|reason| {
                invalid(
                    "auth.tokens.role",
                    &t.role,
                    reason,
                    "use read, write or admin",
                )
            })?;
            if t.name.is_empty() || !names.insert(t.name.clone()) {
                return Err(invalid(
                    "auth.tokens.name",
                    &t.name,
                    "token names must be non-empty and unique".into(),
                    "name each token after who uses it, e.g. name = \"ci\"",
                ));
            }
            if t.token.len() < MIN_TOKEN_LEN || t.token.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "auth.tokens.token",
                    &format!("<token of {}>", t.name),
                    format!("must be at least {MIN_TOKEN_LEN} characters without spaces"),
                    "generate one, e.g. `openssl rand -hex 24`",
                ));
            }
            if !secrets.insert(t.token.clone()) {
                return Err(invalid(
                    "auth.tokens.token",
                    &format!("<token of {}>", t.name),
                    "two entries share this token".into(),
                    "give every name its own token",
                ));
            }
            policy.tokens.push(TokenBinding {
                token: Secret(t.token),
                name: t.name,
                role,
            });
        }
        let mut identities = BTreeSet::new();
        for i in self.identities {
            let role: Role = i.role.parse().map_err(|reason| {
                invalid(
                    "auth.identities.role",
                    &i.role,
                    reason,
                    "use read, write or admin",
                )
            })?;
            let valid = rustls::pki_types::DnsName::try_from(i.identity.as_str()).is_ok();
            if !valid || !identities.insert(i.identity.clone()) {
                return Err(invalid(
                    "auth.identities.identity",
                    &i.identity,
                    "must be a DNS-style name (letters, digits, '-', '.') listed once".into(),
                    "use the name given to `quasar certs client --name`",
                ));
            }
            policy.identities.push(IdentityBinding {
                identity: i.identity,
                role,
            });
        }
        Ok(policy)
    }
}

/// Why an HTTP request is refused: 401 (who are you?) or 403 (not allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpRefusal {
    Unauthenticated(String),
    Forbidden(String),
}

/// The decision for one HTTP request: `tls` says whether the port runs TLS, `certificate`
/// is the client certificate of the connection, `authorization` the `Authorization` header.
pub fn authorize_http(
    policy: &AccessPolicy,
    tls: bool,
    certificate: Option<&PeerCertificate>,
    authorization: Option<&str>,
    needed: Role,
) -> Result<Principal, HttpRefusal> {
    let token = match authorization {
        None => None,
        Some(h) => match h.strip_prefix("Bearer ") {
            Some(t) => Some(t.trim()),
            None => {
                return Err(HttpRefusal::Unauthenticated(
                    "the Authorization header must be `Bearer <token>`".into(),
                ))
            }
        },
    };
    if policy.is_open() && tls && certificate.is_none() {
        return Err(HttpRefusal::Unauthenticated(
            "this node requires a client certificate signed by the cluster CA \
             (curl --cacert ca.pem --cert client.pem --key client.key)"
                .into(),
        ));
    }
    let principal = policy
        .authenticate(certificate, token)
        .map_err(|e| HttpRefusal::Unauthenticated(e.to_string()))?;
    if !principal.role.allows(needed) {
        return Err(HttpRefusal::Forbidden(format!(
            "{principal} may not do this: it needs the `{needed}` role"
        )));
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AccessPolicy, ConfigError> {
        #[derive(Deserialize)]
        struct Wrapper {
            auth: AuthFile,
        }
        let w: Wrapper = toml::from_str(text).map_err(|e| ConfigError::File {
            path: "<text>".into(),
            reason: e.to_string(),
        })?;
        w.auth.into_policy()
    }

    #[test]
    fn tokens_and_identities_parse() {
        let policy = parse(
            "[[auth.tokens]]\nname = \"ci\"\ntoken = \"0123456789abcdef0\"\nrole = \"write\"\n\
             [[auth.identities]]\nidentity = \"alice\"\nrole = \"admin\"\n",
        )
        .unwrap();
        assert_eq!(policy.tokens.len(), 1);
        assert_eq!(policy.tokens[0].role, Role::Write);
        assert_eq!(policy.tokens[0].name, "ci");
        assert_eq!(policy.identities[0].identity, "alice");
        assert_eq!(policy.identities[0].role, Role::Admin);
        // The token never shows in Debug output.
        assert!(!format!("{policy:?}").contains("0123456789abcdef0"));
    }

    #[test]
    fn bad_entries_name_the_setting() {
        let err = parse("[[auth.tokens]]\nname = \"ci\"\ntoken = \"short\"\nrole = \"write\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("auth.tokens.token"), "{err}");
        assert!(
            !err.to_string().contains("short"),
            "the token leaked: {err}"
        );
        let err = parse(
            "[[auth.tokens]]\nname = \"ci\"\ntoken = \"0123456789abcdef0\"\nrole = \"root\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown role `root`"), "{err}");
        let err =
            parse("[[auth.identities]]\nidentity = \"not a name\"\nrole = \"read\"\n").unwrap_err();
        assert!(
            err.to_string().contains("auth.identities.identity"),
            "{err}"
        );
        let twice = "[[auth.tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef0\"\nrole = \
                     \"read\"\n[[auth.tokens]]\nname = \"b\"\ntoken = \"0123456789abcdef0\"\n\
                     role = \"read\"\n";
        assert!(parse(twice)
            .unwrap_err()
            .to_string()
            .contains("share this token"));
        let err =
            parse("[[auth.tokens]]\nname = \"a\"\nsecret = \"x\"\nrole = \"read\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `secret`"), "{err}");
    }

    #[test]
    fn http_requests_need_a_bearer_token_with_the_role() {
        let policy = parse(
            "[[auth.tokens]]\nname = \"reader\"\ntoken = \"0123456789abcdef0\"\nrole = \"read\"\n",
        )
        .unwrap();
        let read = authorize_http(
            &policy,
            true,
            None,
            Some("Bearer 0123456789abcdef0"),
            Role::Read,
        );
        assert_eq!(read.map(|p| p.name), Ok("reader".to_string()));
        let write = authorize_http(
            &policy,
            true,
            None,
            Some("Bearer 0123456789abcdef0"),
            Role::Write,
        );
        assert!(matches!(write, Err(HttpRefusal::Forbidden(_))), "{write:?}");
        let none = authorize_http(&policy, true, None, None, Role::Read);
        assert!(
            matches!(none, Err(HttpRefusal::Unauthenticated(_))),
            "{none:?}"
        );
        let wrong = authorize_http(&policy, true, None, Some("Bearer nope"), Role::Read);
        assert!(
            matches!(wrong, Err(HttpRefusal::Unauthenticated(_))),
            "{wrong:?}"
        );
        let basic = authorize_http(&policy, true, None, Some("Basic abc"), Role::Read);
        assert!(
            matches!(basic, Err(HttpRefusal::Unauthenticated(_))),
            "{basic:?}"
        );
        // No policy: open on plaintext; over TLS a client certificate is required.
        let open = AccessPolicy::default();
        assert!(authorize_http(&open, false, None, None, Role::Admin).is_ok());
        assert!(authorize_http(&open, true, None, None, Role::Read).is_err());
    }
}
