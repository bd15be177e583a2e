//! `sys.columns` / `sys.all_columns` and `TYPE_NAME()`, as clients read them before a bulk load
//! (pymssql's `bulk_copy` asks `SELECT column_id, TYPE_NAME(system_type_id) AS
//! system_type_name, is_identity FROM sys.columns WHERE object_id = OBJECT_ID(..)`).
//! Values are SQL Server's for the same column types (system type ids of `sys.types`,
//! `max_length` in bytes, -1 for `(max)`).

use crate::collation::Collation;
use crate::types::{Column, SqlType, Value};

/// The collation of a character column (NVARCHAR's is the server's); `None` for other types
/// (XML has none in `sys.columns`).
pub fn collation_of(t: &SqlType) -> Option<Collation> {
    match t {
        SqlType::VarChar(_, c) => Some(*c),
        SqlType::NVarChar(_) => Some(Collation::DEFAULT),
        _ => None,
    }
}

/// `sys.types.system_type_id` of a type.
pub fn system_type_id(t: &SqlType) -> i64 {
    match t {
        SqlType::TinyInt => 48,
        SqlType::SmallInt => 52,
        SqlType::Int => 56,
        SqlType::BigInt => 127,
        SqlType::Bit => 104,
        SqlType::Decimal { .. } => 106,
        SqlType::Numeric { .. } => 108,
        SqlType::DateTime => 61,
        SqlType::NVarChar(_) => 231,
        SqlType::VarChar(..) => 167,
        SqlType::DateTime2(_) => 42,
        SqlType::Binary(_) => 173,
        SqlType::VarBinary(_) => 165,
        SqlType::Xml => 241,
        SqlType::Float => 62,
        SqlType::SqlVariant => 98,
        SqlType::UniqueIdentifier => 36,
    }
}

/// `TYPE_NAME(id)` for the system types SQL Server has (NULL for an unknown id).
pub fn type_name(id: i64) -> Option<&'static str> {
    Some(match id {
        34 => "image",
        35 => "text",
        36 => "uniqueidentifier",
        40 => "date",
        41 => "time",
        42 => "datetime2",
        43 => "datetimeoffset",
        48 => "tinyint",
        52 => "smallint",
        56 => "int",
        58 => "smalldatetime",
        59 => "real",
        60 => "money",
        61 => "datetime",
        62 => "float",
        98 => "sql_variant",
        99 => "ntext",
        104 => "bit",
        106 => "decimal",
        108 => "numeric",
        122 => "smallmoney",
        127 => "bigint",
        165 => "varbinary",
        167 => "varchar",
        173 => "binary",
        175 => "char",
        189 => "timestamp",
        231 => "nvarchar",
        239 => "nchar",
        241 => "xml",
        256 => "sysname",
        _ => return None,
    })
}

/// (max_length in bytes, precision, scale) as `sys.columns` reports them.
fn length_precision_scale(t: &SqlType) -> (i64, i64, i64) {
    match *t {
        SqlType::TinyInt => (1, 3, 0),
        SqlType::SmallInt => (2, 5, 0),
        SqlType::Int => (4, 10, 0),
        SqlType::BigInt => (8, 19, 0),
        SqlType::Bit => (1, 1, 0),
        SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => {
            let len = match precision {
                0..=9 => 5,
                10..=19 => 9,
                20..=28 => 13,
                _ => 17,
            };
            (len, precision as i64, scale as i64)
        }
        SqlType::NVarChar(n) => (n.map(|n| 2 * n as i64).unwrap_or(-1), 0, 0),
        SqlType::VarChar(n, _) | SqlType::VarBinary(n) => (n.map(|n| n as i64).unwrap_or(-1), 0, 0),
        SqlType::Binary(n) => (n as i64, 0, 0),
        SqlType::Xml => (-1, 0, 0),
        SqlType::Float => (8, 53, 0),
        SqlType::SqlVariant => (crate::wire::VARIANT_MAX as i64, 0, 0),
        SqlType::UniqueIdentifier => (16, 0, 0),
        SqlType::DateTime => (8, 23, 3),
        SqlType::DateTime2(s) => (if s <= 2 { 6 } else if s <= 4 { 7 } else { 8 }, if s == 0 { 19 } else { 20 + s as i64 }, s as i64),
    }
}

/// The columns of the `sys.columns` view (a subset of SQL Server's, same names, order and types).
pub fn view_columns() -> Vec<Column> {
    vec![
        Column::new("object_id", SqlType::Int, false),
        Column::new("name", SqlType::NVarChar(Some(128)), true),
        Column::new("column_id", SqlType::Int, false),
        Column::new("system_type_id", SqlType::TinyInt, false),
        Column::new("user_type_id", SqlType::Int, false),
        Column::new("max_length", SqlType::SmallInt, false),
        Column::new("precision", SqlType::TinyInt, false),
        Column::new("scale", SqlType::TinyInt, false),
        Column::new("collation_name", SqlType::NVarChar(Some(128)), true),
        Column::new("is_nullable", SqlType::Bit, true),
        Column::new("is_ansi_padded", SqlType::Bit, false),
        Column::new("is_rowguidcol", SqlType::Bit, false),
        Column::new("is_identity", SqlType::Bit, false),
        Column::new("is_computed", SqlType::Bit, false),
    ]
}

