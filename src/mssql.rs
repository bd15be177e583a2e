//! SQL Server connections (tiberius over tokio): connection strings, labels without secrets,
//! connecting with a bounded timeout, and error mapping that never carries a password.
//!
//! Connection strings are ADO.NET style (`Server=tcp:sql01,1433;Database=DBATools;User
//! Id=perf;Password=…`) or JDBC style (`jdbc:sqlserver://sql01:1433;databaseName=…`); tiberius
//! parses them. What the encryption keys mean (tiberius 0.13 with perfcopy's PRELOGIN fix,
//! MS-TDS 2.2.6.5):
//!
//! | string | PRELOGIN ENCRYPTION sent | what is encrypted |
//! |---|---|---|
//! | no `Encrypt`, `Encrypt=true`/`yes` | ENCRYPT_REQ | everything; a server without TLS is an error |
//! | `Encrypt=false`/`no` | ENCRYPT_OFF | the login packet only (everything if the server forces encryption; nothing if it has no TLS) |
//! | `Encrypt=DANGER_PLAINTEXT` | ENCRYPT_NOT_SUP | nothing; a server that forces encryption refuses it |
//!
//! The certificate is checked against the system's trust store (plus `TrustServerCertificateCA=FILE`)
//! and the host name (or `HostNameInCertificate=`) whenever TLS runs, also for the login-only
//! `Encrypt=false`; `TrustServerCertificate=true` is the explicit opt-out of those checks.
//! `Encrypt=strict` (TDS 8.0) is not available (tiberius' `tds80` is not built).

use std::time::Duration;

use tiberius::{Client, Config};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use crate::error::{Error, Result};

/// A connected client.
pub type SqlClient = Client<Compat<SqlStream>>;

/// The TCP stream under tiberius, with a read buffer for the small reads of login and TLS.
/// Packet reads (64 KiB at a time, see `vendor/asynchronous-codec/PERFCOPY.md`) are as large
/// as the buffer, so they bypass it and go straight from the socket into the packet reader's
/// buffer.
pub type SqlStream = tokio::io::BufReader<TcpStream>;

/// Bytes of the read buffer: the packet reader's read size.
const READ_BUFFER: usize = 64 * 1024;

/// Which end of a copy a connection is: its errors say so ([`Error::Source`] or
/// [`Error::Target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A DBATools database rows are read from.
    Source,
    /// The MonitoringDB rows are written to (or read back by verify).
    Target,
}

/// A parsed connection string: tiberius' config plus what perfcopy shows and scrubs.
#[derive(Clone)]
pub struct ConnSpec {
    config: Config,
    role: Role,
    /// `host:port/database`, for messages.
    label: String,
    database: String,
    /// Secrets to remove from any message (the password as written).
    secrets: Vec<String>,
    user: Option<String>,
    /// The name the certificate is checked against (`HostNameInCertificate=`, else the host
    /// as written), for messages.
    cert_name: String,
    /// The `Encrypt=` value as written (`None`: not given, so encryption is required).
    encrypt: Option<String>,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnSpec").field("label", &self.label).finish_non_exhaustive()
    }
}

