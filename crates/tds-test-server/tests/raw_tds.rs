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
    let rows = toks.iter().filter(|t| matches!(t, Token::Row(_) | Token::NbcRow(_))).count();
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
    // DECIMAL(18,4) sent for a column declared (and created) DECIMAL(9,4).
    r.batch("INSERT BULK dbo.T ([d] decimal(9,4), [s] nvarchar(3))");
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

/// The token kinds of a reply, in order, as short names (for comparing with what SQL Server
/// sends, written out by hand from MS-TDS and the clients' sources).
fn kinds(toks: &[Token]) -> Vec<String> {
    toks.iter()
        .map(|t| match t {
            Token::ColMetaData(_) => "COLMETADATA".to_string(),
            Token::Order(o) => format!("ORDER{:?}", o.columns),
            Token::Row(_) => "ROW".into(),
            Token::NbcRow(_) => "NBCROW".into(),
            Token::Done(d) => format!("DONE(0x{:X})", d.cur_cmd),
            Token::DoneInProc(d) => format!("DONEINPROC(0x{:X})", d.cur_cmd),
            Token::DoneProc(d) => format!("DONEPROC(0x{:X})", d.cur_cmd),
            Token::ReturnStatus(s) => format!("RETURNSTATUS({s})"),
            Token::Info(i) => format!("INFO({})", i.number),
            Token::Error(e) => format!("ERROR({})", e.number),
            Token::EnvChange(e) => format!("ENVCHANGE({:?})", e.env_type),
            other => format!("{other:?}"),
        })
        .collect()
}

