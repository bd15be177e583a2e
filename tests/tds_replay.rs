//! Conversations replayed as real SQL Server shapes them, through tiberius and perfcopy's own
//! decoder, by a scripted server that knows nothing of perfcopy's test server (so it cannot
//! share its habits).
//!
//! The replies are written here token by token from what is documented of real servers'
//! replies, not copied from anyone's capture (public material is not copied into this
//! repository verbatim):
//! - **A SQL Server 2008 R2 login** (PRELOGIN without encryption support, LOGINACK for TDS 7.3B
//!   although the client asks for 7.4, the ENVCHANGE/INFO sequence database → 5701 → collation
//!   → language → 5703, packet size 4096 echoed as text, a final DONE), in the order python-tds'
//!   unit tests (MIT; `tests/unit_test.py`, `test_login`) record from such a server, and as
//!   MS-TDS 4.3 ("Login Response") lays it out. Names and versions are ours.
//! - **The reply to a SQL batch `select 'foo' as 'bar'`** shaped as MS-TDS 4.5 ("SQL Batch
//!   Server Response") shows it: one VARCHAR column with its collation, a ROW, DONE with the count.
//! - **The reply to perfcopy's keyset page** (`sp_executesql`) as SQL Server 2016+ shapes it:
//!   COLMETADATA with the flags SQL Server sets (IDENTITY read-only 0x0010, read/write 0x0008,
//!   nullable 0x0001), ORDER after an ORDER BY, NBCROW for the row that is mostly NULL, INFO 8153
//!   among the rows, DONEINPROC (DONE_MORE | DONE_COUNT, CurCmd SELECT 0xC1), RETURNSTATUS and a
//!   final DONEPROC (CurCmd EXECUTE 0xE0) (MS-TDS 2.2.7, 4.9).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use perfcopy::mssql::{runtime, ConnSpec};
use perfcopy::tds::decode::{utf16le_to_utf8, ReplyDecoder, RowSink, WireColumn};

// ---- bytes as the protocol writes them ------------------------------------------------------

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// B_VARCHAR: a character count byte, then UTF-16LE.
fn b_varchar(s: &str) -> Vec<u8> {
    let mut v = vec![s.encode_utf16().count() as u8];
    v.extend(utf16(s));
    v
}

/// US_VARCHAR: a character count USHORT, then UTF-16LE.
fn us_varchar(s: &str) -> Vec<u8> {
    let mut v = (s.encode_utf16().count() as u16).to_le_bytes().to_vec();
    v.extend(utf16(s));
    v
}

/// A token with a USHORT length before its body.
fn with_len(token: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![token];
    v.extend((body.len() as u16).to_le_bytes());
    v.extend(body);
    v
}

/// ENVCHANGE whose values are B_VARCHAR text (database 1, language 2, packet size 4).
fn envchange_text(kind: u8, new: &str, old: &str) -> Vec<u8> {
    with_len(0xE3, &[vec![kind], b_varchar(new), b_varchar(old)].concat())
}

/// ENVCHANGE whose values are B_VARBYTE (collation 7, begin transaction 8).
fn envchange_bytes(kind: u8, new: &[u8], old: &[u8]) -> Vec<u8> {
    with_len(0xE3, &[vec![kind, new.len() as u8], new.to_vec(), vec![old.len() as u8], old.to_vec()].concat())
}

/// INFO (0xAB) as TDS 7.2+ writes it: number, state, class, text, server, procedure, line (LONG).
fn info(number: u32, class: u8, text: &str, server: &str) -> Vec<u8> {
    let body = [number.to_le_bytes().to_vec(), vec![1, class], us_varchar(text), b_varchar(server), b_varchar(""), 1u32.to_le_bytes().to_vec()].concat();
    with_len(0xAB, &body)
}

fn done(token: u8, status: u16, cur_cmd: u16, count: u64) -> Vec<u8> {
    [vec![token], status.to_le_bytes().to_vec(), cur_cmd.to_le_bytes().to_vec(), count.to_le_bytes().to_vec()].concat()
}

/// Latin1_General_CI_AS (LCID 0x0409, comparison flags, sort ID 0), as SQL Server sends it.
const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

const SERVER: &str = "REPLAY2008R2";

