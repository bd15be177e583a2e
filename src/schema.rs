//! The tables perfcopy moves, described as data, and the SQL Server <-> Arrow type table, in
//! one place.
//!
//! A [`Table`] says what a table is: its name, its columns with their SQL types (and from them
//! their Arrow types), the source-local identity that keyset reads and watermarks use, the key
//! that identifies a row in the target, the partition column of the stage and, for a child
//! table, the column that references its run. [`RUN`] is `PerfSnapshotRun`. Every other module
//! asks this one for column names, positions and types; nothing else spells a column name or
//! an Arrow type of the data.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

/// A SQL Server column type of the DBATools family (`../shared/SCHEMA.md`): the one type
/// table. Each has exactly one Arrow type ([`SqlType::arrow_type`]); sources, sinks, the stage
/// and the TDS codecs take theirs from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    BigInt,
    Int,
    SmallInt,
    TinyInt,
    Bit,
    Decimal { precision: u8, scale: i8 },
    /// DATETIME2(p); values are UTC. PerfSnapshotRun's SnapshotUTC is DATETIME2(3).
    DateTime2(u8),
    /// DATETIME (1/300 s ticks): read from older sources, never written.
    DateTime,
    /// NVARCHAR(n), n in characters; SYSNAME is NVARCHAR(128).
    NVarChar(u16),
    /// NVARCHAR(MAX).
    NVarCharMax,
    /// Text whose length its file does not declare (a Parquet export's string column without
    /// perfcopy's `perfcopy.sql_type` metadata): NVARCHAR(MAX) where perfcopy creates a
    /// column, and it goes into any NVARCHAR or VARCHAR target column, each value checked
    /// against the column's length (and code page) as it is loaded.
    Text,
    /// VARCHAR(n) in its collation's code page.
    VarChar(u16),
    /// VARCHAR(MAX).
    VarCharMax,
    /// BINARY(n).
    Binary(u16),
    /// VARBINARY(n).
    VarBinary(u16),
    /// VARBINARY(MAX).
    VarBinaryMax,
    Xml,
    /// SQL_VARIANT, carried losslessly as its base type with its properties (`int`,
    /// `decimal(18,4)`, `varchar(20) collate 0x0904D00034`) and the value's canonical text
    /// (`crate::tds::variant` documents both); a NULL variant is a null struct.
    SqlVariant,
}

/// DATETIME2 of millisecond precision, the type of every snapshot time.
pub const DATETIME2_3: SqlType = SqlType::DateTime2(3);

