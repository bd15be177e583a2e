//! Standalone tds-test-server, so other clients (python-tds, sqlcmd-like tools, perfcopy's
//! binary) can be pointed at it:
//!
//! ```text
//! cargo run -p tds-test-server --example tds_test_server -- --port 14330 --seed-parquet FILE
//!   [--database DBATools] [--no-server-id] [--monitoringdb MonitoringDB] [--synclog]
//!   [--password PW] [--packet-size N]
//! ```
//! Prints `tds_test_server listening on 127.0.0.1:PORT` and then `READY`, and serves until killed.

use std::path::PathBuf;

use tds_test_server::{ServerConfig, TestServer};

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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--port" => cfg.port = val()?.parse()?,
            "--password" => cfg.password = Some(val()?),
            "--packet-size" => cfg.packet_size = Some(val()?.parse()?),
            "--seed-parquet" => seed = Some(PathBuf::from(val()?)),
            "--database" => db = val()?,
            "--no-server-id" => with_server_id = false,
            "--monitoringdb" => monitoring = val()?,
            "--synclog" => synclog = true,
            "-h" | "--help" => {
                println!("usage: tds_test_server [--port N] [--seed-parquet FILE] [--database NAME] [--no-server-id] [--monitoringdb NAME] [--synclog] [--password PW] [--packet-size N]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let srv = TestServer::start(cfg)?;
    srv.create_dbatools(&db, with_server_id);
    srv.create_monitoringdb(&monitoring);
    if synclog {
        srv.create_synclog(&monitoring);
    }
    if let Some(p) = seed {
        let n = srv.seed_parquet(&db, "dbo.PerfSnapshotRun", &p)?;
        println!("seeded {n} rows into {db}.dbo.PerfSnapshotRun from {}", p.display());
    }
    println!("tds_test_server listening on {}", srv.addr());
    println!("READY");
    loop {
        std::thread::park();
    }
}