/// The PRELOGIN answer of a server without a certificate: VERSION 10.50.6000, ENCRYPTION
/// NOT_SUP, INSTOPT 0, THREADID empty, MARS off.
fn prelogin_reply() -> Vec<u8> {
    let data: [(u8, Vec<u8>); 5] = [(0, vec![10, 50, 0x17, 0x70, 0, 0]), (1, vec![2]), (2, vec![0]), (3, vec![]), (4, vec![0])];
    let mut head = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    let mut offset = data.len() * 5 + 1;
    for (kind, bytes) in &data {
        head.push(*kind);
        head.extend((offset as u16).to_be_bytes());
        head.extend((bytes.len() as u16).to_be_bytes());
        offset += bytes.len();
        body.extend_from_slice(bytes);
    }
    head.push(0xFF);
    head.extend(body);
    head
}

/// The LOGIN7 answer of SQL Server 2008 R2 for a login into `database`.
fn login_reply(database: &str) -> Vec<u8> {
    let mut v = envchange_text(1, database, "master");
    v.extend(info(5701, 0, &format!("Changed database context to '{database}'."), SERVER));
    v.extend(envchange_bytes(7, &COLLATION, &[]));
    v.extend(envchange_text(2, "us_english", ""));
    v.extend(info(5703, 0, "Changed language setting to us_english.", SERVER));
    // LOGINACK: interface SQL (1), TDS 7.3B (0x730B0003, sent big-endian), program name,
    // program version 10.50.6000 (major, minor, build high, build low).
    let ack = [vec![1, 0x73, 0x0B, 0x00, 0x03], b_varchar("Microsoft SQL Server\0\0"), vec![10, 50, 0x17, 0x70]].concat();
    v.extend(with_len(0xAD, &ack));
    v.extend(envchange_text(4, "4096", "4096"));
    v.extend(done(0xFD, 0, 0, 0));
    v
}

/// MS-TDS 4.5's shape: `select 'foo' as 'bar'` answered with a VARCHAR(3) column.
fn batch_reply() -> Vec<u8> {
    let mut v = vec![0x81, 1, 0];
    v.extend([0, 0, 0, 0, 0x20, 0x00, 0xA7, 3, 0]);
    v.extend(COLLATION);
    v.extend(b_varchar("bar"));
    v.push(0xD1);
    v.extend(3u16.to_le_bytes());
    v.extend(b"foo");
    v.extend(done(0xFD, 0x10, 0xC1, 1));
    v
}