impl SqlType {
    /// The exact Arrow type of this SQL type (no widening).
    pub fn arrow_type(self) -> DataType {
        match self {
            SqlType::BigInt => DataType::Int64,
            SqlType::Int => DataType::Int32,
            SqlType::SmallInt => DataType::Int16,
            SqlType::TinyInt => DataType::UInt8,
            SqlType::Bit => DataType::Boolean,
            SqlType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            SqlType::DateTime2(p) if p <= 3 => DataType::Timestamp(TimeUnit::Millisecond, None),
            // Arrow's microseconds; DATETIME2(7)'s last digit (100 ns) has no place there yet.
            SqlType::DateTime2(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
            SqlType::DateTime => DataType::Timestamp(TimeUnit::Millisecond, None),
            SqlType::NVarChar(_) | SqlType::NVarCharMax | SqlType::Text | SqlType::VarChar(_) | SqlType::VarCharMax | SqlType::Xml => DataType::Utf8,
            SqlType::Binary(n) => DataType::FixedSizeBinary(i32::from(n)),
            SqlType::VarBinary(_) | SqlType::VarBinaryMax => DataType::Binary,
            SqlType::SqlVariant => DataType::Struct(
                vec![Field::new("base_type", DataType::Utf8, false), Field::new("value", DataType::Utf8, false)].into(),
            ),
        }
    }

    /// The type as it is written in T-SQL DDL.
    pub fn sql_name(self) -> String {
        match self {
            SqlType::BigInt => "BIGINT".into(),
            SqlType::Int => "INT".into(),
            SqlType::SmallInt => "SMALLINT".into(),
            SqlType::TinyInt => "TINYINT".into(),
            SqlType::Bit => "BIT".into(),
            SqlType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            SqlType::DateTime2(p) => format!("DATETIME2({p})"),
            SqlType::DateTime => "DATETIME".into(),
            SqlType::NVarChar(n) => format!("NVARCHAR({n})"),
            SqlType::NVarCharMax | SqlType::Text => "NVARCHAR(MAX)".into(),
            SqlType::VarChar(n) => format!("VARCHAR({n})"),
            SqlType::VarCharMax => "VARCHAR(MAX)".into(),
            SqlType::Binary(n) => format!("BINARY({n})"),
            SqlType::VarBinary(n) => format!("VARBINARY({n})"),
            SqlType::VarBinaryMax => "VARBINARY(MAX)".into(),
            SqlType::Xml => "XML".into(),
            SqlType::SqlVariant => "SQL_VARIANT".into(),
        }
    }

    /// The type [`SqlType::sql_name`] wrote (`DECIMAL(18,2)`, `NVARCHAR(MAX)`).
    pub fn from_sql_name(name: &str) -> Option<SqlType> {
        let (base, args) = match name.split_once('(') {
            Some((b, rest)) => (b, Some(rest.strip_suffix(')')?)),
            None => (name, None),
        };
        let (precision, scale, max_chars, datetime_precision) = match (base.to_ascii_lowercase().as_str(), args) {
            ("decimal" | "numeric", Some(a)) => {
                let (p, s) = a.split_once(',')?;
                (Some(p.trim().parse().ok()?), Some(s.trim().parse().ok()?), None, None)
            }
            ("datetime2", Some(a)) => (None, None, None, Some(a.trim().parse().ok()?)),
            (_, Some(a)) if a.eq_ignore_ascii_case("max") => (None, None, Some(-1), None),
            (_, Some(a)) => (None, None, Some(a.trim().parse().ok()?), None),
            ("xml", None) => (None, None, Some(-1), None),
            (_, None) => (None, None, None, None),
        };
        SqlType::from_declared(&DeclaredColumn { data_type: base.to_ascii_lowercase(), precision, scale, max_chars, datetime_precision, collation: None })
    }

    /// The type of a column as `INFORMATION_SCHEMA.COLUMNS` describes it; `None` for a type
    /// outside the DBATools family.
    pub fn from_declared(d: &DeclaredColumn) -> Option<SqlType> {
        let len = |max: SqlType, n: fn(u16) -> SqlType| match d.max_chars {
            Some(-1) => Some(max),
            Some(l) => u16::try_from(l).ok().map(n),
            None => None,
        };
        Some(match d.data_type.to_ascii_lowercase().as_str() {
            "bigint" => SqlType::BigInt,
            "int" => SqlType::Int,
            "smallint" => SqlType::SmallInt,
            "tinyint" => SqlType::TinyInt,
            "bit" => SqlType::Bit,
            "decimal" | "numeric" => SqlType::Decimal { precision: d.precision.unwrap_or(18), scale: d.scale.unwrap_or(0) as i8 },
            "datetime2" => SqlType::DateTime2(d.datetime_precision.unwrap_or(7).clamp(0, 7) as u8),
            "datetime" => SqlType::DateTime,
            // Character lengths only bound values; a source column without one still reads.
            "nvarchar" | "nchar" | "sysname" => len(SqlType::NVarCharMax, SqlType::NVarChar).unwrap_or(SqlType::NVarCharMax),
            "varchar" | "char" => len(SqlType::VarCharMax, SqlType::VarChar).unwrap_or(SqlType::VarCharMax),
            "binary" => SqlType::Binary(u16::try_from(d.max_chars?).ok()?),
            "varbinary" => len(SqlType::VarBinaryMax, SqlType::VarBinary)?,
            "xml" => SqlType::Xml,
            "sql_variant" => SqlType::SqlVariant,
            _ => return None,
        })
    }
}

/// A column of a target table as `INFORMATION_SCHEMA.COLUMNS` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclaredColumn {
    /// DATA_TYPE, lowercase.
    pub data_type: String,
    pub precision: Option<u8>,
    pub scale: Option<i32>,
    /// CHARACTER_MAXIMUM_LENGTH (-1 for MAX).
    pub max_chars: Option<i32>,
    /// DATETIME_PRECISION.
    pub datetime_precision: Option<i16>,
    /// COLLATION_NAME: a character column's collation (the database default when it declares
    /// none); `None` for other types.
    pub collation: Option<String>,
}

impl DeclaredColumn {
    /// The type as T-SQL writes it, e.g. `decimal(38,4)`, `nvarchar(max)`.
    pub fn sql_name(&self) -> String {
        let t = &self.data_type;
        match (t.as_str(), self.precision, self.scale, self.max_chars, self.datetime_precision) {
            ("decimal" | "numeric", Some(p), Some(s), _, _) => format!("{t}({p},{s})"),
            (_, _, _, Some(-1), _) => format!("{t}(max)"),
            (_, _, _, Some(l), _) => format!("{t}({l})"),
            ("datetime2" | "time" | "datetimeoffset", _, _, _, Some(p)) => format!("{t}({p})"),
            _ => t.clone(),
        }
    }
}