/// Key/value pairs of an ADO.NET or JDBC string, for labels and scrubbing only (tiberius does
/// the authoritative parse). Values may be quoted with `'…'`, `"…"` or `{…}`.
fn pairs(s: &str) -> Vec<(String, String)> {
    let body = s.trim();
    let body = match body.get(..16) {
        Some(p) if p.eq_ignore_ascii_case("jdbc:sqlserver:/") => {
            let rest = &body[16..];
            let rest = rest.trim_start_matches('/');
            // jdbc:sqlserver://host[:port][;k=v...]
            let (hostpart, tail) = rest.split_once(';').unwrap_or((rest, ""));
            let mut v = vec![("server".to_string(), hostpart.replace(':', ","))];
            v.extend(pairs(tail));
            return v;
        }
        _ => body,
    };
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let mut val = String::new();
        match chars.peek().copied() {
            Some(q @ ('\'' | '"' | '{')) => {
                let close = if q == '{' { '}' } else { q };
                chars.next();
                while let Some(c) = chars.next() {
                    if c == close {
                        if chars.peek() == Some(&close) {
                            chars.next();
                            val.push(c);
                            continue;
                        }
                        break;
                    }
                    val.push(c);
                }
                for c in chars.by_ref() {
                    if c == ';' {
                        break;
                    }
                }
            }
            _ => {
                for c in chars.by_ref() {
                    if c == ';' {
                        break;
                    }
                    val.push(c);
                }
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if !key.is_empty() {
            out.push((key, val.trim().to_string()));
        }
        if chars.peek().is_none() {
            break;
        }
    }
    out
}

impl ConnSpec {
    /// Parses a source's connection string (`what` names the flag or config entry it came
    /// from). Errors name what is wrong, never the password.
    pub fn source(what: &str, s: &str) -> Result<ConnSpec> {
        Self::parse(Role::Source, what, s)
    }

    /// Parses a target's connection string, as [`ConnSpec::source`] does.
    pub fn target(what: &str, s: &str) -> Result<ConnSpec> {
        Self::parse(Role::Target, what, s)
    }

    /// Parses a connection string for `role`.
    pub fn parse(role: Role, what: &str, s: &str) -> Result<ConnSpec> {
        let kv = pairs(s);
        let get = |keys: &[&str]| kv.iter().find(|(k, _)| keys.contains(&k.as_str())).map(|(_, v)| v.clone());
        let secrets: Vec<String> = kv
            .iter()
            .filter(|(k, v)| matches!(k.as_str(), "password" | "pwd") && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect();
        let scrub = |m: String| scrub_all(&m, &secrets);
        let config = if s.trim_start().to_ascii_lowercase().starts_with("jdbc:") {
            Config::from_jdbc_string(s)
        } else {
            Config::from_ado_string(s)
        }
        .map_err(|e| Error::Usage { flag: what.into(), message: scrub(parse_error_message(get(&["encrypt"]).as_deref(), &e)) })?;
        let server = get(&["server", "data source", "address", "addr", "network address"]).ok_or_else(|| Error::Usage {
            flag: what.into(),
            message: "connection string has no Server= (or Data Source=)".into(),
        })?;
        let database = get(&["database", "initial catalog", "databasename"]).ok_or_else(|| Error::Usage {
            flag: what.into(),
            message: format!("connection string for '{}' has no Database= (or Initial Catalog=)", scrub(server.clone())),
        })?;
        let connect_timeout = match get(&["connect timeout", "connection timeout", "timeout", "logintimeout"]) {
            Some(t) => Duration::from_secs(t.parse().map_err(|_| Error::Usage {
                flag: what.into(),
                message: format!("Connect Timeout '{t}' is not a number of seconds"),
            })?),
            None => crate::defaults::CONNECT_TIMEOUT,
        };
        let host = server.trim_start_matches("tcp:");
        let user = get(&["user id", "uid", "user", "username"]);
        Ok(ConnSpec {
            label: scrub(format!("{host}/{database}")),
            config,
            role,
            database,
            secrets,
            user,
            encrypt: get(&["encrypt"]),
            cert_name: get(&["hostnameincertificate"]).unwrap_or_else(|| host.split([',', '\\']).next().unwrap_or(host).to_string()),
            connect_timeout,
        })
    }

    /// Sets the password (from an environment variable or a file, never the command line).
    pub fn with_password(mut self, what: &str, password: &str) -> Result<ConnSpec> {
        let user = self.user.clone().ok_or_else(|| Error::Usage {
            flag: what.into(),
            message: format!("connection '{}' has no User Id= for the password to go with", self.label),
        })?;
        self.config.authentication(tiberius::AuthMethod::sql_server(user, password));
        if !password.is_empty() {
            self.secrets.push(password.to_string());
        }
        Ok(self)
    }

    /// Logs in with an Entra ID (Azure AD) access token (FEDAUTH, MS-TDS 2.2.6.4) instead of a
    /// SQL login; the token is a secret like a password.
    pub fn with_access_token(mut self, token: &str) -> ConnSpec {
        self.config.authentication(tiberius::AuthMethod::aad_token(token));
        if !token.is_empty() {
            self.secrets.push(token.to_string());
        }
        self
    }

    /// Overrides the TDS packet size the client asks for.
    pub fn set_packet_size(&mut self, bytes: u32) {
        self.config.packet_size(bytes);
    }

    /// `host,port/database` (no user, no password).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The database named in the string.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Removes the password from a message.
    pub fn scrub(&self, message: &str) -> String {
        scrub_all(message, &self.secrets)
    }

    /// Which end of the copy this connection is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// A typed error about this connection, scrubbed: [`Error::Source`] for a source,
    /// [`Error::Target`] for a target.
    pub fn error(&self, message: impl std::fmt::Display) -> Error {
        let message = self.scrub(&message.to_string());
        match self.role {
            Role::Source => Error::Source { source_label: self.label.clone(), message },
            Role::Target => Error::Target { target: self.label.clone(), message },
        }
    }

    /// Connects and logs in, within the connect timeout.
    pub async fn connect(&self) -> Result<SqlClient> {
        let mut config = self.config.clone();
        // An Azure SQL gateway answers the login with a routing ENVCHANGE (MS-TDS 2.2.7.9): the
        // client logs in again at the host and port it names. A few hops at most.
        for _ in 0..=MAX_ROUTING_HOPS {
            let addr = config.get_addr();
            let fut = async {
                let tcp = TcpStream::connect(&addr).await.map_err(|e| self.error(format!("cannot reach {addr}: {e}")))?;
                let _ = tcp.set_nodelay(true);
                Ok::<_, Error>(Client::connect(config.clone(), tokio::io::BufReader::with_capacity(READ_BUFFER, tcp).compat_write()).await)
            };
            let login = match tokio::time::timeout(self.connect_timeout, fut).await {
                Ok(r) => r?,
                Err(_) => return Err(self.error(format!("no answer from {addr} within {} s (Connect Timeout)", self.connect_timeout.as_secs()))),
            };
            match login {
                Ok(client) => return Ok(client),
                Err(tiberius::error::Error::Routing { host, port }) => {
                    tracing::debug!("{}: the server routes the login to {host},{port}", self.label);
                    config.host(&host);
                    config.port(port);
                }
                Err(e) => return Err(self.connect_error(e)),
            }
        }
        Err(self.error(format!("login failed: routed more than {MAX_ROUTING_HOPS} times")))
    }

    /// A failed connect: TLS and encryption problems say what to change in the connection
    /// string; anything else is a failed login.
    fn connect_error(&self, e: tiberius::error::Error) -> Error {
        use tiberius::error::{CertificateProblem as P, Error as E};
        use tiberius::EncryptionLevel as L;
        let written = match &self.encrypt {
            Some(v) => format!("Encrypt={v}"),
            None => "no Encrypt= (so Encrypt=true)".to_string(),
        };
        let host = &self.cert_name;
        let bypass = "add TrustServerCertificate=true to the connection string";
        let message = match &e {
            E::Certificate { problem: P::UnknownIssuer, .. } => {
                format!("the server's TLS certificate is not trusted (self-signed or unknown issuer); {bypass}, or install the issuing CA (in the system's trust store, or name its PEM file with TrustServerCertificateCA=FILE)")
            }
            E::Certificate { problem: P::NotValidForName, .. } => {
                format!("the server's TLS certificate is not issued for '{host}'; connect by a name the certificate lists (or set HostNameInCertificate=NAME), or {bypass}")
            }
            E::Certificate { problem: P::Expired, .. } => format!("the server's TLS certificate has expired; renew it on the server, or {bypass}"),
            E::Certificate { problem: P::NotValidYet, .. } => format!("the server's TLS certificate is not valid yet (check the clocks); or {bypass}"),
            E::Certificate { reason, .. } => {
                let why = reason.split(". ").next().unwrap_or(reason);
                format!("the server's TLS certificate was rejected ({why}); {bypass}, or fix the certificate on the server")
            }
            E::Encryption { client: L::NotSupported, .. } => format!(
                "the server requires encryption (Force Encryption) but the connection string says {written}; remove it (TLS is on by default) or use Encrypt=true, with TrustServerCertificate=true if the server's certificate is self-signed"
            ),
            E::Encryption { .. } => format!(
                "the server does not offer encryption (it has no TLS certificate) but the connection string asks for it ({written}); install a certificate on the server, or on a network you trust add Encrypt=DANGER_PLAINTEXT (the password then crosses it in the clear)"
            ),
            other => format!("login failed: {other}"),
        };
        self.error(message)
    }

    /// Maps a tiberius error, scrubbed, with what perfcopy was doing.
    pub fn sql_error(&self, doing: &str, e: tiberius::error::Error) -> Error {
        self.error(format!("{doing}: {e}"))
    }
}

/// A connection string tiberius refused, in the string's terms where the `Encrypt=` value is
/// the reason.
fn parse_error_message(encrypt: Option<&str>, e: &tiberius::error::Error) -> String {
    match encrypt {
        Some(v) if v.eq_ignore_ascii_case("strict") => {
            "Encrypt=strict (TDS 8.0) is not supported; use Encrypt=true (TLS for everything after the PRELOGIN exchange)".to_string()
        }
        Some(v) if !matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "yes" | "false" | "no") && v != "DANGER_PLAINTEXT" => {
            format!("Encrypt='{v}' is not one of true, yes, false, no, DANGER_PLAINTEXT (Mandatory and Optional are spelled true and false here)")
        }
        _ => format!("invalid connection string: {e}"),
    }
}

fn scrub_all(message: &str, secrets: &[String]) -> String {
    let mut m = message.to_string();
    for s in secrets {
        if s.len() >= 1 {
            m = m.replace(s.as_str(), "***");
        }
    }
    m
}

/// Routing redirects a login follows before giving up (a gateway routes once).
const MAX_ROUTING_HOPS: usize = 3;

/// Whether a SQL Server error is worth retrying: deadlock victim, lock timeout, timeouts,
/// dropped connections.
pub fn is_transient(e: &tiberius::error::Error) -> bool {
    use tiberius::error::Error as E;
    match e {
        E::Server(t) => matches!(t.code(), 1205 | 1222 | 40197 | 40501 | 40613 | 49918 | 49919 | 49920 | 233 | 10053 | 10054 | 10060),
        E::Io { .. } => true,
        _ => false,
    }
}

/// A current-thread tokio runtime for one worker thread's SQL Server I/O.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_scrubs_without_the_password() {
        let s = ConnSpec::source("--from", "Server=tcp:sql01,1433;Database=DBATools;User Id=perf;Password='s3;cr=t';Encrypt=false").unwrap();
        assert_eq!(s.label(), "sql01,1433/DBATools");
        assert_eq!(s.database(), "DBATools");
        assert_eq!(s.scrub("login for perf with s3;cr=t failed"), "login for perf with *** failed");
    }

    #[test]
    fn errors_say_whether_the_source_or_the_target_failed() {
        let text = "Server=tcp:sql01,1433;Database=DBATools;User Id=perf;Password=hunter2";
        let e = ConnSpec::source("--from", text).unwrap().error("login failed for hunter2");
        assert!(matches!(&e, Error::Source { source_label, .. } if source_label == "sql01,1433/DBATools"), "{e:?}");
        assert_eq!(e.to_string(), "source 'sql01,1433/DBATools': login failed for ***");
        let e = ConnSpec::target("--to", text).unwrap().error("login failed");
        assert!(matches!(&e, Error::Target { target, .. } if target == "sql01,1433/DBATools"), "{e:?}");
    }

    #[test]
    fn jdbc_strings_are_accepted() {
        let s = ConnSpec::source("--from", "jdbc:sqlserver://sql02:1444;databaseName=DBATools;user=perf;password={pw}").unwrap();
        assert_eq!(s.label(), "sql02,1444/DBATools");
    }

    #[test]
    fn encrypt_values_tiberius_refuses_are_explained() {
        let e = ConnSpec::source("--from", "Server=tcp:x,1433;Database=D;Encrypt=strict").unwrap_err().to_string();
        assert!(e.contains("--from") && e.contains("Encrypt=strict (TDS 8.0) is not supported"), "{e}");
        let e = ConnSpec::source("--from", "Server=tcp:x,1433;Database=D;Encrypt=Mandatory;Password=hunter2").unwrap_err().to_string();
        assert!(e.contains("Encrypt='Mandatory' is not one of") && !e.contains("hunter2"), "{e}");
        let e = ConnSpec::source("--from", "Server=tcp:x,1433;Database=D;Encrypt=danger_plaintext").unwrap_err().to_string();
        assert!(e.contains("Encrypt='danger_plaintext'"), "{e}");
        for ok in ["true", "yes", "false", "no", "DANGER_PLAINTEXT"] {
            ConnSpec::source("--from", &format!("Server=tcp:x,1433;Database=D;Encrypt={ok}")).unwrap();
        }
    }

    #[test]
    fn malformed_strings_name_the_flag_and_hide_the_password() {
        let e = ConnSpec::target("--to", "Server=tcp:x,1433;Password=hunter2;Port=abc").unwrap_err().to_string();
        assert!(e.contains("--to"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = ConnSpec::target("--to", "Server=tcp:x,1433;Password=hunter2").unwrap_err().to_string();
        assert!(e.contains("Database") && !e.contains("hunter2"), "{e}");
    }
}
