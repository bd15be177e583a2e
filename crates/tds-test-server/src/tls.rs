//! TLS as SQL Server does it for TDS 7.x: the client's PRELOGIN ENCRYPTION option is answered
//! by MS-TDS 2.2.6.5's table, the TLS handshake travels inside PRELOGIN (0x12) packets, and then
//! TLS records carry the TDS packets, for the whole connection or only for LOGIN7.
//!
//! The certificate is generated when the first server of the process starts: a test CA
//! ([`ca_certificate_pem`]) and a server certificate it issued for `localhost` and `127.0.0.1`.
//! TLS 1.2 only: a TDS 7.x client runs its TLS engine over PRELOGIN framing, and python-tds
//! (pyOpenSSL's `TLSv1_2_METHOD`) speaks nothing else; TLS 1.3 belongs to TDS 8.0 (`strict`),
//! which this server does not offer.

use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Result, ServerError};

/// What the server does about encryption: how it answers PRELOGIN's ENCRYPTION option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// A certificate, and encryption as the client asks (SQL Server's default; the server
    /// "set to ENCRYPT_OFF" in MS-TDS 2.2.6.5): ENCRYPT_OFF → login packet only, ENCRYPT_ON and
    /// ENCRYPT_REQ → the whole connection, ENCRYPT_NOT_SUP → plaintext.
    #[default]
    Offered,
    /// Force Encryption (the server "set to ENCRYPT_ON"): every client that can encrypt
    /// encrypts the whole connection; one that sends ENCRYPT_NOT_SUP is answered ENCRYPT_REQ
    /// and the connection is closed.
    Required,
    /// No certificate (ENCRYPT_NOT_SUP to everyone): a client that asks for encryption
    /// (ENCRYPT_ON or ENCRYPT_REQ) is answered so and the connection is closed.
    Unavailable,
}

/// PRELOGIN ENCRYPTION values (MS-TDS 2.2.6.5).
pub mod encrypt {
    /// Encryption available but off: only the login packet is encrypted.
    pub const OFF: u8 = 0x00;
    /// Encryption available and on.
    pub const ON: u8 = 0x01;
    /// Encryption not available.
    pub const NOT_SUP: u8 = 0x02;
    /// Encryption required.
    pub const REQ: u8 = 0x03;
}

/// What happens after the PRELOGIN response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// No TLS at all.
    Plain,
    /// TLS handshake; LOGIN7 under TLS, then plaintext both ways.
    LoginOnly,
    /// TLS handshake; everything after it under TLS.
    Full,
    /// The two sides cannot agree: the response is sent, then the connection is closed.
    Refuse,
}

/// The server's ENCRYPTION answer to the client's value and what follows
/// (MS-TDS 2.2.6.5, first table; the second says what the client then does).
pub(crate) fn negotiate(mode: TlsMode, client: u8) -> Result<(u8, Plan)> {
    use encrypt::*;
    Ok(match (mode, client) {
        (TlsMode::Offered, OFF) => (OFF, Plan::LoginOnly),
        (TlsMode::Offered, ON | REQ) => (ON, Plan::Full),
        (TlsMode::Offered, NOT_SUP) => (NOT_SUP, Plan::Plain),
        (TlsMode::Required, OFF) => (REQ, Plan::Full),
        (TlsMode::Required, ON | REQ) => (ON, Plan::Full),
        (TlsMode::Required, NOT_SUP) => (REQ, Plan::Refuse),
        (TlsMode::Unavailable, OFF | NOT_SUP) => (NOT_SUP, Plan::Plain),
        (TlsMode::Unavailable, ON | REQ) => (NOT_SUP, Plan::Refuse),
        (_, other) => {
            return Err(ServerError::Protocol(format!(
                "PRELOGIN ENCRYPTION 0x{other:02X} is not one of ENCRYPT_OFF/ON/NOT_SUP/REQ (client certificates are not supported)"
            )))
        }
    })
}

/// The CA, the server certificate and the TLS configuration, made once per process.
struct Identity {
    ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

static IDENTITY: OnceLock<std::result::Result<Identity, String>> = OnceLock::new();

fn identity() -> Result<&'static Identity> {
    IDENTITY.get_or_init(|| make_identity().map_err(|e| e.to_string())).as_ref().map_err(|e| ServerError::Tls(format!("cannot make the server certificate: {e}")))
}