impl SqlType {
    /// Whether a target column declared as `d` holds every value of this type exactly: the
    /// same type, or a wider one (INT in a BIGINT, DECIMAL(p,s) in a DECIMAL(p',s) with p' >= p,
    /// NVARCHAR(n) in a longer NVARCHAR, DATETIME2(3) in a DATETIME2 of more digits). `Err` says
    /// why not.
    pub fn fits_in(self, d: &DeclaredColumn) -> std::result::Result<(), String> {
        let t = d.data_type.as_str();
        let narrower = || Err(format!("narrower than the {} perfcopy writes: values may not fit", self.sql_name()));
        let other = || Err(format!("not a type perfcopy writes {} into exactly", self.sql_name()));
        match self {
            SqlType::BigInt => match t {
                "bigint" => Ok(()),
                "int" | "smallint" | "tinyint" => narrower(),
                _ => other(),
            },
            SqlType::Int => match t {
                "int" | "bigint" => Ok(()),
                "smallint" | "tinyint" => narrower(),
                _ => other(),
            },
            SqlType::DateTime2(p) => match t {
                "datetime2" if d.datetime_precision.unwrap_or(7) >= i16::from(p) => Ok(()),
                "datetime2" | "smalldatetime" => narrower(),
                // DATETIME rounds to 1/300 s: not exact for milliseconds.
                "datetime" => Err(format!("rounded to 1/300 s, so {} values do not keep their milliseconds", self.sql_name())),
                _ => other(),
            },
            SqlType::Decimal { precision, scale } => match t {
                "decimal" | "numeric" if d.scale != Some(scale as i32) => {
                    Err(format!("of another scale than the {} perfcopy writes (values would be rescaled)", self.sql_name()))
                }
                "decimal" | "numeric" if d.precision.is_some_and(|p| p >= precision) => Ok(()),
                "decimal" | "numeric" => narrower(),
                _ => other(),
            },
            SqlType::NVarChar(n) => match t {
                "nvarchar" | "sysname" if d.max_chars.is_none_or(|l| l == -1 || l >= n as i32) => Ok(()),
                "nvarchar" | "sysname" => narrower(),
                _ => other(),
            },
            SqlType::Bit => match t {
                "bit" => Ok(()),
                _ => other(),
            },
            SqlType::NVarCharMax => match t {
                "nvarchar" if d.max_chars == Some(-1) => Ok(()),
                "nvarchar" => narrower(),
                _ => other(),
            },
            // No declared length to compare: the bulk encoder checks each value's length (and
            // a VARCHAR's code page) and names the column and row of one that does not fit.
            SqlType::Text => match t {
                "nvarchar" | "sysname" | "varchar" => Ok(()),
                _ => other(),
            },
            // VARCHAR text moves in the target column's code page, checked per value by the
            // bulk encoder (a character it lacks is an error naming column and row).
            SqlType::VarChar(n) => match t {
                "varchar" if d.max_chars.is_none_or(|l| l == -1 || l >= n as i32) => Ok(()),
                "varchar" => narrower(),
                _ => other(),
            },
            SqlType::VarCharMax => match t {
                "varchar" if d.max_chars == Some(-1) => Ok(()),
                "varchar" => narrower(),
                _ => other(),
            },
            // BINARY pads shorter values, so only its own length is exact.
            SqlType::Binary(n) => match t {
                "binary" if d.max_chars == Some(n as i32) => Ok(()),
                "binary" => Err(format!("of another length than the {} perfcopy writes (values would be padded or cut)", self.sql_name())),
                "varbinary" if d.max_chars.is_some_and(|l| l == -1 || l >= n as i32) => Ok(()),
                "varbinary" => narrower(),
                _ => other(),
            },
            SqlType::VarBinary(n) => match t {
                "varbinary" if d.max_chars.is_some_and(|l| l == -1 || l >= n as i32) => Ok(()),
                "varbinary" => narrower(),
                _ => other(),
            },
            SqlType::VarBinaryMax => match t {
                "varbinary" if d.max_chars == Some(-1) => Ok(()),
                "varbinary" => narrower(),
                _ => other(),
            },
            SqlType::Xml => match t {
                "xml" => Ok(()),
                _ => other(),
            },
            SqlType::SqlVariant => match t {
                "sql_variant" => Ok(()),
                _ => other(),
            },
            SqlType::SmallInt => match t {
                "smallint" | "int" | "bigint" => Ok(()),
                "tinyint" => narrower(),
                _ => other(),
            },
            SqlType::TinyInt => match t {
                "tinyint" | "smallint" | "int" | "bigint" => Ok(()),
                _ => other(),
            },
            // DATETIME is read from older sources, never written.
            SqlType::DateTime => other(),
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub sql: SqlType,
    pub nullable: bool,
    /// A VARCHAR column's collation as its source declares it (`Cyrillic_General_CI_AS`), when
    /// known: a table perfcopy creates declares it, so the column keeps its code page.
    pub collation: Option<&'static str>,
}

impl Column {
    /// A column without a known collation.
    pub const fn new(name: &'static str, sql: SqlType, nullable: bool) -> Column {
        Column { name, sql, nullable, collation: None }
    }
}

const fn col(name: &'static str, sql: SqlType, nullable: bool) -> Column {
    Column::new(name, sql, nullable)
}

/// Whether `name` may be written after `COLLATE` in DDL: SQL Server's collation names are
/// letters, digits and underscores (`Latin1_General_100_CI_AS_SC_UTF8`); anything else is
/// refused rather than put into SQL.
pub fn is_collation_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A column as a catalog or a file's schema describes it, before it becomes a [`Column`] of a
/// [`ChildTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundColumn {
    pub name: String,
    pub sql: SqlType,
    pub nullable: bool,
    /// The collation the catalog or the file names; kept for VARCHAR columns only.
    pub collation: Option<String>,
}

impl FoundColumn {
    /// A column without a known collation.
    pub fn new(name: impl Into<String>, sql: SqlType, nullable: bool) -> FoundColumn {
        FoundColumn { name: name.into(), sql, nullable, collation: None }
    }