fn k(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Regression: the server sent no ORDER token, so a client's handling of it (perfcopy's decoder
/// steps over it, tiberius decodes it) was never exercised. SQL Server sends ORDER right after
/// COLMETADATA for a SELECT with ORDER BY, listing the result columns (1-based) it sorts by.
#[test]
fn order_by_sends_an_order_token_naming_the_sorted_result_columns() {
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_dbatools("DBATools_O", true);
    srv.insert_batch("DBATools_O", "dbo.PerfSnapshotRun", &src_batch(&src_rows(3), true)).unwrap();
    let mut r = Raw::login(srv.addr(), "DBATools_O", 4096);
    let cases: [(&str, Option<Vec<u16>>); 5] = [
        ("SELECT * FROM dbo.PerfSnapshotRun ORDER BY PerfSnapshotRunID", Some(vec![1])),
        ("SELECT ServerName, PerfSnapshotRunID AS id FROM dbo.PerfSnapshotRun ORDER BY PerfSnapshotRunID DESC", Some(vec![2])),
        ("SELECT ServerName, PerfSnapshotRunID FROM dbo.PerfSnapshotRun ORDER BY PerfSnapshotRunID, ServerName", Some(vec![2, 1])),
        // Sorted by a column that is not selected: nothing to name.
        ("SELECT ServerName FROM dbo.PerfSnapshotRun ORDER BY PerfSnapshotRunID", None),
        ("SELECT * FROM dbo.PerfSnapshotRun", None),
    ];
    for (sql, want) in cases {
        let (toks, _) = r.batch(sql);
        // Which rows go as NBCROW is another test's subject.
        let got: Vec<String> = kinds(&toks).into_iter().map(|t| if t == "NBCROW" { "ROW".into() } else { t }).collect();
        let mut expect = k(&["COLMETADATA"]);
        if let Some(cols) = &want {
            expect.push(format!("ORDER{cols:?}"));
        }
        expect.extend(k(&["ROW", "ROW", "ROW", "DONE(0xC1)"]));
        assert_eq!(got, expect, "{sql}");
    }
}

/// Regression: every row went as ROW, so clients' NBCROW decoding was never exercised. SQL Server
/// sends NBCROW (MS-TDS 2.2.7.15) for rows with NULLs, at a threshold the spec does not give; the
/// rule here: NBCROW when the bitmap's
/// ceil(columns / 8) bytes are fewer than the bytes the NULLs take in a ROW (1 per INTN/DECIMALN/
/// DATETIME2N NULL, 2 per NVARCHAR(n) NULL, 8 per MAX NULL).
#[test]
fn rows_with_many_nulls_are_sent_as_nbcrow_and_decode_to_the_same_values() {
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_dbatools("DBATools_N", true);
    let mut rows = src_rows(3);
    // Row 1: every nullable column NULL (8 NULLs of INTN/DECIMALN/NVARCHAR: 10 bytes > 2-byte
    // bitmap). Row 2: one NULL INT (1 byte < 2): ROW. Row 3 as generated (no NULLs).
    rows[0] = SrcRow { server_id: None, cpu: None, top_wait: None, wait_ms: None, counts: [None; 5], ..rows[0].clone() };
    rows[1] = SrcRow { server_id: None, cpu: Some(5), top_wait: Some("X".into()), wait_ms: Some(6), counts: [Some(1), Some(2), Some(3), Some(4), Some(5)], ..rows[1].clone() };
    rows[2] = SrcRow { server_id: Some(1), cpu: Some(1), top_wait: Some("W".into()), wait_ms: Some(2), counts: [Some(3), Some(4), Some(5), Some(6), Some(7)], ..rows[2].clone() };
    srv.insert_batch("DBATools_N", "dbo.PerfSnapshotRun", &src_batch(&rows, true)).unwrap();
    let mut r = Raw::login(srv.addr(), "DBATools_N", 4096);
    let (toks, _) = r.batch("SELECT * FROM dbo.PerfSnapshotRun");
    assert_eq!(kinds(&toks), k(&["COLMETADATA", "NBCROW", "ROW", "ROW", "DONE(0xC1)"]));
    let Some(Token::NbcRow(nbc)) = toks.get(1) else { panic!() };
    // 13 columns: bitmap of 2 bytes; columns 3 (ServerID) and 6..=13 are NULL (bits 2, 5..=12).
    let bits: u16 = (1 << 2) | (0xFF << 5);
    assert_eq!(nbc.null_bitmap, bits.to_le_bytes().to_vec());
    // And tiberius reads the same values back.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(async {
        let mut c = connect(srv.addr(), "DBATools_N", None).await.unwrap();
        let rs = c.simple_query("SELECT * FROM dbo.PerfSnapshotRun ORDER BY PerfSnapshotRunID").await.unwrap().into_first_result().await.unwrap();
        rs.iter().map(|x| from_tiberius(x, true)).collect::<Vec<_>>()
    });
    assert_eq!(got, rows);
}

/// DONE's CurCmd names the statement as SQL Server does (SELECT 0xC1, INSERT 0xC3, UPDATE 0xC5,
/// DELETE 0xC4, CREATE TABLE 0xC6, DROP TABLE 0xC7); an RPC's statements end with DONEINPROC
/// (DONE_MORE) and the RPC with RETURNSTATUS and DONEPROC (EXECUTE, 0xE0; MS-TDS 4.9).
#[test]
fn done_tokens_carry_the_statements_cur_cmd_and_an_rpc_ends_with_returnstatus_and_doneproc() {
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_database("C");
    let mut r = Raw::login(srv.addr(), "C", 4096);
    let (toks, _) = r.batch("CREATE TABLE dbo.T (id INT NOT NULL PRIMARY KEY, v INT NULL); INSERT INTO dbo.T (id, v) VALUES (1, 1), (2, 2); UPDATE dbo.T SET v = 3 WHERE id = 1; DELETE FROM dbo.T WHERE id = 2; SELECT id FROM dbo.T; DROP TABLE dbo.T");
    assert_eq!(kinds(&toks), k(&["DONE(0xC6)", "DONE(0xC3)", "DONE(0xC5)", "DONE(0xC4)", "COLMETADATA", "ROW", "DONE(0xC1)", "DONE(0xC7)"]));
    let counts: Vec<(bool, u64)> = toks.iter().filter_map(|t| if let Token::Done(d) = t { Some((d.status.count, d.row_count)) } else { None }).collect();
    assert_eq!(counts, [(false, 0), (true, 2), (true, 1), (true, 1), (true, 1), (false, 0)]);

    srv.execute("C", "CREATE TABLE dbo.U (id INT NOT NULL PRIMARY KEY)").unwrap();
    r.send(3, &tds_protocol::RpcRequest::execute_sql("INSERT INTO dbo.U (id) VALUES (7); SELECT id FROM dbo.U", Vec::new()).encode());
    let (toks, _) = r.tokens();
    assert_eq!(kinds(&toks), k(&["DONEINPROC(0xC3)", "COLMETADATA", "ROW", "DONEINPROC(0xC1)", "RETURNSTATUS(0)", "DONEPROC(0xE0)"]));
    let flags: Vec<(bool, bool)> = toks
        .iter()
        .filter_map(|t| match t {
            Token::DoneInProc(d) => Some((d.status.more, d.status.count)),
            Token::DoneProc(d) => Some((d.status.more, d.status.count)),
            _ => None,
        })
        .collect();
    assert_eq!(flags, [(true, true), (true, true), (false, false)]);
}

