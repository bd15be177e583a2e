//! The PerfSnapshotRun schemas and the SQL Server <-> Arrow type table, in one place.
//!
//! Every other module asks this one for column names, positions and types; nothing else spells
//! a column name or an Arrow type of the data.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// A SQL Server column type that perfcopy reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    BigInt,
    Int,
    /// DATETIME2(3): millisecond precision, values are UTC.
    DateTime2_3,
    Decimal { precision: u8, scale: i8 },
    /// NVARCHAR(n); SYSNAME is NVARCHAR(128).
    NVarChar(u16),
    Bit,
}

impl SqlType {
    /// The exact Arrow type of this SQL type (no widening).
    pub fn arrow_type(self) -> DataType {
        match self {
            SqlType::BigInt => DataType::Int64,
            SqlType::Int => DataType::Int32,
            SqlType::DateTime2_3 => DataType::Timestamp(TimeUnit::Millisecond, None),
            SqlType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            SqlType::NVarChar(_) => DataType::Utf8,
            SqlType::Bit => DataType::Boolean,
        }
    }

    /// The type as it is written in T-SQL DDL.
    pub fn sql_name(self) -> String {
        match self {
            SqlType::BigInt => "BIGINT".into(),
            SqlType::Int => "INT".into(),
            SqlType::DateTime2_3 => "DATETIME2(3)".into(),
            SqlType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            SqlType::NVarChar(n) => format!("NVARCHAR({n})"),
            SqlType::Bit => "BIT".into(),
        }
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
            SqlType::DateTime2_3 => match t {
                "datetime2" if d.datetime_precision.unwrap_or(7) >= 3 => Ok(()),
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
        }
    }
}

/// One column of PerfSnapshotRun.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub sql: SqlType,
    pub nullable: bool,
}

const fn col(name: &'static str, sql: SqlType, nullable: bool) -> Column {
    Column { name, sql, nullable }
}

/// Source table `DBATools.dbo.PerfSnapshotRun`, in table order.
pub const SOURCE_COLUMNS: [Column; 13] = [
    col("PerfSnapshotRunID", SqlType::BigInt, false),
    col("SnapshotUTC", SqlType::DateTime2_3, false),
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

/// Positions in [`SOURCE_COLUMNS`] (and in every batch of [`source_schema`]).
pub mod src {
    pub const RUN_ID: usize = 0;
    pub const SNAPSHOT_UTC: usize = 1;
    pub const SERVER_ID: usize = 2;
    pub const SERVER_NAME: usize = 3;
    /// First of the columns that are copied to the target unchanged (SqlVersion..end).
    pub const FIRST_VALUE: usize = 4;
}

/// Name of the table's folder inside a Parquet stage (and inside an export directory).
pub const TABLE_DIR: &str = "PerfSnapshotRun";

/// The source column that older DBATools tables lack.
pub const OPTIONAL_SOURCE_COLUMN: &str = "ServerID";

/// Target `MonitoringDB.dbo.PerfSnapshotRun` columns that perfcopy writes (the target's own
/// identity `PerfSnapshotRunID` is assigned by the target), in the stage's column order.
pub fn target_columns() -> &'static [Column] {
    static COLS: OnceLock<Vec<Column>> = OnceLock::new();
    COLS.get_or_init(|| {
        let mut cols = vec![
            SOURCE_COLUMNS[src::SNAPSHOT_UTC],
            col("ServerID", SqlType::Int, false),
            SOURCE_COLUMNS[src::SERVER_NAME],
        ];
        cols.extend_from_slice(&SOURCE_COLUMNS[src::FIRST_VALUE..]);
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
        schema_of(&[
            SOURCE_COLUMNS[src::RUN_ID],
            SOURCE_COLUMNS[src::SNAPSHOT_UTC],
            SOURCE_COLUMNS[src::SERVER_NAME],
        ])
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

/// The type table shown in the README: SQL type, Arrow type.
pub fn type_table() -> Vec<(String, String)> {
    [
        SqlType::BigInt,
        SqlType::Int,
        SqlType::DateTime2_3,
        SqlType::Decimal { precision: 9, scale: 4 },
        SqlType::Decimal { precision: 18, scale: 4 },
        SqlType::NVarChar(128),
        SqlType::Bit,
    ]
    .iter()
    .map(|t| (t.sql_name(), format!("{:?}", t.arrow_type())))
    .collect()
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
