//! TLS as SQL Server does it, checked with tiberius as the client and a recording proxy between
//! the two: what each PRELOGIN ENCRYPTION value leads to (MS-TDS 2.2.6.5), that the handshake
//! travels in PRELOGIN (0x12) packets both ways and the bytes after it are TLS records (or, for
//! login-only encryption, TDS packets again after LOGIN7), that the password and the query
//! text are never seen in clear where they are encrypted, and what a client is told when the
//! certificate fails validation or the two sides cannot agree.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::*;
use tds_test_server::{ServerConfig, Stats, TestServer, TlsMode};
use tiberius::error::{CertificateProblem, Error};
use tiberius::{Client, Config, EncryptionLevel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::TokioAsyncWriteCompatExt;

/// A query whose text (UTF-16 on the wire) shows whether SQL batches cross in clear.
const MARKER: &str = "tls_marker_7f3a";

fn server(tls: TlsMode) -> TestServer {
    let srv = TestServer::start(ServerConfig { packet_size: Some(4096), password: Some(PASSWORD.into()), tls, ..Default::default() }).unwrap();
    srv.create_dbatools("DBATools_T", true);
    srv.create_monitoringdb("MonitoringDB");
    srv.insert_batch("DBATools_T", "dbo.PerfSnapshotRun", &src_batch(&src_rows(40), true)).unwrap();
    srv
}

/// The test CA's PEM in a file, for `TrustServerCertificateCA=`.
fn ca_file(dir: &tempfile::TempDir) -> PathBuf {
    let p = dir.path().join("test-ca.pem");
    std::fs::write(&p, tds_test_server::ca_certificate_pem().unwrap()).unwrap();
    p
}

fn ado(addr: SocketAddr, db: &str, extra: &str) -> Config {
    Config::from_ado_string(&format!("Server=tcp:{},{};Database={db};User Id=perfcopy;Password={PASSWORD};{extra}", addr.ip(), addr.port())).unwrap()
}

async fn connect_with(config: Config, addr: SocketAddr) -> tiberius::Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Client::connect(config, tcp.compat_write()).await
}

/// Bytes each way through a one-connection proxy.
#[derive(Default)]
struct Capture {
    to_server: Mutex<Vec<u8>>,
    to_client: Mutex<Vec<u8>>,
}

