//! Byte-level proofs with a second, independent TDS implementation (`tds-protocol`) as the
//! client side: the MS-TDS 4.12 BulkLoad example sent verbatim, the server's result stream
//! parsed by tds-protocol's TokenParser, and malformed input that must only close one connection.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use arrow::array::{Array, BooleanArray};
use bytes::Bytes;
use common::*;
use tds_protocol::{ColMetaData, EncryptionLevel, Login7, PreLogin, Token, TokenParser, TypeId};
use tds_test_server::{Column, ServerConfig, SqlType, TestServer};

struct Raw {
    s: TcpStream,
    packet_size: usize,
}

impl Raw {
    fn send(&mut self, ty: u8, payload: &[u8]) {
        let chunk = self.packet_size - 8;
        let parts: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(chunk).collect() };
        let n = parts.len();
        for (i, p) in parts.into_iter().enumerate() {
            let mut h = vec![ty, if i + 1 == n { 1 } else { 0 }];
            h.extend_from_slice(&((p.len() + 8) as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0, (i + 1) as u8, 0]);
            h.extend_from_slice(p);
            self.s.write_all(&h).unwrap();
        }
    }

    /// Reads one whole response message; also returns how many packets it took.
    fn recv(&mut self) -> (Bytes, usize) {
        let mut out = Vec::new();
        let mut packets = 0;
        loop {
            let mut h = [0u8; 8];
            self.s.read_exact(&mut h).unwrap();
            assert_eq!(h[0], 4, "server messages are tabular results");
            let len = u16::from_be_bytes([h[2], h[3]]) as usize;
            assert!(len <= self.packet_size, "packet of {len} bytes exceeds the negotiated {}", self.packet_size);
            let mut b = vec![0u8; len - 8];
            self.s.read_exact(&mut b).unwrap();
            out.extend_from_slice(&b);
            packets += 1;
            if h[1] & 1 != 0 {
                return (Bytes::from(out), packets);
            }
        }
    }

    fn tokens(&mut self) -> (Vec<Token>, usize) {
        let (b, packets) = self.recv();
        let mut p = TokenParser::new(b);
        let mut meta: Option<ColMetaData> = None;
        let mut v = Vec::new();
        while let Some(t) = p.next_token_with_metadata(meta.as_ref()).unwrap() {
            if let Token::ColMetaData(m) = &t {
                meta = Some(m.clone());
            }
            v.push(t);
        }
        (v, packets)
    }

    fn batch(&mut self, sql: &str) -> (Vec<Token>, usize) {
        self.send(1, &tds_protocol::SqlBatch::new(sql).encode());
        self.tokens()
    }

    fn login(addr: SocketAddr, db: &str, requested_packet_size: u32) -> Raw {
        let mut r = Raw { s: TcpStream::connect(addr).unwrap(), packet_size: 4096 };
        r.send(18, &PreLogin::new().with_encryption(EncryptionLevel::NotSupported).encode());
        let (b, _) = r.recv();
        let pre = PreLogin::decode(b).unwrap();
        assert_eq!(pre.encryption, EncryptionLevel::NotSupported);
        r.send(16, &Login7::new().with_sql_auth("raw", PASSWORD).with_database(db).with_packet_size(requested_packet_size).encode());
        let (toks, _) = r.tokens();
        assert!(toks.iter().any(|t| matches!(t, Token::LoginAck(_))), "{toks:?}");
        for t in &toks {
            if let Token::EnvChange(e) = t {
                if let tds_protocol::EnvChangeValue::String(v) = &e.new_value {
                    if matches!(e.env_type, tds_protocol::EnvChangeType::PacketSize) {
                        r.packet_size = v.parse().unwrap();
                    }
                }
            }
        }
        r
    }
}

fn done_of(toks: &[Token]) -> (bool, bool, u64) {
    match toks.last() {
        Some(Token::Done(d)) => (d.status.error, d.status.count, d.row_count),
        other => panic!("last token {other:?}"),
    }
}