/// The `sys.columns` rows of one table.
pub fn view_rows(object_id: i32, columns: &[Column]) -> Vec<Vec<Value>> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (len, precision, scale) = length_precision_scale(&c.ty);
            let collation = collation_of(&c.ty);
            let padded = matches!(c.ty, SqlType::NVarChar(_) | SqlType::VarChar(..) | SqlType::Binary(_) | SqlType::VarBinary(_));
            let id = system_type_id(&c.ty);
            vec![
                Value::Int(object_id as i64),
                Value::Str(c.name.clone()),
                Value::Int(i as i64 + 1),
                Value::Int(id),
                Value::Int(id),
                Value::Int(len),
                Value::Int(precision),
                Value::Int(scale),
                collation.map_or(Value::Null, |c| Value::Str(c.name())),
                Value::Bool(c.nullable),
                Value::Bool(padded),
                Value::Bool(false),
                Value::Bool(c.identity),
                Value::Bool(false),
            ]
        })
        .collect()
}

/// `sp_tablecollations_100 N'table'` as SQL Server answers it: one row per column (colid,
/// name, tds_collation, collation), the collation NULL for non-character columns.
/// Deviation: SQL Server's tds_collation is BINARY(5), a type this server cannot send; it
/// is NVARCHAR(10) holding the 5 bytes in hex here (clients read the collation name).
pub fn table_collations(columns: &[Column]) -> (Vec<crate::wire::OutCol>, Vec<Vec<Value>>) {
    let out = |name: &str, ty, nullable| crate::wire::OutCol { name: name.into(), ty, nullable, identity: false };
    let meta = vec![out("colid", SqlType::Int, false), out("name", SqlType::NVarChar(Some(128)), false), out("tds_collation", SqlType::NVarChar(Some(10)), true), out("collation", SqlType::NVarChar(Some(128)), true)];
    let rows = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let collation = collation_of(&c.ty);
            vec![
                Value::Int(i as i64 + 1),
                Value::Str(c.name.clone()),
                collation.map_or(Value::Null, |c| Value::Str(c.hex())),
                collation.map_or(Value::Null, |c| Value::Str(c.name())),
            ]
        })
        .collect();
    (meta, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_sql_servers() {
        // SQL Server: DECIMAL(9,4) 5 bytes, DECIMAL(18,4) 9, DATETIME2(3) 7 bytes precision 23,
        // NVARCHAR(128) 256 bytes, NVARCHAR(MAX) -1.
        assert_eq!(length_precision_scale(&SqlType::Decimal { precision: 9, scale: 4 }), (5, 9, 4));
        assert_eq!(length_precision_scale(&SqlType::Decimal { precision: 18, scale: 4 }), (9, 18, 4));
        assert_eq!(length_precision_scale(&SqlType::DateTime2(3)), (7, 23, 3));
        assert_eq!(length_precision_scale(&SqlType::DateTime2(7)), (8, 27, 7));
        assert_eq!(length_precision_scale(&SqlType::NVarChar(Some(128))), (256, 0, 0));
        assert_eq!(length_precision_scale(&SqlType::NVarChar(None)), (-1, 0, 0));
        // BINARY(8) 8 bytes, VARBINARY(MAX) and XML -1, SQL_VARIANT 8016, FLOAT 8 bytes precision 53.
        assert_eq!(length_precision_scale(&SqlType::Binary(8)), (8, 0, 0));
        assert_eq!(length_precision_scale(&SqlType::VarBinary(None)), (-1, 0, 0));
        assert_eq!(length_precision_scale(&SqlType::Xml), (-1, 0, 0));
        assert_eq!(length_precision_scale(&SqlType::SqlVariant), (8016, 0, 0));
        assert_eq!(length_precision_scale(&SqlType::Float), (8, 53, 0));
        let cyrillic = Collation::from_name("Cyrillic_General_CI_AS").unwrap();
        assert_eq!(view_rows(1, &[Column::new("v", SqlType::VarChar(Some(20), cyrillic), true)])[0][8], Value::Str("Cyrillic_General_CI_AS".into()));
        for t in [SqlType::Int, SqlType::BigInt, SqlType::NVarChar(None), SqlType::DateTime2(3), SqlType::Decimal { precision: 9, scale: 4 }, SqlType::Binary(8), SqlType::VarBinary(Some(64)), SqlType::Xml, SqlType::SqlVariant, SqlType::Float, SqlType::varchar(None), SqlType::UniqueIdentifier] {
            assert_eq!(type_name(system_type_id(&t)), Some(t.data_type_name()));
        }
    }
}