    /// The same column with the collation `collation`.
    pub fn collated(self, collation: Option<String>) -> FoundColumn {
        FoundColumn { collation, ..self }
    }
}

/// A table perfcopy moves, as data. The same table exists in every DBATools database (schema
/// `dbo`) and in MonitoringDB, where the identity is the target's own and the server column
/// holds the central ServerID.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Name in both databases, and the table's folder in a stage or an export directory.
    pub name: &'static str,
    /// The source table's columns, in table order.
    pub columns: &'static [Column],
    /// The source-local BIGINT IDENTITY: keyset reads and watermarks go by it; it means nothing
    /// centrally and is not written to the target.
    pub identity: &'static str,
    /// The snapshot time: with [`Table::server_id`] it identifies a row in the target.
    pub snapshot_time: &'static str,
    /// The server column: source-local (NULL for the local server) in a source, the central
    /// `dbo.Servers` ID in the target, and the stage's Hive partition column.
    pub server_id: &'static str,
    /// The server's name, by which the target's `dbo.Servers` maps it to a central ID.
    pub server_name: &'static str,
    /// A column that older collectors' tables lack (read as NULL).
    pub optional: Option<&'static str>,
    /// For a child table: the column that references its run's [`Table::identity`].
    pub parent_key: Option<&'static str>,
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Table {
    /// Position of the column `name` in [`Table::columns`] (a compile-time error in a const
    /// when the description has no such column).
    pub const fn position(&self, name: &str) -> usize {
        let mut i = 0;
        while i < self.columns.len() {
            if str_eq(self.columns[i].name, name) {
                return i;
            }
            i += 1;
        }
        panic!("the table description has no such column")
    }

    /// The column `name`.
    pub const fn column(&self, name: &str) -> Column {
        self.columns[self.position(name)]
    }

    /// The table as T-SQL names it: `dbo.<name>`.
    pub fn sql_name(&self) -> String {
        format!("dbo.{}", self.name)
    }

    /// The Hive partition folder of one server in the stage: `<server_id column>=<id>`.
    pub fn partition_dir(&self, server_id: i32) -> String {
        format!("{}={server_id}", self.server_id)
    }

    /// The server ID of a stage partition folder's name, if it is one.
    pub fn partition_of(&self, dir_name: &str) -> Option<i32> {
        dir_name.strip_prefix(self.server_id)?.strip_prefix('=')?.parse().ok()
    }

    /// Whether a folder's name is a stage partition folder (`ServerID=...`).
    pub fn is_partition_dir(&self, dir_name: &str) -> bool {
        dir_name.strip_prefix(self.server_id).is_some_and(|r| r.starts_with('='))
    }
}

/// `DBATools.dbo.PerfSnapshotRun` / `MonitoringDB.dbo.PerfSnapshotRun`: one row per snapshot.
pub const RUN: Table = Table {
    name: "PerfSnapshotRun",
    columns: &SOURCE_COLUMNS,
    identity: "PerfSnapshotRunID",
    snapshot_time: "SnapshotUTC",
    server_id: "ServerID",
    server_name: "ServerName",
    optional: Some("ServerID"),
    parent_key: None,
};

/// Source table `DBATools.dbo.PerfSnapshotRun`, in table order.
pub const SOURCE_COLUMNS: [Column; 13] = [
    col("PerfSnapshotRunID", SqlType::BigInt, false),
    col("SnapshotUTC", DATETIME2_3, false),
    col("ServerID", SqlType::Int, true),
    col("ServerName", SqlType::NVarChar(128), false),
    col("SqlVersion", SqlType::NVarChar(200), false),
    col("CpuSignalWaitPct", SqlType::Decimal { precision: 9, scale: 4 }, true),
    col("TopWaitType", SqlType::NVarChar(120), true),
    col("TopWaitMsPerSec", SqlType::Decimal { precision: 18, scale: 4 }, true),
    col("SessionsCount", SqlType::Int, true),
    col("RequestsCount", SqlType::Int, true),
    col("BlockingSessionCount", SqlType::Int, true),
    col("DeadlockCountRecent", SqlType::Int, true),
    col("MemoryGrantWarningCount", SqlType::Int, true),
];

/// Positions in [`SOURCE_COLUMNS`] (and in every batch of [`source_schema`]), from [`RUN`].
pub mod src {
    use super::RUN;
    pub const RUN_ID: usize = RUN.position(RUN.identity);
    pub const SNAPSHOT_UTC: usize = RUN.position(RUN.snapshot_time);
    pub const SERVER_ID: usize = RUN.position(RUN.server_id);
    pub const SERVER_NAME: usize = RUN.position(RUN.server_name);
    /// First of the columns that are copied to the target unchanged (SqlVersion..end): the
    /// description puts the four columns above first.
    pub const FIRST_VALUE: usize = 4;
    const _: () = assert!(RUN_ID < FIRST_VALUE && SNAPSHOT_UTC < FIRST_VALUE && SERVER_ID < FIRST_VALUE && SERVER_NAME < FIRST_VALUE);
}

/// Name of the table's folder inside a Parquet stage (and inside an export directory).
pub const TABLE_DIR: &str = RUN.name;

/// The source column that older DBATools tables lack.
pub const OPTIONAL_SOURCE_COLUMN: &str = match RUN.optional {
    Some(c) => c,
    None => "",
};

/// Target `MonitoringDB.dbo.PerfSnapshotRun` columns that perfcopy writes (the target's own
/// identity is assigned by the target), in the stage's column order: the key, the server's
/// name, then the value columns; the server column is required there.
pub fn target_columns() -> &'static [Column] {
    static COLS: OnceLock<Vec<Column>> = OnceLock::new();
    COLS.get_or_init(|| {
        let mut cols = vec![
            RUN.column(RUN.snapshot_time),
            Column { nullable: false, ..RUN.column(RUN.server_id) },
            RUN.column(RUN.server_name),
        ];
        cols.extend_from_slice(&RUN.columns[src::FIRST_VALUE..]);
        cols
    })
}