/// Regression: PRINT and USE were syntax errors. SQL Server answers PRINT with an INFO (number 0,
/// class 0) where it stands among the results, and USE with ENVCHANGE (database) and INFO 5701
/// before the statement's DONE, as at login.
#[test]
fn print_and_use_send_info_and_envchange_between_results() {
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_database("First");
    srv.create_database("Second");
    let mut r = Raw::login(srv.addr(), "First", 4096);
    let (toks, _) = r.batch("SELECT DB_NAME() AS d; PRINT N'between'; USE [second]; SELECT DB_NAME() AS d");
    assert_eq!(kinds(&toks), k(&["COLMETADATA", "ROW", "DONE(0xC1)", "INFO(0)", "ENVCHANGE(Database)", "INFO(5701)", "DONE(0x0)", "COLMETADATA", "ROW", "DONE(0xC1)"]));
    let infos: Vec<(i32, u8, String)> = toks.iter().filter_map(|t| if let Token::Info(i) = t { Some((i.class as i32, i.state, i.message.clone())) } else { None }).collect();
    assert_eq!(infos, [(0, 1, "between".to_string()), (0, 1, "Changed database context to 'Second'.".to_string())]);
    let env = toks.iter().find_map(|t| if let Token::EnvChange(e) = t { Some((format!("{:?}", e.new_value), format!("{:?}", e.old_value))) } else { None }).unwrap();
    assert_eq!(env, (format!("{:?}", tds_protocol::EnvChangeValue::String("Second".into())), format!("{:?}", tds_protocol::EnvChangeValue::String("First".into()))));
    let (toks, _) = r.batch("USE NoSuchDb");
    assert!(kinds(&toks).contains(&"ERROR(911)".to_string()), "{toks:?}");
}