/// One row of the keyset page: (PerfSnapshotRunID, SnapshotUTC as days since 0001-01-01 and
/// milliseconds of the day, ServerName, CpuPct unscaled at scale 2, SqlCpuPct, WaitMs).
type PageRow = (i64, (u32, u32), &'static str, Option<i32>, Option<i32>, Option<i64>);

fn page_rows() -> Vec<PageRow> {
    vec![
        (41, (738_000, 1_000), "SQL01", Some(1234), Some(-5), Some(7_000_000_000)),
        (42, (738_000, 301_000), "SQL01", None, None, None),
        (45, (738_001, 86_399_999), "SQL02\\INST", Some(0), None, Some(0)),
    ]
}

/// The keyset page reply as SQL Server sends it to sp_executesql.
fn page_reply() -> Vec<u8> {
    let cols: [(&str, u16, Vec<u8>); 6] = [
        ("PerfSnapshotRunID", 0x0010, vec![0x7F]),
        ("SnapshotUTC", 0x0008, vec![0x2A, 3]),
        ("ServerName", 0x0008, [vec![0xE7, 0, 1], COLLATION.to_vec()].concat()),
        ("CpuPct", 0x0009, vec![0x6A, 5, 5, 2]),
        ("SqlCpuPct", 0x0009, vec![0x26, 4]),
        ("WaitMs", 0x0009, vec![0x26, 8]),
    ];
    let mut v = vec![0x81];
    v.extend((cols.len() as u16).to_le_bytes());
    for (name, flags, type_info) in &cols {
        v.extend(0u32.to_le_bytes());
        v.extend(flags.to_le_bytes());
        v.extend(type_info);
        v.extend(b_varchar(name));
    }
    // ORDER BY PerfSnapshotRunID: column 1.
    v.extend(with_len(0xA9, &1u16.to_le_bytes()));
    for (i, (id, (days, ms), name, cpu, sql_cpu, wait)) in page_rows().into_iter().enumerate() {
        let nulls = [cpu.is_none(), sql_cpu.is_none(), wait.is_none()];
        // SQL Server sends NBCROW when it is shorter: here the row whose three nullable
        // columns are all NULL.
        let nbc = nulls.iter().all(|n| *n);
        if nbc {
            v.extend([0xD2, 0b0011_1000]);
        } else {
            v.push(0xD1);
        }
        v.extend(id.to_le_bytes());
        v.push(7);
        v.extend(&(ms as u64).to_le_bytes()[..4]);
        v.extend(&days.to_le_bytes()[..3]);
        v.extend(((name.len() * 2) as u16).to_le_bytes());
        v.extend(utf16(name));
        if !nbc {
            match cpu {
                Some(c) => {
                    v.extend([5, u8::from(c >= 0)]);
                    v.extend(c.unsigned_abs().to_le_bytes());
                }
                None => v.push(0),
            }
            match sql_cpu {
                Some(c) => {
                    v.push(4);
                    v.extend(c.to_le_bytes());
                }
                None => v.push(0),
            }
            match wait {
                Some(w) => {
                    v.push(8);
                    v.extend(w.to_le_bytes());
                }
                None => v.push(0),
            }
        }
        if i == 1 {
            v.extend(info(8153, 10, "Warning: Null value is eliminated by an aggregate or other SET operation.", SERVER));
        }
    }
    v.extend(done(0xFF, 0x0011, 0xC1, 3));
    v.extend([0x79, 0, 0, 0, 0]);
    v.extend(done(0xFE, 0x0000, 0xE0, 0));
    v
}

/// The rows of [`page_rows`] as text, computed from the values (not from the bytes).
fn expected_page() -> Vec<Vec<String>> {
    let dec = |c: Option<i32>| c.map_or("NULL".to_string(), |c| rust_decimal::Decimal::new(i64::from(c), 2).to_string());
    page_rows()
        .into_iter()
        .map(|(id, (days, ms), name, cpu, sql_cpu, wait)| {
            let date = chrono::NaiveDate::from_ymd_opt(1, 1, 1).unwrap() + chrono::Duration::days(days as i64);
            let ts = date.and_hms_opt(0, 0, 0).unwrap() + chrono::Duration::milliseconds(ms as i64);
            vec![
                id.to_string(),
                ts.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                name.to_string(),
                dec(cpu),
                sql_cpu.map_or("NULL".into(), |x| x.to_string()),
                wait.map_or("NULL".into(), |x| x.to_string()),
            ]
        })
        .collect()
}

// ---- the scripted server ----------------------------------------------------------------------

/// What the scripted server saw: the type of every request message after the login.
#[derive(Default)]
struct Seen {
    requests: Vec<u8>,
    login_database: Option<String>,
}

/// A server that answers PRELOGIN and LOGIN7 as SQL Server 2008 R2 and every later request
/// with the next reply of `script`, split into packets of the negotiated 4096 bytes.
fn replay_server(script: Vec<Vec<u8>>) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else { return };
        let mut script = script.into_iter();
        while let Some((kind, payload)) = read_message(&mut s) {
            let reply = match kind {
                0x12 => prelogin_reply(),
                0x10 => {
                    let db = login7_database(&payload);
                    let reply = login_reply(db.as_deref().unwrap_or("master"));
                    log.lock().unwrap().login_database = db;
                    reply
                }
                other => {
                    log.lock().unwrap().requests.push(other);
                    match script.next() {
                        Some(r) => r,
                        None => return,
                    }
                }
            };
            if write_message(&mut s, &reply).is_err() {
                return;
            }
        }
    });
    (port, seen)
}

/// One client message (its packets up to EOM): the packet type and the payload.
fn read_message(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; 8];
        s.read_exact(&mut head).ok()?;
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let mut body = vec![0u8; len.checked_sub(8)?];
        s.read_exact(&mut body).ok()?;
        payload.extend(body);
        if head[1] & 0x01 != 0 {
            return Some((head[0], payload));
        }
    }
}