/// Positions in [`target_columns`].
pub mod tgt {
    pub const SNAPSHOT_UTC: usize = 0;
    pub const SERVER_ID: usize = 1;
    pub const SERVER_NAME: usize = 2;
    pub const FIRST_VALUE: usize = 3;
}

fn schema_of(cols: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|c| Field::new(c.name, c.sql.arrow_type(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// Arrow schema of a source batch inside the pipeline (all 13 columns; ServerID all-null when
/// the source lacks it).
pub fn source_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| schema_of(&SOURCE_COLUMNS)).clone()
}

/// Arrow schema of the key columns read by the planning pass.
pub fn key_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        schema_of(&[RUN.column(RUN.identity), RUN.column(RUN.snapshot_time), RUN.column(RUN.server_name)])
    })
    .clone()
}

/// Positions in [`key_schema`].
pub mod key {
    pub const RUN_ID: usize = 0;
    pub const SNAPSHOT_UTC: usize = 1;
    pub const SERVER_NAME: usize = 2;
}

/// Arrow schema of target rows (the stage's files and the MonitoringDB bulk load).
pub fn target_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| schema_of(target_columns())).clone()
}

/// The type table shown in the README: SQL type, Arrow type (PerfSnapshotRun's types).
pub fn type_table() -> Vec<(String, String)> {
    [
        SqlType::BigInt,
        SqlType::Int,
        DATETIME2_3,
        SqlType::Decimal { precision: 9, scale: 4 },
        SqlType::Decimal { precision: 18, scale: 4 },
        SqlType::NVarChar(128),
        SqlType::Bit,
    ]
    .iter()
    .map(|t| (t.sql_name(), format!("{:?}", t.arrow_type())))
    .collect()
}

/// A child table of [`RUN`]: a table of a DBATools database with a `PerfSnapshotRunID` column
/// that references its run (PerfSnapshotDB, PerfSnapshotWaitStats, …, and tables a site adds).
/// Discovered from `INFORMATION_SCHEMA` (see [`ChildTable::discovered`]), never from a list.
///
/// In a source its rows are (own identity, PerfSnapshotRunID, values). Inside the pipeline and
/// in the stage they carry their run's key instead of source IDs ([`ChildTable::keyed_schema`]:
/// SnapshotUTC, ServerID, values), so the stage stays self-contained; a MonitoringDB load turns
/// the key into MonitoringDB's own PerfSnapshotRunID.
#[derive(Debug, Clone, Copy)]
pub struct ChildTable {
    /// Name in both databases (schema `dbo`), and the table's folder in a stage.
    pub name: &'static str,
    /// The values copied: every column but the table's own identity and the parent key, in
    /// table order.
    pub values: &'static [Column],
    /// The source-local BIGINT IDENTITY (`<Table>ID`), if the table has one: not copied.
    pub identity: Option<&'static str>,
}

/// The key of a stage field's metadata that holds its SQL type (`NVARCHAR(120)`).
pub const SQL_TYPE_KEY: &str = "perfcopy.sql_type";

/// The key of a stage field's metadata that holds a VARCHAR column's source collation
/// (`Cyrillic_General_CI_AS`); absent when it is not known (and in files of other tools).
pub const COLLATION_KEY: &str = "perfcopy.collation";

/// The collation a field's metadata records ([`COLLATION_KEY`]), if any.
pub fn field_collation(f: &Field) -> Option<String> {
    f.metadata().get(COLLATION_KEY).cloned()
}

/// A field of `c` with its SQL type and, when known, its collation in the metadata.
pub fn typed_field(c: &Column) -> Field {
    // Text of undeclared length keeps having none (a stage written from such an export loads
    // as the export does).
    let mut meta = std::collections::HashMap::new();
    if c.sql != SqlType::Text {
        meta.insert(SQL_TYPE_KEY.to_string(), c.sql.sql_name());
    }
    if let Some(coll) = c.collation {
        meta.insert(COLLATION_KEY.to_string(), coll.to_string());
    }
    Field::new(c.name, c.sql.arrow_type(), c.nullable).with_metadata(meta)
}

/// The column of a child table that references its run.
pub const PARENT_KEY: &str = RUN.identity;

/// Positions in [`ChildTable::keyed_schema`].
pub mod child {
    pub const SNAPSHOT_UTC: usize = 0;
    pub const SERVER_ID: usize = 1;
    pub const FIRST_VALUE: usize = 2;
}

