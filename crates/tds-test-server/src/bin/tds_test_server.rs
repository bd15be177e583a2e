//! Standalone tds-test-server, so other clients (python-tds, perfcopy's binary, tools) can be
//! pointed at it:
//!
//! ```text
//! cargo run -p tds-test-server --bin tds_test_server -- --port 14330 --seed-parquet FILE
//!   [--database DBATools] [--no-server-id] [--monitoringdb MonitoringDB] [--child-tables FILE] [--synclog]
//!   [--password PW] [--packet-size N] [--synthetic-rows N] [--bulk-count-only]
//!   [--stop-on-stdin-eof] [--server-name NAME] [--machine-name NAME]
//!   [--require-encryption | --no-tls] [--ca-cert-out FILE] [--trace]
//! ```
//! - `--trace` prints each SQL batch and RPC (name and parameters) clients send to stderr.
//! - TLS is offered as SQL Server offers it (see the crate docs): `--require-encryption` is
//!   SQL Server's Force Encryption (a client that sends ENCRYPT_NOT_SUP, e.g.
//!   `Encrypt=DANGER_PLAINTEXT`, is answered ENCRYPT_REQ and disconnected), `--no-tls` a server
//!   without a certificate (ENCRYPT_NOT_SUP to everyone). `--ca-cert-out FILE` writes the PEM
//!   of the CA that issued the server's certificate, for clients that validate it.
//! - `--server-name NAME` sets `@@SERVERNAME` (default TDS-TEST-SERVER-1-PORT), `--machine-name NAME`
//!   the host name `SERVERPROPERTY('ServerName')` reports (default: the server name); two
//!   instances with one `--server-name` and other machine names are a renamed clone.
//! - `--port 0` picks a free port. The last line printed at startup is `READY 127.0.0.1:PORT`
//!   with the port actually bound; then it serves until killed.
//! - `--seed-parquet FILE` appends the file's rows to `<database>.dbo.PerfSnapshotRun` (source
//!   shape; columns matched by name, PerfSnapshotRunID assigned unless present), and its child
//!   tables (`FILE`'s stem folder: `NAME/<Table>.parquet` beside `NAME.parquet`) to
//!   `<database>.dbo.<Table>`, each created with a BIGINT IDENTITY `<Table>ID` primary key,
//!   PerfSnapshotRunID BIGINT NOT NULL and the columns with the SQL types of their metadata
//!   (see `tds_test_server::children`).
//! - `--child-tables FILE` creates the child tables of the export FILE, empty, in
//!   `<monitoringdb>` (their shape as for `--seed-parquet`), so a MonitoringDB can take children.
//! - `--synthetic-rows N` (needs `--seed-parquet`): throughput mode; the table holds N rows cycling
//!   the seed's rows, served from pre-encoded ROW tokens (see `TestServer::fill_synthetic`).
//! - `--bulk-count-only`: bulk loads into `<monitoringdb>.dbo.PerfSnapshotRun` are only counted.
//! - `--stop-on-stdin-eof`: exits when stdin closes (tests use it so a server never outlives them).
//!
//! Bulk-loaded rows are read back with any client (`SELECT * FROM dbo.PerfSnapshotRun` in the
//! MonitoringDB database): committed rows are visible to every connection.

use std::io::Read;
use std::path::PathBuf;

use tds_test_server::{ServerConfig, TestServer, TlsMode};

const USAGE: &str = "usage: tds_test_server [--port N] [--seed-parquet FILE] [--database NAME] [--no-server-id] [--monitoringdb NAME] [--child-tables FILE] [--synclog] [--password PW] [--packet-size N] [--synthetic-rows N] [--bulk-count-only] [--stop-on-stdin-eof] [--server-name NAME] [--machine-name NAME] [--require-encryption | --no-tls] [--ca-cert-out FILE] [--trace]";

fn main() {
    if let Err(e) = run() {
        eprintln!("tds_test_server: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = ServerConfig::default();
    let mut seed: Option<PathBuf> = None;
    let mut db = "DBATools".to_string();
    let mut with_server_id = true;
    let mut monitoring = "MonitoringDB".to_string();
    let mut synclog = false;
    let mut synthetic: Option<usize> = None;
    let mut count_only = false;
    let mut stop_on_eof = false;
    let mut ca_out: Option<PathBuf> = None;
    let mut target_children: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--port" => cfg.port = val()?.parse()?,
            "--password" => cfg.password = Some(val()?),
            "--packet-size" => cfg.packet_size = Some(val()?.parse()?),
            "--server-name" => cfg.server_name = Some(val()?),
            "--machine-name" => cfg.machine_name = Some(val()?),
            "--seed-parquet" => seed = Some(PathBuf::from(val()?)),
            "--database" => db = val()?,
            "--no-server-id" => with_server_id = false,
            "--monitoringdb" => monitoring = val()?,
            "--synclog" => synclog = true,
            "--child-tables" => target_children = Some(PathBuf::from(val()?)),
            "--synthetic-rows" => synthetic = Some(val()?.parse()?),
            "--bulk-count-only" => count_only = true,
            "--stop-on-stdin-eof" => stop_on_eof = true,
            "--require-encryption" => cfg.tls = TlsMode::Required,
            "--no-tls" => cfg.tls = TlsMode::Unavailable,
            "--trace" => cfg.trace = true,
            "--ca-cert-out" => ca_out = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    if let Some(p) = &ca_out {
        std::fs::write(p, tds_test_server::ca_certificate_pem()?).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    let srv = TestServer::start(cfg)?;
    srv.create_dbatools(&db, with_server_id);
    srv.create_monitoringdb(&monitoring);
    if synclog {
        srv.create_synclog(&monitoring);
    }
    if let Some(p) = &target_children {
        let names = tds_test_server::children::create_child_tables(&srv, &monitoring, p)?;
        println!("created {} child tables in {monitoring} from {}: {}", names.len(), p.display(), names.join(", "));
    }
    if count_only {
        srv.set_bulk_count_only(&monitoring, "dbo.PerfSnapshotRun", true)?;
    }
    match (seed, synthetic) {
        (Some(p), None) => {
            let n = srv.seed_parquet(&db, "dbo.PerfSnapshotRun", &p)?;
            println!("seeded {n} rows into {db}.dbo.PerfSnapshotRun from {}", p.display());
            for (table, n) in tds_test_server::children::seed_export_children(&srv, &db, &p)? {
                println!("seeded {n} rows into {db}.dbo.{table}");
            }
        }
        (Some(p), Some(n)) => {
            let file = std::fs::File::open(&p).map_err(|e| format!("cannot open {}: {e}", p.display()))?;
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            let schema = batches.first().map(|b| b.schema()).ok_or_else(|| format!("{} holds no row group", p.display()))?;
            let template = arrow::compute::concat_batches(&schema, &batches)?;
            srv.fill_synthetic(&db, "dbo.PerfSnapshotRun", &template, n)?;
            println!("filled {db}.dbo.PerfSnapshotRun with {n} synthetic rows cycling {} template rows", template.num_rows());
        }
        (None, Some(_)) => return Err("--synthetic-rows needs --seed-parquet (the template rows)".into()),
        (None, None) => {}
    }
    println!("tds_test_server listening on {}", srv.addr());
    println!("READY {}", srv.addr());
    if stop_on_eof {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while !matches!(stdin.read(&mut sink), Ok(0) | Err(_)) {}
        return Ok(());
    }
    loop {
        std::thread::park();
    }
}