fn write_message(s: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    let chunks: Vec<&[u8]> = payload.chunks(4096 - 8).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut p = vec![0x04, u8::from(last), 0, 0, 0, 52, (i + 1) as u8, 0];
        p[2..4].copy_from_slice(&((chunk.len() + 8) as u16).to_be_bytes());
        p.extend_from_slice(chunk);
        s.write_all(&p)?;
    }
    s.flush()
}

/// The database a LOGIN7 asks for (MS-TDS 2.2.6.4: offset/length pairs from byte 36; the
/// database is the 9th field).
fn login7_database(p: &[u8]) -> Option<String> {
    let at = 36 + 8 * 4;
    let off = u16::from_le_bytes([*p.get(at)?, *p.get(at + 1)?]) as usize;
    let chars = u16::from_le_bytes([*p.get(at + 2)?, *p.get(at + 3)?]) as usize;
    let mut s = String::new();
    utf16le_to_utf8(p.get(off..off + chars * 2)?, &mut s).ok()?;
    Some(s)
}

fn spec(port: u16, encrypt: &str) -> ConnSpec {
    ConnSpec::source("--from", &format!("Server=tcp:127.0.0.1,{port};Database=DBATools;User Id=perfcopy;Password=Replay-pw-1;Encrypt={encrypt}")).unwrap()
}

// ---- perfcopy's decoder, collecting text ------------------------------------------------------

#[derive(Default)]
struct Collect {
    cols: Vec<WireColumn>,
    rows: Vec<Vec<String>>,
}

impl Collect {
    fn put(&mut self, col: usize, s: String) -> Result<(), String> {
        if col == 0 {
            self.rows.push(Vec::new());
        }
        self.rows.last_mut().ok_or("no row")?.push(s);
        Ok(())
    }
}