impl ChildTable {
    /// A child table as a source's catalog describes it: `columns` in table order (name, type,
    /// nullable). `identity` is the table's IDENTITY column, if any. The description lives as
    /// long as the process (a few tables of a few dozen columns per run).
    pub fn discovered(name: &str, columns: Vec<FoundColumn>, identity: Option<&str>) -> ChildTable {
        let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
        let values: Vec<Column> = columns
            .into_iter()
            .filter(|c| !c.name.eq_ignore_ascii_case(PARENT_KEY) && identity.is_none_or(|i| !c.name.eq_ignore_ascii_case(i)))
            .map(|c| {
                // Only VARCHAR's bytes depend on the collation (NVARCHAR is UTF-16 in any).
                let collation = c.collation.filter(|_| matches!(c.sql, SqlType::VarChar(_) | SqlType::VarCharMax));
                Column { name: leak(&c.name), sql: c.sql, nullable: c.nullable, collation: collation.as_deref().map(leak) }
            })
            .collect();
        ChildTable { name: leak(name), values: Box::leak(values.into_boxed_slice()), identity: identity.map(leak) }
    }

    /// The table as T-SQL names it: `dbo.<name>`.
    pub fn sql_name(&self) -> String {
        format!("dbo.{}", self.name)
    }

    /// Columns of a keyed child batch: the run's SnapshotUTC and target ServerID, then the values.
    pub fn keyed_columns(&self) -> Vec<Column> {
        let mut cols = vec![RUN.column(RUN.snapshot_time), Column { nullable: false, ..RUN.column(RUN.server_id) }];
        cols.extend_from_slice(self.values);
        cols
    }

    /// Arrow schema of a keyed child batch (the pipeline's and the stage's form). Each field
    /// carries its SQL type in its metadata ([`SQL_TYPE_KEY`]), so a stage's child table keeps
    /// the exact types (NVARCHAR lengths) its target checks need, and a VARCHAR its source's
    /// collation ([`COLLATION_KEY`]), so a table created from the stage keeps its code page.
    pub fn keyed_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.keyed_columns().iter().map(typed_field).collect::<Vec<_>>()))
    }

    /// A batch read from a stage file of this table, with `keyed` (the table's
    /// [`ChildTable::keyed_schema`], made once by the caller): the same columns and types; the
    /// fields' metadata may differ (a file written before collations were recorded, or by a
    /// source that knew another collation).
    pub fn rekeyed(keyed: &SchemaRef, batch: &RecordBatch) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
        RecordBatch::try_new(keyed.clone(), batch.columns().to_vec())
    }

    /// A stage child table's description from its files' schema (written by
    /// [`ChildTable::keyed_schema`]); `Err` says which field is not one.
    pub fn from_keyed_schema(name: &str, schema: &Schema) -> std::result::Result<ChildTable, String> {
        let fields = schema.fields();
        if fields.len() < child::FIRST_VALUE || fields[child::SNAPSHOT_UTC].name() != RUN.snapshot_time || fields[child::SERVER_ID].name() != RUN.server_id {
            return Err(format!("its files do not start with the columns {} and {}", RUN.snapshot_time, RUN.server_id));
        }
        let mut cols = Vec::new();
        for f in &fields[child::FIRST_VALUE..] {
            let sql = match f.metadata().get(SQL_TYPE_KEY) {
                // Text whose length the stage's source did not declare (see [`typed_field`]).
                None if f.data_type() == &DataType::Utf8 => Some(SqlType::Text),
                t => t.and_then(|t| SqlType::from_sql_name(t)),
            }
            .filter(|t| &t.arrow_type() == f.data_type())
            .ok_or_else(|| format!("column {} has no SQL type perfcopy wrote for it", f.name()))?;
            cols.push(FoundColumn::new(f.name().clone(), sql, f.is_nullable()).collated(field_collation(f)));
        }
        Ok(ChildTable::discovered(name, cols, None))
    }

    /// Arrow schema of a source read: PerfSnapshotRunID, then the values.
    pub fn source_schema(&self) -> SchemaRef {
        let mut cols = vec![RUN.column(RUN.identity)];
        cols.extend_from_slice(self.values);
        schema_of(&cols)
    }

    /// Columns written into MonitoringDB's table: PerfSnapshotRunID (MonitoringDB's), then the
    /// values (the table's own identity is the target's).
    pub fn target_columns(&self) -> Vec<Column> {
        let mut cols = vec![RUN.column(RUN.identity)];
        cols.extend_from_slice(self.values);
        cols
    }

    /// Arrow schema of [`ChildTable::target_columns`].
    pub fn target_schema(&self) -> SchemaRef {
        schema_of(&self.target_columns())
    }
}