/// Listens on a free port and forwards one connection to `server`, recording both directions.
async fn recording_proxy(server: SocketAddr) -> (SocketAddr, Arc<Capture>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cap = Arc::new(Capture::default());
    let c = cap.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let upstream = TcpStream::connect(server).await.unwrap();
        let (cr, cw) = client.into_split();
        let (sr, sw) = upstream.into_split();
        let c2 = c.clone();
        let up = tokio::spawn(pump(cr, sw, c, true));
        let down = tokio::spawn(pump(sr, cw, c2, false));
        let _ = tokio::join!(up, down);
    });
    (addr, cap)
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, cap: Arc<Capture>, to_server: bool) {
    let mut buf = vec![0u8; 16384];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let log = if to_server { &cap.to_server } else { &cap.to_client };
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// One direction of a connection, cut into what the test expects there.
#[derive(Debug, Default)]
struct Phases {
    /// Payloads of the TDS packets before the handshake (the PRELOGIN exchange), by type.
    prelogin_types: Vec<u8>,
    /// TLS records carried in PRELOGIN (0x12) packets: (content type, version, handshake type).
    handshake_records: Vec<(u8, u16, Option<u8>)>,
    /// TLS records straight over TCP after the handshake: (content type, length).
    tls_records: Vec<(u8, usize)>,
    /// Plain TDS packet types after those records.
    plain_after: Vec<u8>,
}

/// Parses a direction: TDS packets (the PRELOGIN exchange), then PRELOGIN packets carrying
/// TLS records, then TLS records, then TDS packets. Panics on anything that fits none of them.
fn phases(bytes: &[u8]) -> Phases {
    let mut p = Phases::default();
    let mut i = 0;
    let tds = |i: usize| -> (u8, usize) {
        assert!(i + 8 <= bytes.len(), "a TDS header cut at {i}");
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        assert!(len >= 8 && i + len <= bytes.len(), "TDS packet at {i} of length {len} overruns the {} bytes", bytes.len());
        (bytes[i], len)
    };
    // The PRELOGIN request (0x12) or response (0x04), one message.
    let (ty, len) = tds(i);
    assert!(ty == 0x12 || ty == 0x04, "first packet type 0x{ty:02X}");
    p.prelogin_types.push(ty);
    i += len;
    // Handshake records inside PRELOGIN packets (TLS record types are 0x14..=0x17, so 0x12 is a TDS header).
    let mut hs = Vec::new();
    while i < bytes.len() && bytes[i] == 0x12 {
        let (_, len) = tds(i);
        hs.extend_from_slice(&bytes[i + 8..i + len]);
        i += len;
    }
    let mut j = 0;
    while j < hs.len() {
        assert!(j + 5 <= hs.len(), "TLS record header cut inside PRELOGIN payloads");
        let (ct, ver, len) = (hs[j], u16::from_be_bytes([hs[j + 1], hs[j + 2]]), u16::from_be_bytes([hs[j + 3], hs[j + 4]]) as usize);
        assert!((0x14..=0x17).contains(&ct), "content type 0x{ct:02X} in the handshake");
        let first = (ct == 0x16 && p.handshake_records.iter().all(|r| r.0 != 0x14)).then(|| hs[j + 5]);
        p.handshake_records.push((ct, ver, first));
        j += 5 + len;
        assert!(j <= hs.len(), "TLS record overruns the PRELOGIN payloads");
    }
    while i < bytes.len() && (0x14..=0x17).contains(&bytes[i]) {
        assert!(i + 5 <= bytes.len(), "TLS record header cut at {i}");
        let ver = u16::from_be_bytes([bytes[i + 1], bytes[i + 2]]);
        assert_eq!(ver, 0x0303, "TLS 1.2 record version at {i}");
        let len = u16::from_be_bytes([bytes[i + 3], bytes[i + 4]]) as usize;
        p.tls_records.push((bytes[i], len));
        i += 5 + len;
        assert!(i <= bytes.len(), "TLS record overruns the capture");
    }
    while i < bytes.len() {
        let (ty, len) = tds(i);
        p.plain_after.push(ty);
        i += len;
    }
    p
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// The password as LOGIN7 carries it (MS-TDS 2.2.6.4: UTF-16, nibbles swapped, XOR 0xA5).
fn obfuscated(pw: &str) -> Vec<u8> {
    utf16(pw).into_iter().map(|b| b.rotate_left(4) ^ 0xA5).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Connects through a recording proxy, reads the seeded rows with a query that carries
/// [`MARKER`], bulk-loads a few rows, and returns both directions' bytes.
async fn session_through_proxy(srv: &TestServer, config_for: impl Fn(SocketAddr) -> Config) -> (Vec<u8>, Vec<u8>) {
    let (proxy, cap) = recording_proxy(srv.addr()).await;
    let mut c = connect_with(config_for(proxy), proxy).await.unwrap();
    let sql = format!("SELECT * FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > 0 ORDER BY PerfSnapshotRunID -- {MARKER}");
    let rows = c.simple_query(sql).await.unwrap().into_first_result().await.unwrap();
    assert_eq!(rows.iter().map(|r| from_tiberius(r, true)).collect::<Vec<_>>(), src_rows(40));
    let mut bulk = c.bulk_insert_with_options("MonitoringDB.dbo.PerfSnapshotRun", &TARGET_BULK_COLUMNS, Default::default(), &[]).await.unwrap();
    for r in src_rows(5) {
        bulk.send(target_token_row(&r)).await.unwrap();
    }
    assert_eq!(bulk.finalize().await.unwrap().total(), 5);
    c.close().await.unwrap();
    // The proxy has seen everything once both sides closed.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let up = cap.to_server.lock().unwrap().clone();
    let down = cap.to_client.lock().unwrap().clone();
    (up, down)
}

fn tls_counts(s: Stats) -> (u64, u64, u64) {
    (s.tls_handshakes, s.login_only_encryption, s.encryption_refusals)
}

/// A session through the proxy to a server offering TLS, with `encrypt` and the certificate
/// validated against the test CA (chain and IP SAN 127.0.0.1): the server, then each
/// direction's bytes and their phases.
async fn validated_session(encrypt: &str) -> (TestServer, Vec<u8>, Vec<u8>, Phases, Phases) {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(&dir);
    let srv = server(TlsMode::Offered);
    let (up, down) = session_through_proxy(&srv, |a| ado(a, "DBATools_T", &format!("{encrypt};TrustServerCertificateCA={}", ca.display()))).await;
    let (c, s) = (phases(&up), phases(&down));
    (srv, up, down, c, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_true_encrypts_everything_after_a_prelogin_wrapped_handshake() {
    let (srv, up, down, c, s) = validated_session("Encrypt=true").await;
    assert_eq!(tls_counts(srv.stats()), (1, 0, 0));
    assert_eq!(srv.stats().bulk_rows_received, 5);
    // Client: PRELOGIN, then ClientHello and (ClientKeyExchange, ChangeCipherSpec, Finished) in PRELOGIN packets.
    assert_eq!(c.prelogin_types, vec![0x12]);
    assert_eq!(c.handshake_records.first().map(|r| (r.0, r.2)), Some((0x16, Some(0x01))), "ClientHello first: {c:?}");
    assert!(c.handshake_records.iter().any(|r| r.0 == 0x14), "ChangeCipherSpec: {c:?}");
    // Server: PRELOGIN response (0x04), then ServerHello... and its Finished flight in PRELOGIN (0x12) packets.
    assert_eq!(s.prelogin_types, vec![0x04]);
    assert_eq!(s.handshake_records.first().map(|r| (r.0, r.1, r.2)), Some((0x16, 0x0303, Some(0x02))), "ServerHello first: {s:?}");
    assert!(s.handshake_records.iter().any(|r| r.0 == 0x14), "ChangeCipherSpec: {s:?}");
    // Everything after the handshake is TLS application data; no TDS packet in clear.
    for (d, name) in [(&c, "client"), (&s, "server")] {
        assert!(d.tls_records.len() >= 2 && d.tls_records.iter().all(|r| r.0 == 0x17 || r.0 == 0x15), "{name}: {d:?}");
        assert!(d.plain_after.is_empty(), "{name} sent TDS in clear after the handshake: {:?}", d.plain_after);
    }
    assert!(!contains(&up, &obfuscated(PASSWORD)) && !contains(&up, &utf16(PASSWORD)), "the password crossed in clear");
    assert!(!contains(&up, &utf16(MARKER)), "the query text crossed in clear");
    assert!(!contains(&down, &utf16("PAGEIOLATCH_SH_1")), "result rows crossed in clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_false_encrypts_only_the_login_packet() {
    let (srv, up, down, c, s) = validated_session("Encrypt=false").await;
    assert_eq!(tls_counts(srv.stats()), (1, 1, 0));
    assert_eq!(c.handshake_records.first().map(|r| (r.0, r.2)), Some((0x16, Some(0x01))));
    assert_eq!(s.handshake_records.first().map(|r| (r.0, r.2)), Some((0x16, Some(0x02))));
    // LOGIN7 is the client's only TLS application data; then SQL batches, bulk load in clear.
    assert!(!c.tls_records.is_empty() && c.tls_records.iter().all(|r| r.0 == 0x17), "{c:?}");
    assert!(c.plain_after.contains(&0x01) && c.plain_after.contains(&0x07), "{:?}", c.plain_after);
    // The server answers the login (and everything after) in clear.
    assert!(s.tls_records.is_empty(), "{s:?}");
    assert!(!s.plain_after.is_empty() && s.plain_after.iter().all(|&t| t == 0x04), "{:?}", s.plain_after);
    assert!(!contains(&up, &obfuscated(PASSWORD)) && !contains(&up, &utf16(PASSWORD)), "the password crossed in clear");
    assert!(contains(&up, &utf16(MARKER)), "Encrypt=false: queries are not encrypted");
    assert!(contains(&down, &utf16("PAGEIOLATCH_SH_1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn danger_plaintext_sends_everything_in_clear() {
    let srv = server(TlsMode::Offered);
    let (up, down) = session_through_proxy(&srv, |a| ado(a, "DBATools_T", "Encrypt=DANGER_PLAINTEXT")).await;
    assert_eq!(tls_counts(srv.stats()), (0, 0, 0));
    let (c, s) = (phases(&up), phases(&down));
    assert!(c.handshake_records.is_empty() && c.tls_records.is_empty() && s.handshake_records.is_empty());
    assert!(contains(&up, &obfuscated(PASSWORD)), "LOGIN7 in clear carries the obfuscated password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_forces_encryption_refuses_a_plaintext_client_and_encrypts_encrypt_false() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(&dir);
    let srv = server(TlsMode::Required);
    let e = connect_with(ado(srv.addr(), "DBATools_T", "Encrypt=DANGER_PLAINTEXT"), srv.addr()).await.unwrap_err();
    assert_eq!(e, Error::Encryption { client: EncryptionLevel::NotSupported, server: EncryptionLevel::Required });
    assert_eq!(tls_counts(srv.stats()), (0, 0, 1));
    assert_eq!(srv.stats().logins, 0);
    // Encrypt=false (ENCRYPT_OFF) is answered ENCRYPT_REQ: the whole connection is encrypted.
    let (up, _) = session_through_proxy(&srv, |a| ado(a, "DBATools_T", &format!("Encrypt=false;TrustServerCertificateCA={}", ca.display()))).await;
    assert_eq!(tls_counts(srv.stats()), (1, 0, 1));
    let c = phases(&up);
    assert!(c.plain_after.is_empty() && !contains(&up, &utf16(MARKER)), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_refuses_a_client_that_requires_it() {
    let srv = server(TlsMode::Unavailable);
    let e = connect_with(ado(srv.addr(), "DBATools_T", "Encrypt=true;TrustServerCertificate=true"), srv.addr()).await.unwrap_err();
    assert_eq!(e, Error::Encryption { client: EncryptionLevel::Required, server: EncryptionLevel::NotSupported });
    assert_eq!(tls_counts(srv.stats()), (0, 0, 1));
    // Encrypt=false to a server without TLS: nothing is encrypted (MS-TDS 2.2.6.5), login included.
    let (up, _) = session_through_proxy(&srv, |a| ado(a, "DBATools_T", "Encrypt=false")).await;
    assert!(contains(&up, &obfuscated(PASSWORD)));
    assert_eq!(tls_counts(srv.stats()), (0, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_validated_unless_trust_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(&dir);
    let srv = server(TlsMode::Offered);
    let a = srv.addr();
    // The system's trust store does not know the test CA: login-only encryption checks it too.
    for encrypt in ["Encrypt=true", "Encrypt=false", ""] {
        match connect_with(ado(a, "DBATools_T", encrypt), a).await {
            Err(Error::Certificate { problem: CertificateProblem::UnknownIssuer, .. }) => {}
            other => panic!("{encrypt:?}: expected an untrusted certificate, got {:?}", other.map(|_| ())),
        }
    }
    // The right CA but another name.
    match connect_with(ado(a, "DBATools_T", &format!("TrustServerCertificateCA={};HostNameInCertificate=sql01.example.com", ca.display())), a).await {
        Err(Error::Certificate { problem: CertificateProblem::NotValidForName, .. }) => {}
        other => panic!("expected a name mismatch, got {:?}", other.map(|_| ())),
    }
    assert_eq!(srv.stats().logins, 0);
    // The certificate is issued for localhost too.
    let mut c = connect_with(ado(a, "DBATools_T", &format!("TrustServerCertificateCA={};HostNameInCertificate=localhost", ca.display())), a).await.unwrap();
    c.simple_query("SELECT 1").await.unwrap().into_results().await.unwrap();
    let mut c = connect_with(ado(a, "DBATools_T", "Encrypt=true;TrustServerCertificate=true"), a).await.unwrap();
    let n: i32 = c.simple_query("SELECT COUNT(*) FROM dbo.PerfSnapshotRun").await.unwrap().into_row().await.unwrap().unwrap().get(0).unwrap();
    assert_eq!(n, 40);
    assert_eq!(srv.stats().logins, 2);
}

/// Large replies and bulk loads cross many TLS records; the packet framing inside them holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_packets_under_tls_at_the_smallest_packet_size() {
    let srv = TestServer::start(ServerConfig { packet_size: Some(512), password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_dbatools("DBATools_T", true);
    srv.create_monitoringdb("MonitoringDB");
    let rows = src_rows(3000);
    srv.insert_batch("DBATools_T", "dbo.PerfSnapshotRun", &src_batch(&rows, true)).unwrap();
    let mut c = connect_with(ado(srv.addr(), "DBATools_T", "Encrypt=true;TrustServerCertificate=true"), srv.addr()).await.unwrap();
    let got = c.query("SELECT * FROM dbo.PerfSnapshotRun ORDER BY PerfSnapshotRunID", &[]).await.unwrap().into_first_result().await.unwrap();
    assert_eq!(got.iter().map(|r| from_tiberius(r, true)).collect::<Vec<_>>(), rows);
    let mut bulk = c.bulk_insert_with_options("MonitoringDB.dbo.PerfSnapshotRun", &TARGET_BULK_COLUMNS, Default::default(), &[]).await.unwrap();
    for r in &rows {
        bulk.send(target_token_row(r)).await.unwrap();
    }
    assert_eq!(bulk.finalize().await.unwrap().total(), 3000);
    let want: Vec<SrcRow> = rows.iter().map(|r| SrcRow { server_id: Some(r.server_id.unwrap_or(-1)), ..r.clone() }).collect();
    assert_eq!(from_batch(&srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap()), want);
    assert_eq!(tls_counts(srv.stats()), (1, 0, 0));
}