impl RowSink for Collect {
    fn columns(&mut self, columns: &[WireColumn]) -> Result<(), String> {
        self.cols = columns.to_vec();
        Ok(())
    }
    fn null(&mut self, col: usize) -> Result<(), String> {
        self.put(col, "NULL".into())
    }
    fn int(&mut self, col: usize, v: i64) -> Result<(), String> {
        self.put(col, v.to_string())
    }
    fn bit(&mut self, col: usize, v: bool) -> Result<(), String> {
        self.put(col, v.to_string())
    }
    fn decimal(&mut self, col: usize, unscaled: i128, scale: u8) -> Result<(), String> {
        self.put(col, rust_decimal::Decimal::from_i128_with_scale(unscaled, u32::from(scale)).to_string())
    }
    fn datetime2(&mut self, col: usize, days: i64, increments: i64, scale: u8) -> Result<(), String> {
        let date = chrono::NaiveDate::from_ymd_opt(1, 1, 1).ok_or("date")? + chrono::Duration::days(days);
        let nanos = increments * 10i64.pow(9 - u32::from(scale));
        let ts = date.and_hms_opt(0, 0, 0).ok_or("time")? + chrono::Duration::nanoseconds(nanos);
        self.put(col, ts.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
    }
    fn unix_ms(&mut self, col: usize, ms: i64) -> Result<(), String> {
        self.put(col, ms.to_string())
    }
    fn utf16(&mut self, col: usize, raw: &[u8]) -> Result<(), String> {
        let mut s = String::new();
        utf16le_to_utf8(raw, &mut s)?;
        self.put(col, s)
    }
}

const PAGE_SQL: &str = "SELECT TOP (@P1) PerfSnapshotRunID, SnapshotUTC, ServerName, CpuPct, SqlCpuPct, WaitMs FROM dbo.PerfSnapshotRun WHERE PerfSnapshotRunID > @P2 ORDER BY PerfSnapshotRunID";

// ---- the tests --------------------------------------------------------------------------------

/// Logs in to a SQL Server 2008 R2-shaped server (TDS 7.3B, no encryption offered) with
/// `Encrypt=DANGER_PLAINTEXT` and with `Encrypt=false` (login-only encryption requested; the
/// server cannot, so per MS-TDS 2.2.6.5 nothing is encrypted), then runs the MS-TDS 4.5 batch.
#[test]
fn a_sql_server_2008_r2_login_and_a_batch_reply_read_through_tiberius() {
    for encrypt in ["DANGER_PLAINTEXT", "false"] {
        let (port, seen) = replay_server(vec![batch_reply()]);
        let rt = runtime().unwrap();
        let got: Vec<Option<String>> = rt.block_on(async {
            let mut client = spec(port, encrypt).connect().await.unwrap_or_else(|e| panic!("Encrypt={encrypt}: {e}"));
            let rows = client.simple_query("select 'foo' as 'bar'").await.unwrap().into_first_result().await.unwrap();
            assert_eq!(rows[0].columns()[0].name(), "bar");
            rows.iter().map(|r| r.get::<&str, _>(0).map(str::to_string)).collect()
        });
        assert_eq!(got, vec![Some("foo".to_string())], "Encrypt={encrypt}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.login_database.as_deref(), Some("DBATools"));
        assert_eq!(seen.requests, vec![0x01], "one SQL batch after the login");
    }
}

/// The keyset page as SQL Server answers sp_executesql (ORDER, NBCROW, INFO among rows,
/// DONEINPROC/RETURNSTATUS/DONEPROC): perfcopy's decoder and tiberius' read the same values,
/// and both equal the values the reply was written from.
#[test]
fn a_keyset_page_reply_reads_the_same_through_perfcopys_decoder_and_tiberius() {
    let (port, seen) = replay_server(vec![page_reply(), page_reply()]);
    let rt = runtime().unwrap();
    let (ours, theirs) = rt.block_on(async {
        let mut client = spec(port, "DANGER_PLAINTEXT").connect().await.unwrap();
        let (n, after) = (1000i64, 40i64);
        let mut sink = Collect::default();
        let mut reply = client.query_raw(PAGE_SQL, &[&n, &after]).await.unwrap();
        let mut decoder = ReplyDecoder::new();
        while let Some(packet) = reply.next_payload().await.unwrap() {
            decoder.packet(&packet, &mut sink).unwrap();
        }
        assert_eq!(decoder.finish().unwrap(), 3);
        assert_eq!(sink.cols.iter().map(|c| (c.name.as_str(), c.nullable)).collect::<Vec<_>>(), vec![
            ("PerfSnapshotRunID", false),
            ("SnapshotUTC", false),
            ("ServerName", false),
            ("CpuPct", true),
            ("SqlCpuPct", true),
            ("WaitMs", true)
        ]);
        let rows = client.query(PAGE_SQL, &[&n, &after]).await.unwrap().into_first_result().await.unwrap();
        let theirs: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.get::<i64, _>(0).map_or("NULL".into(), |x| x.to_string()),
                    r.get::<chrono::NaiveDateTime, _>(1).map_or("NULL".into(), |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()),
                    r.get::<&str, _>(2).map_or("NULL".into(), str::to_string),
                    r.get::<rust_decimal::Decimal, _>(3).map_or("NULL".into(), |d| d.to_string()),
                    r.get::<i32, _>(4).map_or("NULL".into(), |x| x.to_string()),
                    r.get::<i64, _>(5).map_or("NULL".into(), |x| x.to_string()),
                ]
            })
            .collect();
        (sink.rows, theirs)
    });
    assert_eq!(ours, expected_page());
    assert_eq!(theirs, expected_page());
    assert_eq!(seen.lock().unwrap().requests, vec![0x03, 0x03], "two RPCs (sp_executesql)");
}

/// The same page reply cut anywhere into TDS packets (as a server with a smaller packet size
/// would send it) decodes to the same rows.
#[test]
fn the_keyset_page_reply_decodes_the_same_at_every_packet_size() {
    let bytes = page_reply();
    for size in 1..=bytes.len() {
        let mut sink = Collect::default();
        let mut decoder = ReplyDecoder::new();
        for packet in bytes.chunks(size) {
            decoder.packet(packet, &mut sink).unwrap_or_else(|e| panic!("packet size {size}: {e}"));
        }
        assert_eq!(decoder.finish().unwrap(), 3, "packet size {size}");
        assert_eq!(sink.rows, expected_page(), "packet size {size}");
    }
}