#[test]
fn spec_4_12_bulkload_example_is_decoded_into_the_table() {
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_table("SpecDb", "dbo.T", vec![Column::new("c1", SqlType::Bit, true)], &[]).unwrap();
    let mut r = Raw::login(srv.addr(), "SpecDb", 4096);
    assert_eq!(r.packet_size, 4096);
    let (toks, _) = r.batch("INSERT BULK dbo.T ([c1] bit)");
    assert_eq!(done_of(&toks), (false, false, 0));
    // [MS-TDS] 4.12 "Bulk Load", byte for byte: COLMETADATA (1 column c1, flags 0x0005, BIT),
    // one ROW with value 0x00, DONE.
    let spec: [u8; 38] = [
        0x07, 0x01, 0x00, 0x26, 0x00, 0x00, 0x01, 0x00, 0x81, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, //
        0x00, 0x32, 0x02, 0x63, 0x00, 0x31, 0x00, 0xD1, 0x00, 0xFD, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    r.s.write_all(&spec).unwrap();
    let (toks, _) = r.tokens();
    assert_eq!(done_of(&toks), (false, true, 1));
    let b = srv.table_batch("SpecDb", "dbo.T").unwrap();
    let c1 = b.column(0).as_any().downcast_ref::<BooleanArray>().unwrap();
    assert_eq!((c1.len(), c1.is_null(0), c1.value(0)), (1, false, false));
    assert_eq!(srv.stats().bulk_rows_received, 1);
}

#[test]
fn tds_protocol_decodes_the_servers_result_stream_with_the_right_types() {
    let srv = TestServer::start(ServerConfig { packet_size: Some(512), password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_dbatools("DBATools_R", true);
    let n = 120;
    srv.insert_batch("DBATools_R", "dbo.PerfSnapshotRun", &src_batch(&src_rows(n), true)).unwrap();
    let mut r = Raw::login(srv.addr(), "DBATools_R", 8192);
    assert_eq!(r.packet_size, 512, "the server imposes its configured packet size");
    let (toks, packets) = r.batch("SELECT * FROM dbo.PerfSnapshotRun ORDER BY PerfSnapshotRunID");
    assert!(packets > 10, "a 120-row result spans many 512-byte packets ({packets})");
    let Some(Token::ColMetaData(meta)) = toks.first() else { panic!("{:?}", toks.first()) };
    /// (name, type, max length, precision, scale, nullable, identity)
    type ColDesc = (String, TypeId, Option<u32>, Option<u8>, Option<u8>, bool, bool);
    let got: Vec<ColDesc> = meta
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.type_id, c.type_info.max_length, c.type_info.precision, c.type_info.scale, c.flags & 1 != 0, c.flags & 0x10 != 0))
        .collect();
    let s = |x: &str| x.to_string();
    let int = |name: &str| (s(name), TypeId::IntN, Some(4), None, None, true, false);
    let want = vec![
        (s("PerfSnapshotRunID"), TypeId::Int8, None, None, None, false, true),
        (s("SnapshotUTC"), TypeId::DateTime2, None, None, Some(3), false, false),
        int("ServerID"),
        (s("ServerName"), TypeId::NVarChar, Some(256), None, None, false, false),
        (s("SqlVersion"), TypeId::NVarChar, Some(400), None, None, false, false),
        (s("CpuSignalWaitPct"), TypeId::DecimalN, Some(5), Some(9), Some(4), true, false),
        (s("TopWaitType"), TypeId::NVarChar, Some(240), None, None, true, false),
        (s("TopWaitMsPerSec"), TypeId::DecimalN, Some(9), Some(18), Some(4), true, false),
        int("SessionsCount"),
        int("RequestsCount"),
        int("BlockingSessionCount"),
        int("DeadlockCountRecent"),
        int("MemoryGrantWarningCount"),
    ];
    assert_eq!(got, want);
    // The whole Flags USHORT as SQL Server sends it (MS-TDS 2.2.7.4): identity = fIdentity only
    // (read-only), others usUpdateable 0x0008 plus fNullable. Regression: the server sent
    // 0x0004, which tiberius <= 0.12 (connectorx) rejects as "column metadata: invalid flags".
    let flags: Vec<u16> = meta.columns.iter().map(|c| c.flags).collect();
    assert_eq!(flags, [0x0010, 0x0008, 0x0009, 0x0008, 0x0008, 0x0009, 0x0009, 0x0009, 0x0009, 0x0009, 0x0009, 0x0009, 0x0009]);
    let rows = toks.iter().filter(|t| matches!(t, Token::Row(_))).count();
    assert_eq!(rows, n);
    assert_eq!(done_of(&toks), (false, true, n as u64));
    assert!(!matches!(toks.last(), Some(Token::Done(d)) if d.status.more));
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_table("M", "dbo.T", vec![Column::new("c1", SqlType::Int, true)], &[]).unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        vec![0x12, 0x01, 0x00, 0x04, 0, 0, 1, 0],    // header length below 8
        vec![0x99, 0x01, 0x00, 0x09, 0, 0, 1, 0, 1], // unknown packet type first
        vec![0x12, 0x01, 0x00, 0x0A, 0, 0, 1, 0, 0x00, 0x00], // PRELOGIN option entry cut short
        vec![0x12, 0x01, 0x00, 0x0E, 0, 0, 1, 0, 0x00, 0x00, 0x40, 0x00, 0x06, 0xFF], // option points past the end
    ];
    for g in &garbage {
        let mut s = TcpStream::connect(srv.addr()).unwrap();
        s.write_all(g).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf); // the server closes the socket
    }
    // A LOGIN7 whose field offsets point outside the message.
    let mut r = Raw { s: TcpStream::connect(srv.addr()).unwrap(), packet_size: 4096 };
    r.send(18, &PreLogin::new().with_encryption(EncryptionLevel::NotSupported).encode());
    r.recv();
    let mut login = Login7::new().with_sql_auth("raw", PASSWORD).with_database("M").encode().to_vec();
    login[40] = 0xF0; // UserName offset
    login[41] = 0xFF;
    r.send(16, &login);
    let mut buf = Vec::new();
    let _ = r.s.read_to_end(&mut buf);
    assert!(buf.is_empty(), "no login response to a malformed LOGIN7");

    // A BulkLoad with a truncated ROW and then a bogus token.
    let mut r = Raw::login(srv.addr(), "M", 4096);
    r.batch("INSERT BULK dbo.T ([c1] int)");
    r.send(7, &[0x81, 0x01, 0x00, 0, 0, 0, 0, 0x09, 0x00, 0x26, 0x04, 0x02, b'c', 0, b'1', 0, 0xD1, 0x04, 0x01, 0x00, 0x00, 0x00, 0x42]);
    let mut buf = Vec::new();
    let _ = r.s.read_to_end(&mut buf);
    assert_eq!(srv.row_count("M", "dbo.T").unwrap(), 0);

    // The server still serves everyone else.
    let mut ok = Raw::login(srv.addr(), "M", 4096);
    let (toks, _) = ok.batch("SELECT COUNT(*) AS n FROM dbo.T");
    assert_eq!(done_of(&toks), (false, true, 1));
}