/// Milliseconds in a day: the width of the time buckets the planner tracks overlap in.
pub const MS_PER_DAY: i64 = 86_400_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_columns_drop_run_id_and_make_server_id_required() {
        let names: Vec<_> = target_columns().iter().map(|c| c.name).collect();
        assert_eq!(names.len(), SOURCE_COLUMNS.len() - 1);
        assert!(!names.contains(&"PerfSnapshotRunID"));
        assert_eq!(names[tgt::SERVER_ID], "ServerID");
        assert!(!target_columns()[tgt::SERVER_ID].nullable);
        assert_eq!(names[tgt::FIRST_VALUE], "SqlVersion");
        assert_eq!(names[tgt::SNAPSHOT_UTC], "SnapshotUTC");
    }

    #[test]
    fn positions_come_from_the_description() {
        assert_eq!(SOURCE_COLUMNS[src::RUN_ID].name, "PerfSnapshotRunID");
        assert_eq!(SOURCE_COLUMNS[src::SNAPSHOT_UTC].name, "SnapshotUTC");
        assert_eq!(SOURCE_COLUMNS[src::SERVER_ID].name, "ServerID");
        assert_eq!(SOURCE_COLUMNS[src::SERVER_NAME].name, "ServerName");
        assert_eq!(RUN.sql_name(), "dbo.PerfSnapshotRun");
        assert_eq!(RUN.partition_dir(7), "ServerID=7");
        assert_eq!(RUN.partition_of("ServerID=7"), Some(7));
        assert_eq!(RUN.partition_of("ServerIDX=7"), None);
        assert!(RUN.is_partition_dir("ServerID=x") && !RUN.is_partition_dir("ServerIDs") && !RUN.is_partition_dir("part-0.parquet"));
    }

    #[test]
    fn information_schema_types_map_through_the_one_type_table() {
        let d = |t: &str, p: Option<u8>, s: Option<i32>, l: Option<i32>, dp: Option<i16>| {
            SqlType::from_declared(&DeclaredColumn { data_type: t.into(), precision: p, scale: s, max_chars: l, datetime_precision: dp, collation: None })
        };
        assert_eq!(d("bigint", None, None, None, None), Some(SqlType::BigInt));
        assert_eq!(d("DATETIME2", None, None, None, Some(3)), Some(DATETIME2_3));
        assert_eq!(d("datetime2", None, None, None, Some(3)).map(SqlType::arrow_type), Some(DataType::Timestamp(TimeUnit::Millisecond, None)));
        assert_eq!(d("decimal", Some(9), Some(4), None, None).map(SqlType::arrow_type), Some(DataType::Decimal128(9, 4)));
        assert_eq!(d("nvarchar", None, None, Some(128), None), Some(SqlType::NVarChar(128)));
        assert_eq!(d("nvarchar", None, None, Some(-1), None), Some(SqlType::NVarCharMax));
        assert_eq!(d("varchar", None, None, Some(20), None), Some(SqlType::VarChar(20)));
        assert_eq!(d("binary", None, None, Some(8), None).map(SqlType::arrow_type), Some(DataType::FixedSizeBinary(8)));
        assert_eq!(d("varbinary", None, None, Some(64), None).map(SqlType::arrow_type), Some(DataType::Binary));
        assert_eq!(d("varbinary", None, None, Some(-1), None), Some(SqlType::VarBinaryMax));
        assert_eq!(d("xml", None, None, Some(-1), None).map(SqlType::arrow_type), Some(DataType::Utf8));
        assert!(matches!(d("sql_variant", None, None, None, None).map(SqlType::arrow_type), Some(DataType::Struct(_))));
        assert_eq!(d("geography", None, None, None, None), None);
    }

    #[test]
    fn sql_names_read_back_as_their_types() {
        for t in [
            SqlType::BigInt,
            SqlType::Int,
            SqlType::SmallInt,
            SqlType::TinyInt,
            SqlType::Bit,
            SqlType::Decimal { precision: 18, scale: 2 },
            DATETIME2_3,
            SqlType::DateTime2(7),
            SqlType::NVarChar(120),
            SqlType::NVarCharMax,
            SqlType::VarChar(20),
            SqlType::VarCharMax,
            SqlType::Binary(8),
            SqlType::VarBinary(64),
            SqlType::VarBinaryMax,
            SqlType::Xml,
            SqlType::SqlVariant,
        ] {
            assert_eq!(SqlType::from_sql_name(&t.sql_name()), Some(t), "{}", t.sql_name());
        }
        assert_eq!(SqlType::from_sql_name("GEOGRAPHY"), None);
        assert_eq!(SqlType::from_sql_name("DECIMAL(18"), None);
    }

    #[test]
    fn child_table_types_fit_exactly_or_wider() {
        let d = |t: &str, l: Option<i32>| DeclaredColumn { data_type: t.into(), max_chars: l, ..Default::default() };
        assert_eq!(SqlType::VarBinary(64).fits_in(&d("varbinary", Some(128))), Ok(()));
        assert_eq!(SqlType::VarBinary(64).fits_in(&d("varbinary", Some(-1))), Ok(()));
        assert!(SqlType::VarBinary(64).fits_in(&d("varbinary", Some(32))).unwrap_err().contains("narrower"));
        assert_eq!(SqlType::Binary(8).fits_in(&d("binary", Some(8))), Ok(()));
        assert_eq!(SqlType::Binary(8).fits_in(&d("varbinary", Some(8))), Ok(()));
        assert!(SqlType::Binary(8).fits_in(&d("binary", Some(16))).unwrap_err().contains("padded"));
        assert!(SqlType::VarBinaryMax.fits_in(&d("varbinary", Some(8000))).is_err());
        assert_eq!(SqlType::VarChar(20).fits_in(&d("varchar", Some(50))), Ok(()));
        assert!(SqlType::VarChar(50).fits_in(&d("varchar", Some(20))).is_err());
        assert!(SqlType::VarChar(20).fits_in(&d("nvarchar", Some(50))).is_err());
        assert_eq!(SqlType::VarCharMax.fits_in(&d("varchar", Some(-1))), Ok(()));
        assert_eq!(SqlType::NVarCharMax.fits_in(&d("nvarchar", Some(-1))), Ok(()));
        // Text of undeclared length goes into any text column (its values are checked as they
        // load), but into nothing else.
        for (t, l) in [("nvarchar", Some(16)), ("nvarchar", Some(-1)), ("varchar", Some(10)), ("sysname", Some(128))] {
            assert_eq!(SqlType::Text.fits_in(&d(t, l)), Ok(()), "{t}({l:?})");
        }
        for t in ["xml", "int", "varbinary", "sql_variant"] {
            assert!(SqlType::Text.fits_in(&d(t, Some(-1))).is_err(), "{t}");
        }
        assert!(SqlType::NVarCharMax.fits_in(&d("nvarchar", Some(4000))).is_err());
        assert_eq!(SqlType::Xml.fits_in(&d("xml", Some(-1))), Ok(()));
        assert_eq!(SqlType::SqlVariant.fits_in(&d("sql_variant", None)), Ok(()));
        assert!(SqlType::SqlVariant.fits_in(&d("nvarchar", Some(-1))).is_err());
    }

    #[test]
    fn a_varchar_collation_goes_through_the_stage_schema_and_back() {
        let t = ChildTable::discovered(
            "PerfSnapshotQueryPlans",
            vec![
                FoundColumn::new("PerfSnapshotRunID", SqlType::BigInt, false),
                FoundColumn::new("CaptureReason", SqlType::VarChar(50), true).collated(Some("Cyrillic_General_CI_AS".into())),
                FoundColumn::new("Note", SqlType::VarCharMax, true),
                // NVARCHAR is UTF-16 in any collation: none is kept.
                FoundColumn::new("SqlText", SqlType::NVarCharMax, true).collated(Some("Cyrillic_General_CI_AS".into())),
            ],
            None,
        );
        let collations: Vec<_> = t.values.iter().map(|c| c.collation).collect();
        assert_eq!(collations, [Some("Cyrillic_General_CI_AS"), None, None]);
        let schema = t.keyed_schema();
        assert_eq!(field_collation(schema.field_with_name("CaptureReason").unwrap()).as_deref(), Some("Cyrillic_General_CI_AS"));
        assert_eq!(field_collation(schema.field_with_name("Note").unwrap()), None);
        let back = ChildTable::from_keyed_schema(t.name, &schema).unwrap();
        assert_eq!(back.values.iter().map(|c| c.collation).collect::<Vec<_>>(), collations);
        // A file without the key (another tool's, or written before it) reads without one.
        let plain = Schema::new(schema.fields().iter().map(|f| f.as_ref().clone().with_metadata(std::collections::HashMap::from([(SQL_TYPE_KEY.to_string(), f.metadata()[SQL_TYPE_KEY].clone())]))).collect::<Vec<_>>());
        let back = ChildTable::from_keyed_schema(t.name, &plain).unwrap();
        assert!(back.values.iter().all(|c| c.collation.is_none()));
        assert!(is_collation_name("Latin1_General_100_CI_AS_SC_UTF8") && !is_collation_name("Latin1 General") && !is_collation_name("x;--"));
    }

    #[test]
    fn text_of_undeclared_length_stays_undeclared_through_the_stage_schema() {
        let t = ChildTable::discovered(
            "PerfSnapshotWaitStats",
            vec![FoundColumn::new("PerfSnapshotRunID", SqlType::BigInt, false), FoundColumn::new("WaitType", SqlType::Text, false), FoundColumn::new("Note", SqlType::NVarChar(60), true)],
            None,
        );
        let schema = t.keyed_schema();
        assert_eq!(schema.field_with_name("WaitType").unwrap().metadata().get(SQL_TYPE_KEY), None);
        assert_eq!(schema.field_with_name("Note").unwrap().metadata().get(SQL_TYPE_KEY).map(String::as_str), Some("NVARCHAR(60)"));
        let back = ChildTable::from_keyed_schema(t.name, &schema).unwrap();
        assert_eq!(back.values.iter().map(|c| c.sql).collect::<Vec<_>>(), [SqlType::Text, SqlType::NVarChar(60)]);
        // A column perfcopy creates for it is NVARCHAR(MAX).
        assert_eq!(SqlType::Text.sql_name(), "NVARCHAR(MAX)");
        assert_eq!(SqlType::Text.arrow_type(), DataType::Utf8);
    }

    #[test]
    fn arrow_types_are_exact() {
        let s = source_schema();
        assert_eq!(s.field(src::RUN_ID).data_type(), &DataType::Int64);
        assert_eq!(
            s.field(src::SNAPSHOT_UTC).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert_eq!(s.field(src::SERVER_ID).data_type(), &DataType::Int32);
        assert!(s.field(src::SERVER_ID).is_nullable());
        assert_eq!(s.field_with_name("CpuSignalWaitPct").unwrap().data_type(), &DataType::Decimal128(9, 4));
        assert_eq!(s.field_with_name("TopWaitMsPerSec").unwrap().data_type(), &DataType::Decimal128(18, 4));
        assert_eq!(s.field_with_name("SessionsCount").unwrap().data_type(), &DataType::Int32);
    }
}