fn make_identity() -> std::result::Result<Identity, Box<dyn std::error::Error>> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "tds-test-server test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;
    let chain = vec![cert.der().clone(), CertificateDer::from(ca.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Identity { ca_pem: ca.pem(), config: Arc::new(config) })
}

/// PEM of the CA that issued every test server's certificate (for clients that validate it:
/// tiberius' `TrustServerCertificateCA=FILE`, python-tds' `cafile`).
pub fn ca_certificate_pem() -> Result<String> {
    Ok(identity()?.ca_pem.clone())
}

/// Checks that the certificate can be made, so a server that offers TLS fails at start, not
/// at its first handshake.
pub(crate) fn ensure_identity() -> Result<()> {
    identity().map(|_| ())
}

/// A new server-side TLS session.
pub(crate) fn new_session() -> Result<ServerConnection> {
    ServerConnection::new(identity()?.config.clone()).map_err(|e| ServerError::Tls(e.to_string()))
}

/// Bytes of TLS records read from the socket at a time: small enough that what they decrypt
/// to stays under rustls' received-plaintext limit.
const TLS_READ_CHUNK: usize = 8 * 1024;

/// A connection's byte stream: the socket, with a TLS session over it while one is in force.
pub(crate) struct Transport {
    pub(crate) tcp: TcpStream,
    pub(crate) tls: Option<Box<ServerConnection>>,
}

fn tls_io(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Transport {
    pub(crate) fn plain(tcp: TcpStream) -> Transport {
        Transport { tcp, tls: None }
    }

    /// Fills `buf` (decrypted when TLS is on).
    pub(crate) async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let Transport { tcp, tls } = self;
        let Some(tls) = tls else {
            return tcp.read_exact(buf).await.map(|_| ());
        };
        let mut filled = 0;
        let mut chunk = Vec::new();
        while filled < buf.len() {
            match tls.reader().read(&mut buf[filled..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    chunk.resize(TLS_READ_CHUNK, 0);
                    let n = tcp.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    feed(tls, &chunk[..n])?;
                    // Alerts the records caused.
                    write_records(tls, tcp).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `data` (encrypted when TLS is on).
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let Transport { tcp, tls } = self;
        let Some(tls) = tls else {
            return tcp.write_all(data).await;
        };
        let mut off = 0;
        while off < data.len() {
            let n = tls.writer().write(&data[off..])?;
            if n == 0 && !tls.wants_write() {
                return Err(io::ErrorKind::WriteZero.into());
            }
            off += n;
            write_records(tls, tcp).await?;
        }
        Ok(())
    }

    /// Ends the connection (with a TLS close_notify when TLS is on).
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            write_records(tls, &mut self.tcp).await?;
        }
        self.tcp.shutdown().await
    }
}

/// Hands TLS records received to the session and processes them (bytes after the peer's
/// close_notify are dropped: rustls takes no more then).
pub(crate) fn feed(tls: &mut ServerConnection, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = tls.read_tls(&mut bytes)?;
        tls.process_new_packets().map_err(tls_io)?;
        if n == 0 {
            break;
        }
    }
    Ok(())
}

/// The TLS records the session has to send.
pub(crate) fn pending_records(tls: &mut ServerConnection) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut out)?;
    }
    Ok(out)
}

async fn write_records(tls: &mut ServerConnection, tcp: &mut TcpStream) -> io::Result<()> {
    let out = pending_records(tls)?;
    if !out.is_empty() {
        tcp.write_all(&out).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use encrypt::*;

    /// MS-TDS 2.2.6.5's table, row by row.
    #[test]
    fn answers_follow_the_encryption_table() {
        let table = [
            (TlsMode::Offered, [(OFF, Plan::LoginOnly), (ON, Plan::Full), (NOT_SUP, Plan::Plain), (ON, Plan::Full)]),
            (TlsMode::Required, [(REQ, Plan::Full), (ON, Plan::Full), (REQ, Plan::Refuse), (ON, Plan::Full)]),
            (TlsMode::Unavailable, [(NOT_SUP, Plan::Plain), (NOT_SUP, Plan::Refuse), (NOT_SUP, Plan::Plain), (NOT_SUP, Plan::Refuse)]),
        ];
        for (mode, answers) in table {
            for (client, want) in [OFF, ON, NOT_SUP, REQ].into_iter().zip(answers) {
                assert_eq!(negotiate(mode, client).unwrap(), want, "{mode:?}, client 0x{client:02X}");
            }
        }
        assert!(negotiate(TlsMode::Offered, 0x80).is_err());
    }
}
