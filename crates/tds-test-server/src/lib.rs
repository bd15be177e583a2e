//! # tds-test-server: an in-process MS-TDS server for perfcopy's tests
//!
//! Test-only (a dev-dependency; never in perfcopy's release binary). Written from the MS-TDS
//! specification so that the real tiberius client (and other clients such as python-tds) can
//! talk to something on loopback that decodes exactly what SQL Server would receive.
//!
//! ```no_run
//! use tds_test_server::{ServerConfig, TestServer};
//! let srv = TestServer::start(ServerConfig { packet_size: Some(512), password: Some("pw".into()), ..Default::default() }).unwrap();
//! srv.create_dbatools("DBATools_A", true);
//! srv.create_monitoringdb("MonitoringDB");
//! // connect tiberius to srv.addr(), user any, password "pw": Encrypt=true with
//! // TrustServerCertificate=true (or TrustServerCertificateCA= a file holding ca_certificate_pem()),
//! // Encrypt=false (login packet encrypted only) or Encrypt=DANGER_PLAINTEXT
//! ```
//!
//! ## Standalone
//! `cargo run -p tds-test-server --bin tds_test_server -- --port 14330 --seed-parquet FILE`
//! (`--port 0` picks a free port; the `READY 127.0.0.1:PORT` line names it; `--help` lists the
//! options: database names, password, packet size, `--synthetic-rows N`, `--bulk-count-only`,
//! `--stop-on-stdin-eof`, `--require-encryption`, `--no-tls`, `--ca-cert-out FILE`). Integration tests start it through `CARGO_BIN_EXE_tds_test_server`.
//!
//! ## Protocol
//! - Packets: 8-byte headers, multi-packet messages both ways, EOM status. The packet size is
//!   [`ServerConfig::packet_size`] (or the client's LOGIN7 request) and is announced in ENVCHANGE.
//! - PRELOGIN and TLS, as SQL Server does it for TDS 7.x ([`tls`]): the client's ENCRYPTION
//!   option is answered by MS-TDS 2.2.6.5's table for the server's [`ServerConfig::tls`]:
//!
//!   | client sends | [`TlsMode::Offered`] (default, SQL Server's) | [`TlsMode::Required`] (Force Encryption) | [`TlsMode::Unavailable`] (no certificate) |
//!   |---|---|---|---|
//!   | ENCRYPT_OFF (`Encrypt=false`) | ENCRYPT_OFF: LOGIN7 under TLS, then plaintext | ENCRYPT_REQ: all under TLS | ENCRYPT_NOT_SUP: plaintext |
//!   | ENCRYPT_ON | ENCRYPT_ON: all under TLS | ENCRYPT_ON: all under TLS | ENCRYPT_NOT_SUP, then closed |
//!   | ENCRYPT_REQ (`Encrypt=true`) | ENCRYPT_ON: all under TLS | ENCRYPT_ON: all under TLS | ENCRYPT_NOT_SUP, then closed |
//!   | ENCRYPT_NOT_SUP (`DANGER_PLAINTEXT`) | ENCRYPT_NOT_SUP: plaintext | ENCRYPT_REQ, then closed | ENCRYPT_NOT_SUP: plaintext |
//!
//!   The TLS 1.2 handshake travels as PRELOGIN (0x12) messages both ways (each flight one
//!   message, EOM on its last packet), then TLS records go straight over TCP carrying the TDS
//!   packets; with login-only encryption the connection is plaintext again from the login
//!   response on. The certificate (rustls, generated with rcgen when the first server of the
//!   process starts) is issued for `localhost` and `127.0.0.1` by a test CA whose PEM is
//!   [`ca_certificate_pem`]; no system trust store knows it, so a validating client fails
//!   unless told to trust it (`TrustServerCertificateCA=FILE`) or not to check
//!   (`TrustServerCertificate=true`). [`Stats`] counts handshakes, login-only connections and
//!   refusals. TDS 8.0 (`Encrypt=strict`, TLS before PRELOGIN) is not offered.
//! - LOGIN7: user, password (checked against
//!   [`ServerConfig::password`]; wrong → ERROR 18456 and close), database (unknown → 4060),
//!   packet size → ENVCHANGE(database, collation, language, packet size), INFO, LOGINACK (TDS 7.4), DONE.
//! - SQLBatch (ALL_HEADERS skipped), RPC `sp_executesql` (ProcID 10 or by name) with typed
//!   parameters, RPC `sp_getapplock`/`sp_releaseapplock` by name, Transaction Manager requests
//!   (begin/commit/rollback, used by tiberius' `begin_transaction`), Attention (→ DONE with ATTN),
//!   BulkLoad (type 7) after `INSERT BULK`.
//! - Parameter TYPE_INFO decoded: NULLTYPE, INT1/2/4/8, BIT, FLT4/8, DATETIME, INTN, BITN, FLTN,
//!   DATETIMN, DATEN, DECIMALN/NUMERICN, DATETIME2N, NVARCHAR/NCHAR (incl. PLP max),
//!   BIGVARCHAR/BIGCHAR (bytes in the code page of the TYPE_INFO's collation), BIGVARBINARY
//!   (incl. PLP max), BIGBINARY, XML (XML_INFO with or without a schema; PLP UTF-16LE, a
//!   byte-order mark dropped), GUID, SSVARIANT (MS-TDS 2.2.5.5.4; the base types of [`Variant`]). (tiberius 0.13 sends i32/i64 as INTN, bool as BITN, String as
//!   NVARCHAR(4000) or NVARCHAR(MAX) PLP, NaiveDateTime as DATETIME2N(7), Decimal as NUMERICN,
//!   and `None` of String/DateTime/Decimal as NULLTYPE.)
//! - Results: COLMETADATA (NOT NULL integers/bit as fixed INT1/2/4/8/BIT, nullable ones as
//!   INTN/BITN; DECIMALN(p,s); DATETIME2N(s); NVARCHAR(n) and NVARCHAR(MAX) as PLP; BIGVARCHAR(n|MAX) with the column's
//!   collation and its bytes in that code page; BIGBINARY(n), BIGVARBINARY(n|MAX); XML (no schema)
//!   as PLP UTF-16LE; FLT8/FLTN(8); SSVARIANT (max 8016) with base type, properties and data; MAX
//!   values in PLP chunks of at most [`wire::PLP_CHUNK`] bytes (a 0-length value is the
//!   terminator alone, NULL is PLP_NULL);
//!   identity columns flagged read-only identity; DATETIME as DATETIME/DATETIMN(8), NUMERIC as
//!   NUMERICN), ORDER after COLMETADATA for a SELECT with ORDER BY (the selected sort columns),
//!   ROW or NBCROW (NBCROW when the null bitmap is shorter than the row's NULLs would be),
//!   DONE/DONEINPROC/DONEPROC with counts, MORE and the statement's CurCmd (`wire::cur_cmd`;
//!   an RPC's statements end with DONEINPROC, the RPC with RETURNSTATUS and DONEPROC EXECUTE),
//!   ERROR/INFO (PRINT: INFO 0; USE: ENVCHANGE 1 and INFO 5701), ENVCHANGE 8/9/10 with 8-byte
//!   transaction descriptors.
//!
//! - Logins may also carry an Entra ID access token (LOGIN7 FeatureExt FEDAUTH, security-token
//!   library): accepted when it equals [`TestServer::set_access_token`]'s (answered with
//!   FEATUREEXTACK), else 18456. [`TestServer::set_routing`] makes the server a gateway: each
//!   login is answered with a routing ENVCHANGE (type 20) and the connection closed.
//!
//! ## SQL subset (statements may be separated by `;`; identifiers `[bracketed]` or bare, case-insensitive;
//! names `[db.][schema.]table`, schema defaults to dbo, db to the session's)
//! - `SELECT [TOP (n|@P)] {* | expr [AS alias], ...} [FROM table [WITH (hints)]] [WHERE cond] [ORDER BY expr [ASC|DESC], ...]`
//!   - expr: column, `@var`/`@Pn`, literal (integer, decimal, `'..'`/`N'..'`, NULL), `+ - * /`,
//!     `CAST(e AS type)`, `CONVERT(type, e)`, `ISNULL`, `COALESCE`, `GETUTCDATE()`/`GETDATE()`
//!     (DATETIME2(3) here), `SYSUTCDATETIME()`, `OBJECT_ID('name'[, 'U'])`, `DB_NAME()`,
//!     `SCOPE_IDENTITY()`, `DB_ID([name])`, `SERVERPROPERTY('ServerName'|'MachineName'|'InstanceName'|
//!     'ProductVersion'|'Edition'|'EngineEdition')`, `@@SPID`, `@@TRANCOUNT`, `@@VERSION`,
//!     `@@SERVERNAME` ([`ServerConfig::server_name`], by default distinct per instance; SERVERPROPERTY's names are
//!     [`ServerConfig::machine_name`], which a renamed host changes and `@@SERVERNAME` does not), `@@IDENTITY`;
//!     aggregates `COUNT(*)`, `COUNT(col)`, `COUNT_BIG(*)`, `MIN`, `MAX`, `SUM` (no GROUP BY: one row).
//!   - cond: `AND`, `OR`, `NOT`, parentheses, `= <> != < <= > >=`, `IS [NOT] NULL`, `[NOT] IN (..)`,
//!     `BETWEEN`, `[NOT] EXISTS (SELECT ..)`. NULL compares as unknown; strings compare case-insensitively.
//!   - `SELECT TOP 0 * FROM t` (tiberius' bulk metadata query) sends COLMETADATA + DONE.
//!   - Virtual tables `INFORMATION_SCHEMA.COLUMNS` (TABLE_CATALOG, TABLE_SCHEMA, TABLE_NAME,
//!     COLUMN_NAME, ORDINAL_POSITION int, COLUMN_DEFAULT, IS_NULLABLE varchar 'YES'/'NO',
//!     DATA_TYPE nvarchar, CHARACTER_MAXIMUM_LENGTH int (-1 = max), NUMERIC_PRECISION tinyint,
//!     NUMERIC_SCALE int, DATETIME_PRECISION smallint, COLLATION_NAME nvarchar) and `INFORMATION_SCHEMA.TABLES`; `sys.databases`
//!     (name, database_id, create_date), `sys.objects`/`sys.tables` (object_id, name, type,
//!     create_date) and `sys.database_recovery_status` (database_id, database_guid, family_guid,
//!     recovery_fork_guid as NVARCHAR(36) text: what `CONVERT(NVARCHAR(36), guid)` gives on SQL Server).
//! - `INSERT [INTO] t [(cols)] [OUTPUT INSERTED.col [AS a], ... | INSERTED.*] VALUES (..)[, (..)]` and
//!   `INSERT t DEFAULT VALUES`: IDENTITY assigned like SQL Server (never reused, gaps after
//!   rollback), defaults, conversions with SQL Server's errors (515 NULL, 2627 UNIQUE, 544
//!   explicit identity, 2628 truncation, 8115 overflow).
//! - `UPDATE t SET col = expr, ... [WHERE cond]`, `DELETE [FROM] t [WHERE cond]`.
//! - `BEGIN TRAN[SACTION] [name]`, `COMMIT [TRAN[SACTION]|WORK]`, `ROLLBACK [TRAN[SACTION]|WORK]` (nesting counts).
//! - `IF cond stmt [ELSE stmt]`, `BEGIN ... END` blocks; e.g.
//!   `IF OBJECT_ID(N'dbo.DBAToolsSyncLog', N'U') IS NULL CREATE TABLE dbo.DBAToolsSyncLog (...)`.
//! - `CREATE TABLE t (col type [IDENTITY[(1,1)]] [NULL|NOT NULL] [CONSTRAINT n] [DEFAULT expr]
//!   [PRIMARY KEY|UNIQUE] [REFERENCES t(c)], ... [, CONSTRAINT n PRIMARY KEY|UNIQUE (cols)] [, FOREIGN KEY ...])`;
//!   `CREATE [UNIQUE] [NONCLUSTERED] INDEX n ON t (cols)` (UNIQUE adds a constraint; others are no-ops);
//!   `DROP TABLE [IF EXISTS] t`; `TRUNCATE TABLE t` (IDENTITY back at its seed, same object). A table
//!   created again is a new object (new OBJECT_ID and create_date).
//!   Types: TINYINT, SMALLINT, INT, BIGINT, BIT, DECIMAL/NUMERIC(p,s), NVARCHAR(n|MAX), NCHAR,
//!   VARCHAR(n|MAX) [COLLATE name], CHAR, SYSNAME, DATETIME2[(s)] (default 7), DATETIME (1/300 s,
//!   1753..9999), BINARY(n), VARBINARY(n|MAX), XML, FLOAT, UNIQUEIDENTIFIER, SQL_VARIANT. VARCHAR's collation
//!   ([`Collation`]: SQL_Latin1_General_CP1_CI_AS by default, Latin1_General_CI_AS,
//!   Cyrillic_General_CI_AS (cp1251), Greek_CI_AS (cp1253); another name is error 448) sets its
//!   code page: text stored in it is converted as SQL Server converts (`?` for a character the
//!   code page lacks, 2628 when its bytes exceed n). INFORMATION_SCHEMA.COLUMNS (with
//!   COLLATION_NAME), `sys.columns` and `sp_tablecollations_100` report each column's collation.
//!   NUMERIC stays NUMERIC (NUMERICN, INFORMATION_SCHEMA 'numeric'), DECIMAL DECIMAL.
//! - `DECLARE @v type [= expr], ...`, `SET @v = expr`, `SET NOCOUNT ON|OFF`, other `SET ...` ignored.
//! - `PRINT expr`, `USE db`.
//! - `EXEC [@r =] sp_getapplock @Resource = .., @LockMode = .., @LockOwner = 'Session'|'Transaction',
//!   @LockTimeout = ms` → 0 granted, 1 granted after waiting, -1 timeout; real cross-connection
//!   exclusion (every mode is exclusive), per database, released by
//!   `EXEC sp_releaseapplock @Resource = .., @LockOwner = ..`, at COMMIT/ROLLBACK (Transaction
//!   owner) or on disconnect.
//! - `INSERT BULK t (col type, ...) [WITH (...)]` then a BulkLoad message: COLMETADATA, ROW/NBCROW,
//!   DONE decoded. The statement binds its columns to the table (one it lacks: a failed DONE
//!   without ERROR; twice: 264; unknown type: 2715); the COLMETADATA binds by position (another
//!   count: 4804) and each column must be of the declared type with the target's nullability
//!   and PLP for a MAX target (4816 states 2/1/2); values longer than declared are 4815, values
//!   the table refuses 2628/515/2627 with 3621 (declared types are converted as INSERT does);
//!   the whole load is atomic; identity columns omitted get values, supplied ones are kept.
//! - Anything else → ERROR 102 quoting the statement.
//!
//! Transactions: rows inserted (INSERT or bulk) inside a transaction are visible to the own
//! session at once and to others only after COMMIT; ROLLBACK or a dropped connection discards
//! them. UPDATE/DELETE inside a transaction change committed rows at once (others see them:
//! READ UNCOMMITTED-like) and are undone on rollback. No locking besides app locks.
//!
//! ## Histories
//! [`TestServer::backup_database`] copies a database (rows, identity counters, object IDs, creation
//! facts); [`TestServer::restore_database`] brings a copy back as SQL Server's RESTORE does (new
//! create_date and recovery fork), [`TestServer::attach_database_copy`] as a cloned disk does (every
//! fact kept). [`TestServer::set_server_name`] and [`TestServer::set_machine_name`] rename.
//!
//! ## Arrow types ([`TestServer::table_batch`], [`TestServer::insert_batch`])
//! BIGINT→Int64, INT→Int32, SMALLINT→Int16, TINYINT→UInt8, BIT→Boolean, DECIMAL(p,s)→Decimal128(p,s),
//! NVARCHAR/VARCHAR/SYSNAME→Utf8, DATETIME2(0..=3)→Timestamp(Millisecond, None),
//! DATETIME2(4..=7)→Timestamp(Microsecond, None) (the 7th fractional digit is dropped on read-back),
//! BINARY(n)→FixedSizeBinary(n), UNIQUEIDENTIFIER→FixedSizeBinary(16) (SQL Server's byte order), VARBINARY→Binary, XML→Utf8, FLOAT→Float64, SQL_VARIANT→Binary
//! holding the value's TDS bytes (base type, property count, properties, data). Values Arrow
//! cannot say (a variant's base type) go in with [`TestServer::insert_rows`] and come back with
//! [`TestServer::table_rows`].
//!
//! Keyset pages (`SELECT TOP (n) ... WHERE key > @p ORDER BY key`) on a table with a single-column
//! integer primary key whose stored rows ascend in it are answered by a binary search (a clustered
//! index seek) instead of a scan and sort ([`TestServer::set_index_seek`], [`Stats::index_seeks`]).
//!
//! ## Faults and throughput
//! [`Faults`]: refuse logins, drop a connection after N result rows (counted cumulatively over
//! all responses of each connection since the fault was armed; the first connection to exceed
//! N is cut after its N-th row) or on the N-th bulk load, one-shot errors (deadlock 1205 with
//! rollback, lock timeout 1222, any SqlError) on the next statement matching a pattern, a
//! statement's result ended early by a DONE whose count disagrees or that flags an error
//! without an ERROR token, response delays (once per response message).
//!
//! Throughput: [`TestServer::fill_synthetic`] makes a large table from template rows and
//! encodes each template row's ROW token once; `SELECT [TOP (n)] {* | col [AS a], ...} FROM t
//! [WHERE <AND-ed = < <= > >= BETWEEN on the identity column with integer constants/variables>]
//! [ORDER BY <identity> [ASC]]` is then answered by copying those bytes and patching the
//! identity value (other statements, and any read after a write to the table, use the normal
//! path and return the same rows; [`Stats::pre_encoded_rows_sent`] counts the fast path).
//! Large results of either path are streamed in whole packets as they are encoded.
//! [`TestServer::set_bulk_count_only`] makes bulk loads validate COLMETADATA and then only
//! walk ROW/NBCROW tokens (lengths checked, values not decoded) and count them.

//! ## On the crate `tds-protocol` (0.20)
//! Evaluated as a second, independent decoder. It parses client-side token streams
//! (COLMETADATA with types, precision, scale, collation, flags; ROW as raw bytes per column;
//! DONE with counts; ENVCHANGE; LOGINACK) but has no server side: no LOGIN7 or RPC parser, no
//! token encoder, and no typed value decoding of ROW columns. So the server encodes and decodes
//! by hand (`wire`), and the tests use `tds-protocol`'s `TokenParser` to cross-check that what the
//! server sends frames correctly and describes the right types.

pub mod arrow_io;
pub mod children;
pub mod collation;
pub mod engine;
pub mod error;
pub mod prepared;
pub mod server;
pub mod sql;
pub mod syscolumns;
pub mod tls;
pub mod types;
pub mod wire;

pub use error::{ServerError, SqlError};
pub use server::{perf_snapshot_run_columns, parse_login7, DatabaseCopy, EarlyEnd, Faults, Login7, ServerConfig, Stats, TestServer, DEFAULT_SERVER_NAME_PREFIX};
pub use tls::{ca_certificate_pem, TlsMode};
pub use collation::Collation;
pub use types::{Column, ColumnDefault, SqlType, Value, Variant};