#[test]
fn bulk_column_type_mismatch_is_4816_and_too_long_string_4815() {
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_table("V", "dbo.T", vec![Column::new("d", SqlType::Decimal { precision: 9, scale: 4 }, true), Column::new("s", SqlType::NVarChar(Some(3)), true)], &[]).unwrap();
    let mut r = Raw::login(srv.addr(), "V", 4096);
    let colmeta = |prec: u8, len: u8| -> Vec<u8> {
        let mut m = vec![0x81, 0x02, 0x00];
        m.extend_from_slice(&[0, 0, 0, 0, 0x09, 0x00, 0x6A, len, prec, 4, 1, b'd', 0]);
        m.extend_from_slice(&[0, 0, 0, 0, 0x09, 0x00, 0xE7, 0x40, 0x00, 0x09, 0x04, 0xD0, 0x00, 0x34, 1, b's', 0]);
        m
    };
    let done = [0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    // DECIMAL(18,4) sent for a DECIMAL(9,4) column.
    r.batch("INSERT BULK dbo.T ([d] decimal(18,4), [s] nvarchar(3))");
    let mut msg = colmeta(18, 9);
    msg.extend_from_slice(&[0xD1, 9, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]);
    msg.extend_from_slice(&done);
    r.send(7, &msg);
    let (toks, _) = r.tokens();
    let err = toks.iter().find_map(|t| if let Token::Error(e) = t { Some(e.clone()) } else { None }).expect("an ERROR token");
    assert_eq!(err.number, 4816, "{}", err.message);
    assert!(err.message.contains("decimal(18,4)") && err.message.contains("decimal(9,4)"), "{}", err.message);
    // Matching types, but a 4-character value for NVARCHAR(3).
    r.batch("INSERT BULK dbo.T ([d] decimal(9,4), [s] nvarchar(3))");
    let mut msg = colmeta(9, 5);
    msg.extend_from_slice(&[0xD1, 5, 0, 0x10, 0x27, 0, 0, 8, 0, b'a', 0, b'b', 0, b'c', 0, b'd', 0]);
    msg.extend_from_slice(&done);
    r.send(7, &msg);
    let (toks, _) = r.tokens();
    let err = toks.iter().find_map(|t| if let Token::Error(e) = t { Some(e.clone()) } else { None }).expect("an ERROR token");
    assert_eq!(err.number, 4815, "{}", err.message);
    // And a valid row: -1.0000 and 'abc'.
    r.batch("INSERT BULK dbo.T ([d] decimal(9,4), [s] nvarchar(3))");
    let mut msg = colmeta(9, 5);
    msg.extend_from_slice(&[0xD1, 5, 0, 0x10, 0x27, 0, 0, 6, 0, b'a', 0, b'b', 0, b'c', 0]);
    msg.extend_from_slice(&done);
    r.send(7, &msg);
    let (toks, _) = r.tokens();
    assert_eq!(done_of(&toks), (false, true, 1));
    let b = srv.table_batch("V", "dbo.T").unwrap();
    let d = b.column(0).as_any().downcast_ref::<arrow::array::Decimal128Array>().unwrap();
    assert_eq!(d.value(0), -10000);
}