/// INSERT BULK as SQL Server checks it: the statement binds its columns to the table (a column
/// the table lacks: a failed DONE and no ERROR; listed twice: 264; unknown type: 2715), and the
/// BulkLoad COLMETADATA binds by position to the statement (another count: 4804), each column of
/// the declared type with the target's nullability (4816 state 1) and PLP for a MAX target
/// (4816 state 2). A declared type other than the table's is converted like INSERT (2628 and
/// 3621 for a value longer than the table column).
#[test]
fn insert_bulk_declarations_are_bound_and_checked_as_sql_server_does() {
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_table("B", "dbo.T", vec![Column::new("s", SqlType::NVarChar(Some(3)), true), Column::new("m", SqlType::NVarChar(None), true), Column::new("i", SqlType::Int, false)], &[]).unwrap();
    let mut r = Raw::login(srv.addr(), "B", 4096);
    let err_of = |toks: &[Token]| toks.iter().find_map(|t| if let Token::Error(e) = t { Some((e.number, e.state)) } else { None });
    // Statement-time binding.
    let (toks, _) = r.batch("INSERT BULK dbo.T ([nosuch] int)");
    assert_eq!((err_of(&toks), done_of(&toks).0), (None, true), "{toks:?}");
    let (toks, _) = r.batch("INSERT BULK dbo.T ([i] int, [I] int)");
    assert_eq!(err_of(&toks), Some((264, 1)));
    let (toks, _) = r.batch("INSERT BULK dbo.T ([i] frobnicate)");
    assert_eq!(err_of(&toks), Some((2715, 2)));
    let (toks, _) = r.batch("INSERT BULK dbo.T ([s] nvarchar(10) COLLATE SQL_Latin1_General_CP1_CI_AS, [i] int)");
    assert_eq!(kinds(&toks), k(&["DONE(0xFD)"]));

    // COLMETADATA: s as NVARCHAR(10) (20 bytes, nullable), i as INT4 (NOT NULL).
    let nvarchar = |name: u8, bytes: u16, flags: u8| -> Vec<u8> {
        let mut c = vec![0, 0, 0, 0, flags, 0x00, 0xE7];
        c.extend_from_slice(&bytes.to_le_bytes());
        c.extend_from_slice(&[0x09, 0x04, 0xD0, 0x00, 0x34, 1, name, 0]);
        c
    };
    let int4 = |flags: u8| -> Vec<u8> { vec![0, 0, 0, 0, flags, 0x00, 0x38, 1, b'i', 0] };
    let meta = |cols: &[Vec<u8>]| -> Vec<u8> {
        let mut m = vec![0x81, cols.len() as u8, 0x00];
        cols.iter().for_each(|c| m.extend_from_slice(c));
        m
    };
    let done = [0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let utf16 = |s: &str| -> Vec<u8> {
        let b: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut v = (b.len() as u16).to_le_bytes().to_vec();
        v.extend_from_slice(&b);
        v
    };
    let load = |r: &mut Raw, cols: &[Vec<u8>], rows: &[Vec<u8>]| -> Vec<Token> {
        let mut msg = meta(cols);
        for row in rows {
            msg.push(0xD1);
            msg.extend_from_slice(row);
        }
        msg.extend_from_slice(&done);
        r.send(7, &msg);
        r.tokens().0
    };
    let row = |s: &str, i: i32| -> Vec<u8> {
        let mut v = utf16(s);
        v.extend_from_slice(&i.to_le_bytes());
        v
    };
    // One column fewer than declared.
    let toks = load(&mut r, &[nvarchar(b's', 20, 0x09)], &[]);
    assert_eq!(err_of(&toks), Some((4804, 3)));
    // i sent as nullable for a NOT NULL column: 4816 state 1, colid 2.
    r.batch("INSERT BULK dbo.T ([s] nvarchar(10), [i] int)");
    let toks = load(&mut r, &[nvarchar(b's', 20, 0x09), int4(0x09)], &[]);
    assert_eq!(err_of(&toks), Some((4816, 1)));
    assert!(toks.iter().any(|t| matches!(t, Token::Error(e) if e.message.starts_with("Invalid column type from bcp client for colid 2"))), "{toks:?}");
    // A MAX column sent without PLP (as a `nvarchar(max)` declaration with an 8000-byte
    // TYPE_INFO): 4816 state 2.
    r.batch("INSERT BULK dbo.T ([m] nvarchar(max))");
    let toks = load(&mut r, &[nvarchar(b'm', 8000, 0x09)], &[]);
    assert_eq!(err_of(&toks), Some((4816, 2)));
    // Declared nvarchar(10) for NVARCHAR(3): 'abc' loads, 'abcd' fits the declaration but not
    // the table: 2628, then 3621, and nothing is loaded.
    r.batch("INSERT BULK dbo.T ([s] nvarchar(10), [i] int)");
    let toks = load(&mut r, &[nvarchar(b's', 20, 0x09), int4(0x08)], &[row("abc", 1)]);
    assert_eq!(kinds(&toks), k(&["DONE(0xF0)"]));
    assert_eq!(done_of(&toks), (false, true, 1));
    r.batch("INSERT BULK dbo.T ([s] nvarchar(10), [i] int)");
    let toks = load(&mut r, &[nvarchar(b's', 20, 0x09), int4(0x08)], &[row("abcd", 2)]);
    assert_eq!(kinds(&toks), k(&["ERROR(2628)", "INFO(3621)", "DONE(0xF0)"]));
    // Longer than the declaration: 4815.
    r.batch("INSERT BULK dbo.T ([s] nvarchar(2), [i] int)");
    let toks = load(&mut r, &[nvarchar(b's', 20, 0x09), int4(0x08)], &[row("abc", 3)]);
    assert_eq!(err_of(&toks), Some((4815, 1)));
    assert_eq!(srv.row_count("B", "dbo.T").unwrap(), 1);
}

/// Regression: DATETIME columns were DATETIME2(3) and NUMERIC ones DECIMAL, so a client never
/// saw the types SQL Server sends for them. Now: DATETIME (0x3D) NOT NULL / DATETIMN(8) (0x6F)
/// nullable with days since 1900-01-01 and 1/300 s of the day (rounded as SQL Server rounds:
/// .678 s is 203.4/300, sent as 203), NUMERICN (0x6C) next to DECIMALN (0x6A), VARCHAR as
/// BIGVARCHAR (0xA7) with the collation and single-byte (code page 1252) values.
#[test]
fn datetime_numeric_and_varchar_columns_are_sent_as_declared() {
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_database("T");
    srv.execute("T", "CREATE TABLE dbo.X (a DATETIME NOT NULL, b DATETIME NULL, n NUMERIC(9,2) NULL, d DECIMAL(9,2) NULL, v VARCHAR(20) NULL)").unwrap();
    srv.execute("T", "INSERT INTO dbo.X (a, b, n, d, v) VALUES ('2024-01-02 03:04:05.678', NULL, 12.5, 12.5, 'caf\u{e9} \u{20ac}')").unwrap();
    let mut r = Raw::login(srv.addr(), "T", 4096);
    let (toks, _) = r.batch("SELECT a, b, n, d, v FROM dbo.X");
    let Some(Token::ColMetaData(meta)) = toks.first() else { panic!("{toks:?}") };
    let types: Vec<(TypeId, Option<u32>, Option<u8>, Option<u8>, bool)> = meta.columns.iter().map(|c| (c.type_id, c.type_info.max_length, c.type_info.precision, c.type_info.scale, c.type_info.collation.is_some())).collect();
    assert_eq!(
        types,
        [
            (TypeId::DateTime, None, None, None, false),
            (TypeId::DateTimeN, Some(8), None, None, false),
            (TypeId::NumericN, Some(5), Some(9), Some(2), false),
            (TypeId::DecimalN, Some(5), Some(9), Some(2), false),
            (TypeId::BigVarChar, Some(20), None, None, true),
        ]
    );
    let Some(Token::Row(row)) = toks.get(1) else { panic!("{toks:?}") };
    let days = (chrono::NaiveDate::from_ymd_opt(2024, 1, 2).unwrap() - chrono::NaiveDate::from_ymd_opt(1900, 1, 1).unwrap()).num_days() as i32;
    let ticks: u32 = (3 * 3600 + 4 * 60 + 5) * 300 + 203;
    let mut want = days.to_le_bytes().to_vec();
    want.extend_from_slice(&ticks.to_le_bytes());
    want.push(0); // b NULL
    want.extend_from_slice(&[5, 1, 0xE2, 0x04, 0, 0]); // n 12.50: positive, 1250
    want.extend_from_slice(&[5, 1, 0xE2, 0x04, 0, 0]); // d 12.50
    want.extend_from_slice(&[6, 0, b'c', b'a', b'f', 0xE9, b' ', 0x80]); // cp1252
    assert_eq!(row.data.to_vec(), want);
    // INFORMATION_SCHEMA names them as declared (what perfcopy's type checks read).
    let (toks, _) = r.batch("SELECT COLUMN_NAME, DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = 'X' AND COLUMN_NAME IN ('a', 'n')");
    assert_eq!(toks.iter().filter(|t| matches!(t, Token::Row(_) | Token::NbcRow(_))).count(), 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let names = rt.block_on(async {
        let mut c = connect(srv.addr(), "T", None).await.unwrap();
        let rs = c.simple_query("SELECT DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = 'X' ORDER BY ORDINAL_POSITION").await.unwrap().into_first_result().await.unwrap();
        let v: Vec<String> = rs.iter().map(|x| x.get::<&str, _>(0).unwrap().to_string()).collect();
        // tiberius reads the DATETIME back at its 1/300 s value.
        let rs = c.simple_query("SELECT a FROM dbo.X").await.unwrap().into_first_result().await.unwrap();
        (v, rs[0].get::<chrono::NaiveDateTime, _>(0).unwrap())
    });
    assert_eq!(names.0, ["datetime", "datetime", "numeric", "decimal", "varchar"]);
    let t = names.1;
    assert_eq!((t.format("%Y-%m-%d %H:%M:%S").to_string(), t.and_utc().timestamp_subsec_millis()), ("2024-01-02 03:04:05".to_string(), 676), "203/300 s = 0.6767 s");
}

/// The child tables' types as tds-protocol (a parser we did not write) reads the server's
/// COLMETADATA and rows: BIGBINARY(8), BIGVARBINARY(64) and (MAX), XML, SSVARIANT (max 8016),
/// BIGVARCHAR with each column's collation, whose code page tds-protocol finds on its own
/// (1251 for Cyrillic_General_CI_AS, 1253 for Greek_CI_AS); a row of NULLs comes as NBCROW.
#[test]
fn child_table_types_are_described_as_sql_server_describes_them() {
    use tds_test_server::{Value, Variant};
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_database("K");
    srv.execute("K", "CREATE TABLE dbo.K (h BINARY(8) NULL, v VARBINARY(64) NULL, m VARBINARY(MAX) NULL, x XML NULL, s SQL_VARIANT NULL, c VARCHAR(20) COLLATE Cyrillic_General_CI_AS NULL, g VARCHAR(MAX) COLLATE Greek_CI_AS NULL)").unwrap();
    let full = vec![
        Value::Bytes((1..=8).collect()),
        Value::Bytes(vec![0xAB, 0xCD]),
        Value::Bytes(vec![7; 9000]),
        Value::Str("<a/>".into()),
        Value::Variant(Box::new(Variant { base: SqlType::Int, value: Value::Int(5) })),
        Value::Str("Жук".into()),
        Value::Str("Ωμέγα".into()),
    ];
    srv.insert_rows("K", "dbo.K", &["h", "v", "m", "x", "s", "c", "g"], vec![full, vec![Value::Null; 7]]).unwrap();
    let mut r = Raw::login(srv.addr(), "K", 4096);
    let (toks, _) = r.batch("SELECT * FROM dbo.K");
    let Some(Token::ColMetaData(meta)) = toks.first() else { panic!("{toks:?}") };
    let types: Vec<(TypeId, Option<u32>, Option<u16>)> = meta.columns.iter().map(|c| (c.type_id, c.type_info.max_length, c.type_info.collation.as_ref().and_then(|k| k.code_page()))).collect();
    assert_eq!(
        types,
        [
            (TypeId::BigBinary, Some(8), None),
            (TypeId::BigVarBinary, Some(64), None),
            (TypeId::BigVarBinary, Some(0xFFFF), None),
            (TypeId::Xml, None, None),
            (TypeId::Variant, Some(8016), None),
            (TypeId::BigVarChar, Some(20), Some(1251)),
            (TypeId::BigVarChar, Some(0xFFFF), Some(1253)),
        ]
    );
    assert_eq!(kinds(&toks)[1..3], k(&["ROW", "NBCROW"]));
    let Some(Token::Row(row)) = toks.get(1) else { panic!("{toks:?}") };
    // The variant: length 6, INT4, no properties, 5; then "Жук" in code page 1251.
    let data = row.data.to_vec();
    let at = data.windows(10).position(|w| w == [6, 0, 0, 0, 0x38, 0, 5, 0, 0, 0]).expect("the variant's bytes");
    assert_eq!(data[at + 10..at + 15], [3, 0, 0xC6, 0xF3, 0xEA]);
}

/// Bulk loads into VARBINARY(4) and SQL_VARIANT columns, byte by byte: BIGBINARY sent for a
/// `varbinary(4)` declaration is 4816; 5 bytes for a `varbinary(4)` declaration 4815; a variant with a
/// property count its base type does not have closes the connection (no sane stream follows);
/// a valid row loads.
#[test]
fn bulk_binary_and_variant_columns_are_checked_as_declared() {
    let srv = TestServer::start(ServerConfig { password: Some(PASSWORD.into()), ..Default::default() }).unwrap();
    srv.create_table("B", "dbo.B", vec![Column::new("v", SqlType::VarBinary(Some(4)), true), Column::new("s", SqlType::SqlVariant, true)], &[]).unwrap();
    let mut r = Raw::login(srv.addr(), "B", 4096);
    let colmeta = |binary_type: u8, max: u8| -> Vec<u8> {
        let mut m = vec![0x81, 0x02, 0x00];
        m.extend_from_slice(&[0, 0, 0, 0, 0x09, 0x00, binary_type, max, 0, 1, b'v', 0]);
        m.extend_from_slice(&[0, 0, 0, 0, 0x09, 0x00, 0x62, 0x50, 0x1F, 0, 0, 1, b's', 0]);
        m
    };
    let done = [0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let error_of = |toks: &[Token]| toks.iter().find_map(|t| if let Token::Error(e) = t { Some(e.number) } else { None });
    let variant_int = [6, 0, 0, 0, 0x38, 0, 9, 0, 0, 0];
    // The second COLMETADATA says VARBINARY(8): the declaration's 4 bytes is the limit.
    for (ty, max, value, want) in [(0xADu8, 4, &[1u8, 2, 3][..], Some(4816)), (0xA5, 8, &[1, 2, 3, 4, 5][..], Some(4815)), (0xA5, 4, &[1, 2, 3][..], None)] {
        r.batch("INSERT BULK dbo.B ([v] varbinary(4), [s] sql_variant)");
        let mut msg = colmeta(ty, max);
        msg.push(0xD1);
        msg.extend_from_slice(&(value.len() as u16).to_le_bytes());
        msg.extend_from_slice(value);
        msg.extend_from_slice(&variant_int);
        msg.extend_from_slice(&done);
        r.send(7, &msg);
        let (toks, _) = r.tokens();
        assert_eq!(error_of(&toks), want, "{ty:#x} {value:?}: {toks:?}");
    }
    let rows = srv.table_rows("B", "dbo.B").unwrap();
    assert_eq!(format!("{rows:?}"), "[[Bytes([1, 2, 3]), Variant(Variant { base: Int, value: Int(9) })]]");
    // INT4 with one property byte: not a variant SQL Server could send.
    r.batch("INSERT BULK dbo.B ([v] varbinary(4), [s] sql_variant)");
    let mut msg = colmeta(0xA5, 4);
    msg.extend_from_slice(&[0xD1, 0xFF, 0xFF, 7, 0, 0, 0, 0x38, 1, 0, 9, 0, 0, 0]);
    msg.extend_from_slice(&done);
    r.send(7, &msg);
    let mut buf = Vec::new();
    let _ = r.s.read_to_end(&mut buf);
    assert!(buf.is_empty(), "a malformed variant closes the connection without a reply");
    assert_eq!(srv.table_rows("B", "dbo.B").unwrap().len(), 1);
}
