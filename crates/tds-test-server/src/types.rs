//! SQL types, values and the SQL <-> Arrow mapping used by the in-memory tables.

use std::cmp::Ordering;
use std::fmt;

use arrow::datatypes::{DataType, TimeUnit};
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

use crate::collation::Collation;
use crate::error::SqlError;

/// 100 ns ticks in one day.
pub const TICKS_PER_DAY: i64 = 864_000_000_000;
/// Days from 0001-01-01 to 1970-01-01.
pub const EPOCH_DAYS: i64 = 719_162;
/// 100 ns ticks from 0001-01-01 to 1970-01-01.
pub const EPOCH_TICKS: i64 = EPOCH_DAYS * TICKS_PER_DAY;

/// A column's SQL Server type (the subset the test server stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// TINYINT (only in virtual tables such as INFORMATION_SCHEMA.COLUMNS).
    TinyInt,
    /// SMALLINT.
    SmallInt,
    /// INT.
    Int,
    /// BIGINT.
    BigInt,
    /// BIT.
    Bit,
    /// DECIMAL(p,s).
    Decimal {
        /// Total digits, 1..=38.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// NUMERIC(p,s): the same values as DECIMAL(p,s), described as NUMERICN (0x6C) on the wire
    /// and as `numeric` in INFORMATION_SCHEMA, as SQL Server keeps the declared name.
    Numeric {
        /// Total digits, 1..=38.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// NVARCHAR(n) with n in characters; `None` is NVARCHAR(MAX). SYSNAME is NVARCHAR(128).
    NVarChar(Option<u16>),
    /// VARCHAR(n) with n in bytes of its collation's code page; `None` is VARCHAR(MAX).
    VarChar(Option<u16>, Collation),
    /// BINARY(n): values of exactly n bytes (shorter ones are padded with zeros).
    Binary(u16),
    /// VARBINARY(n); `None` is VARBINARY(MAX).
    VarBinary(Option<u16>),
    /// XML: UTF-16 text, always PLP on the wire (stored as text, not parsed).
    Xml,
    /// FLOAT (FLOAT(53), 8 bytes).
    Float,
    /// SQL_VARIANT: a value with its base type ([`Variant`]), at most 8016 bytes.
    SqlVariant,
    /// UNIQUEIDENTIFIER: 16 bytes as SQL Server stores and sends them (the first three groups
    /// little endian, MS-TDS 2.2.5.5.1.6).
    UniqueIdentifier,
    /// DATETIME2(scale), scale 0..=7.
    DateTime2(u8),
    /// DATETIME: 1753-01-01..9999-12-31, time in 1/300 s (values rounded to .000/.003/.007 s);
    /// DATETIME (0x3D) / DATETIMN(8) (0x6F) on the wire.
    DateTime,
}

impl SqlType {
    /// The Arrow type a column of this type is read back as.
    ///
    /// DATETIME2(0..=3) is `Timestamp(Millisecond)`; DATETIME2(4..=7) is `Timestamp(Microsecond)`
    /// (Arrow's nanosecond range would not cover year 1..9999; the 7th digit is dropped).
    pub fn arrow_type(&self) -> DataType {
        match *self {
            SqlType::TinyInt => DataType::UInt8,
            SqlType::SmallInt => DataType::Int16,
            SqlType::Int => DataType::Int32,
            SqlType::BigInt => DataType::Int64,
            SqlType::Bit => DataType::Boolean,
            SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => DataType::Decimal128(precision, scale as i8),
            SqlType::NVarChar(_) | SqlType::VarChar(..) | SqlType::Xml => DataType::Utf8,
            SqlType::Binary(n) => DataType::FixedSizeBinary(n as i32),
            SqlType::UniqueIdentifier => DataType::FixedSizeBinary(16),
            SqlType::VarBinary(_) => DataType::Binary,
            SqlType::Float => DataType::Float64,
            // The value's TDS bytes (base type, property count, properties, data; MS-TDS
            // 2.2.5.5.4): the test server's lossless form of a variant.
            SqlType::SqlVariant => DataType::Binary,
            SqlType::DateTime => DataType::Timestamp(TimeUnit::Millisecond, None),
            SqlType::DateTime2(s) if s <= 3 => DataType::Timestamp(TimeUnit::Millisecond, None),
            SqlType::DateTime2(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }

    /// The SQL name as INFORMATION_SCHEMA.COLUMNS.DATA_TYPE spells it.
    pub fn data_type_name(&self) -> &'static str {
        match self {
            SqlType::TinyInt => "tinyint",
            SqlType::SmallInt => "smallint",
            SqlType::Int => "int",
            SqlType::BigInt => "bigint",
            SqlType::Bit => "bit",
            SqlType::Decimal { .. } => "decimal",
            SqlType::Numeric { .. } => "numeric",
            SqlType::DateTime => "datetime",
            SqlType::NVarChar(_) => "nvarchar",
            SqlType::VarChar(..) => "varchar",
            SqlType::DateTime2(_) => "datetime2",
            SqlType::Binary(_) => "binary",
            SqlType::VarBinary(_) => "varbinary",
            SqlType::Xml => "xml",
            SqlType::Float => "float",
            SqlType::SqlVariant => "sql_variant",
            SqlType::UniqueIdentifier => "uniqueidentifier",
        }
    }

    /// The full SQL spelling, e.g. `decimal(9,4)`, `nvarchar(max)`.
    pub fn sql_name(&self) -> String {
        match *self {
            SqlType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            SqlType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            SqlType::NVarChar(Some(n)) => format!("nvarchar({n})"),
            SqlType::NVarChar(None) => "nvarchar(max)".into(),
            SqlType::VarChar(Some(n), _) => format!("varchar({n})"),
            SqlType::VarChar(None, _) => "varchar(max)".into(),
            SqlType::Binary(n) => format!("binary({n})"),
            SqlType::VarBinary(Some(n)) => format!("varbinary({n})"),
            SqlType::VarBinary(None) => "varbinary(max)".into(),
            SqlType::DateTime2(s) => format!("datetime2({s})"),
            other => other.data_type_name().into(),
        }
    }
}

/// Default of a column when an INSERT does not name it.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnDefault {
    /// A constant.
    Value(Value),
    /// GETUTCDATE() / SYSUTCDATETIME() / GETDATE(): the insert time (UTC).
    Now,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Name as declared.
    pub name: String,
    /// SQL type.
    pub ty: SqlType,
    /// NULL allowed.
    pub nullable: bool,
    /// IDENTITY(1,1).
    pub identity: bool,
    /// DEFAULT.
    pub default: Option<ColumnDefault>,
}

impl Column {
    /// A column without identity or default.
    pub fn new(name: &str, ty: SqlType, nullable: bool) -> Self {
        Column { name: name.to_string(), ty, nullable, identity: false, default: None }
    }
    /// Marks the column IDENTITY(1,1).
    pub fn identity(mut self) -> Self {
        self.identity = true;
        self
    }
    /// Sets a default.
    pub fn default(mut self, d: ColumnDefault) -> Self {
        self.default = Some(d);
        self
    }
}

/// A stored or computed value.
///
/// Integers of every width are `Int`; DATETIME2 is 100 ns ticks since 0001-01-01 00:00.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// BIT.
    Bool(bool),
    /// TINYINT/SMALLINT/INT/BIGINT.
    Int(i64),
    /// DECIMAL: `mantissa / 10^scale`.
    Decimal {
        /// Unscaled value.
        mantissa: i128,
        /// Scale.
        scale: u8,
    },
    /// FLOAT (only as a parameter or literal).
    Float(f64),
    /// NVARCHAR/VARCHAR/XML text.
    Str(String),
    /// DATETIME2 as 100 ns ticks since 0001-01-01 00:00:00.
    DateTime2(i64),
    /// BINARY/VARBINARY bytes.
    Bytes(Vec<u8>),
    /// A SQL_VARIANT value: never NULL inside (a NULL variant is [`Value::Null`]).
    Variant(Box<Variant>),
}

/// A SQL_VARIANT's base type and its value (already of that type, see [`Value::coerce`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// One of the base types SQL Server stores in a variant: the integers, BIT, FLOAT,
    /// DECIMAL/NUMERIC, DATETIME, DATETIME2, VARCHAR(n) with its collation, NVARCHAR(n),
    /// BINARY(n), VARBINARY(n), UNIQUEIDENTIFIER (no MAX types, no XML, no variant).
    pub base: SqlType,
    /// The value (not NULL).
    pub value: Value,
}

impl SqlType {
    /// True for a type a SQL_VARIANT can hold.
    pub fn is_variant_base(&self) -> bool {
        !matches!(self, SqlType::NVarChar(None) | SqlType::VarChar(None, _) | SqlType::VarBinary(None) | SqlType::Xml | SqlType::SqlVariant)
    }

    /// The VARCHAR type of `n` bytes in the server's default collation.
    pub fn varchar(n: Option<u16>) -> SqlType {
        SqlType::VarChar(n, Collation::DEFAULT)
    }
}

impl Value {
    /// True for NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A DATETIME2 value from a chrono timestamp (UTC, no zone).
    pub fn from_naive(dt: NaiveDateTime) -> Value {
        let days = dt.date().num_days_from_ce() as i64 - 1;
        let t = dt.time();
        let ticks = t.num_seconds_from_midnight() as i64 * 10_000_000 + (t.nanosecond() as i64 / 100);
        Value::DateTime2(days * TICKS_PER_DAY + ticks)
    }

    /// The current UTC time as DATETIME2.
    pub fn now() -> Value {
        Value::from_naive(chrono::Utc::now().naive_utc())
    }

    /// Ticks to a chrono timestamp (for messages and tests).
    pub fn ticks_to_naive(ticks: i64) -> Option<NaiveDateTime> {
        let days = ticks.div_euclid(TICKS_PER_DAY);
        let rem = ticks.rem_euclid(TICKS_PER_DAY);
        let date = NaiveDate::from_num_days_from_ce_opt(i32::try_from(days + 1).ok()?)?;
        let secs = (rem / 10_000_000) as u32;
        let nanos = ((rem % 10_000_000) * 100) as u32;
        let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)?;
        Some(NaiveDateTime::new(date, time))
    }

    fn as_decimal(&self) -> Option<(i128, u8)> {
        match *self {
            Value::Int(i) => Some((i as i128, 0)),
            Value::Bool(b) => Some((b as i128, 0)),
            Value::Decimal { mantissa, scale } => Some((mantissa, scale)),
            _ => None,
        }
    }

    /// SQL comparison; `None` when either side is NULL or the types do not compare.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        if self.is_null() || other.is_null() {
            return None;
        }
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => Some(cmp_ci(a, b)),
            (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
            (Value::Variant(a), b) => a.value.sql_cmp(b),
            (a, Value::Variant(b)) => a.sql_cmp(&b.value),
            (Value::DateTime2(a), Value::DateTime2(b)) => Some(a.cmp(b)),
            (Value::DateTime2(a), Value::Str(s)) => parse_datetime(s).map(|b| a.cmp(&b)),
            (Value::Str(s), Value::DateTime2(b)) => parse_datetime(s).map(|a| a.cmp(b)),
            (Value::Float(a), b) => b.as_f64().and_then(|b| a.partial_cmp(&b)),
            (a, Value::Float(b)) => a.as_f64().and_then(|a| a.partial_cmp(b)),
            (a, b) => {
                let (ma, sa) = a.as_decimal()?;
                let (mb, sb) = b.as_decimal()?;
                let s = sa.max(sb);
                let ma = ma.checked_mul(10i128.checked_pow((s - sa) as u32)?)?;
                let mb = mb.checked_mul(10i128.checked_pow((s - sb) as u32)?)?;
                Some(ma.cmp(&mb))
            }
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(f) => Some(f),
            _ => self.as_decimal().map(|(m, s)| m as f64 / 10f64.powi(s as i32)),
        }
    }

    /// Ordering for ORDER BY: NULL first, then SQL order; incomparable values keep their order.
    pub fn order_cmp(&self, other: &Value) -> Ordering {
        match (self.is_null(), other.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => self.sql_cmp(other).unwrap_or(Ordering::Equal),
        }
    }

    /// Converts the value to be stored in (or compared as) a column of type `ty`, like SQL
    /// Server's implicit conversion on INSERT/UPDATE. `col` names the column for messages.
    pub fn coerce(self, ty: &SqlType, col: &str) -> Result<Value, SqlError> {
        let overflow = |what: &str| {
            SqlError::new(8115, format!("Arithmetic overflow error converting {what} to data type {} (column '{col}').", ty.sql_name()))
        };
        let conv_fail = |v: &Value| {
            SqlError::new(245, format!("Conversion failed when converting the value {v} to data type {} (column '{col}').", ty.sql_name()))
        };
        match (self, ty) {
            (Value::Null, _) => Ok(Value::Null),
            (v @ (Value::Int(_) | Value::Bool(_) | Value::Decimal { .. } | Value::Float(_)), SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt) => {
                let i = match v {
                    Value::Int(i) => i,
                    Value::Bool(b) => b as i64,
                    Value::Float(f) => f.trunc() as i64,
                    Value::Decimal { mantissa, scale } => {
                        let d = 10i128.pow(scale as u32);
                        i64::try_from(mantissa / d).map_err(|_| overflow("numeric"))?
                    }
                    _ => unreachable!("matched above"),
                };
                let (lo, hi) = match ty {
                    SqlType::TinyInt => (0, 255),
                    SqlType::SmallInt => (i16::MIN as i64, i16::MAX as i64),
                    SqlType::Int => (i32::MIN as i64, i32::MAX as i64),
                    _ => (i64::MIN, i64::MAX),
                };
                if i < lo || i > hi {
                    return Err(overflow("expression"));
                }
                Ok(Value::Int(i))
            }
            (Value::Bool(b), SqlType::Bit) => Ok(Value::Bool(b)),
            (Value::Int(i), SqlType::Bit) => Ok(Value::Bool(i != 0)),
            (Value::Str(s), SqlType::Bit) if s.eq_ignore_ascii_case("true") || s == "1" => Ok(Value::Bool(true)),
            (Value::Str(s), SqlType::Bit) if s.eq_ignore_ascii_case("false") || s == "0" => Ok(Value::Bool(false)),
            (v @ (Value::Int(_) | Value::Bool(_) | Value::Decimal { .. }), SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale }) => {
                let (m, s) = v.as_decimal().ok_or_else(|| conv_fail(&v))?;
                let m = rescale(m, s, *scale).ok_or_else(|| overflow("numeric"))?;
                if m.unsigned_abs() >= 10u128.pow(*precision as u32) {
                    return Err(overflow("numeric"));
                }
                Ok(Value::Decimal { mantissa: m, scale: *scale })
            }
            (Value::Float(f), SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale }) => {
                let m = (f * 10f64.powi(*scale as i32)).round();
                if !m.is_finite() || m.abs() >= 10f64.powi(*precision as i32) {
                    return Err(overflow("float"));
                }
                Ok(Value::Decimal { mantissa: m as i128, scale: *scale })
            }
            (Value::Str(s), SqlType::Decimal { .. } | SqlType::Numeric { .. }) => {
                let v = parse_decimal_literal(s.trim()).ok_or_else(|| conv_fail(&Value::Str(s.clone())))?;
                v.coerce(ty, col)
            }
            (Value::Str(s), SqlType::NVarChar(max)) => {
                if let Some(max) = max {
                    let len = s.chars().count();
                    if len > *max as usize {
                        let cut: String = s.chars().take(*max as usize).collect();
                        return Err(truncated(col, &cut));
                    }
                }
                Ok(Value::Str(s))
            }
            // Text goes into the column's code page; a character it lacks becomes '?', as SQL
            // Server converts. The length counts bytes.
            (Value::Str(s), SqlType::VarChar(max, coll)) => {
                let bytes = coll.encode_lossy(&s).map_err(|e| SqlError::new(459, format!("Column '{col}': {e}.")))?;
                if let Some(max) = max {
                    if bytes.len() > *max as usize {
                        return Err(truncated(col, &coll.decode(&bytes[..*max as usize]).unwrap_or_default()));
                    }
                }
                coll.decode(&bytes).map(Value::Str).map_err(|e| SqlError::new(459, format!("Column '{col}': {e}.")))
            }
            (Value::Str(s), SqlType::Xml) => Ok(Value::Str(s)),
            (v @ (Value::Int(_) | Value::Decimal { .. } | Value::Bool(_) | Value::Float(_) | Value::DateTime2(_)), SqlType::NVarChar(_) | SqlType::VarChar(..)) => {
                Value::Str(v.to_string()).coerce(ty, col)
            }
            (Value::Bytes(b), SqlType::Binary(n)) => {
                if b.len() > *n as usize {
                    return Err(truncated(col, &Value::Bytes(b[..*n as usize].to_vec()).to_string()));
                }
                let mut b = b;
                b.resize(*n as usize, 0);
                Ok(Value::Bytes(b))
            }
            (Value::Bytes(b), SqlType::VarBinary(max)) => {
                if let Some(max) = max {
                    if b.len() > *max as usize {
                        return Err(truncated(col, &Value::Bytes(b[..*max as usize].to_vec()).to_string()));
                    }
                }
                Ok(Value::Bytes(b))
            }
            (Value::Bytes(b), SqlType::UniqueIdentifier) if b.len() == 16 => Ok(Value::Bytes(b)),
            (v @ (Value::Int(_) | Value::Decimal { .. } | Value::Bool(_)), SqlType::Float) => v.as_f64().map(Value::Float).ok_or_else(|| conv_fail(&v)),
            (Value::Float(f), SqlType::Float) => Ok(Value::Float(f)),
            (Value::Variant(v), SqlType::SqlVariant) => {
                let Variant { base, value } = *v;
                if !base.is_variant_base() {
                    return Err(SqlError::new(206, format!("Operand type clash: {} is incompatible with sql_variant (column '{col}').", base.sql_name())));
                }
                let value = value.coerce(&base, col)?;
                if value.is_null() {
                    return Ok(Value::Null);
                }
                Ok(Value::Variant(Box::new(Variant { base, value })))
            }
            // A value of another type becomes a variant of its own type, as SQL Server converts.
            (v, SqlType::SqlVariant) => {
                let base = match &v {
                    Value::Int(i) if i32::try_from(*i).is_ok() => SqlType::Int,
                    Value::Int(_) => SqlType::BigInt,
                    Value::Bool(_) => SqlType::Bit,
                    Value::Decimal { mantissa, scale } => {
                        let digits = mantissa.unsigned_abs().to_string().len() as u8;
                        SqlType::Decimal { precision: digits.max(*scale + 1).min(38), scale: *scale }
                    }
                    Value::Float(_) => SqlType::Float,
                    Value::Str(s) => SqlType::NVarChar(Some(s.encode_utf16().count().clamp(1, 4000) as u16)),
                    Value::DateTime2(_) => SqlType::DateTime2(7),
                    Value::Bytes(b) => SqlType::VarBinary(Some(b.len().clamp(1, 8000) as u16)),
                    Value::Null | Value::Variant(_) => unreachable!("matched above"),
                };
                Value::Variant(Box::new(Variant { base, value: v })).coerce(ty, col)
            }
            // CAST(variant AS type): its value converted.
            (Value::Variant(v), _) => v.value.coerce(ty, col),
            (Value::DateTime2(t), SqlType::DateTime2(scale)) => Ok(Value::DateTime2(round_ticks(t, *scale))),
            (Value::DateTime2(t), SqlType::DateTime) => datetime_value(t).ok_or_else(|| SqlError::new(242, format!("The conversion of a datetime2 data type to a datetime data type resulted in an out-of-range value (column '{col}')."))),
            (Value::Str(s), SqlType::DateTime) => {
                let t = parse_datetime(&s).ok_or_else(|| SqlError::new(241, format!("Conversion failed when converting date and/or time from character string '{s}'.")))?;
                datetime_value(t).ok_or_else(|| SqlError::new(242, format!("The conversion of a varchar data type to a datetime data type resulted in an out-of-range value (column '{col}').")))
            }
            (Value::Str(s), SqlType::DateTime2(scale)) => {
                let t = parse_datetime(&s).ok_or_else(|| SqlError::new(241, format!("Conversion failed when converting date and/or time from character string '{s}'.")))?;
                Ok(Value::DateTime2(round_ticks(t, *scale)))
            }
            (v, _) => Err(conv_fail(&v)),
        }
    }
}

/// Error 2628 for a value cut to `cut`.
fn truncated(col: &str, cut: &str) -> SqlError {
    SqlError::new(2628, format!("String or binary data would be truncated in column '{col}'. Truncated value: '{cut}'."))
}

/// Days from 0001-01-01 to 1900-01-01, DATETIME's day 0.
pub const DAYS_1900: i64 = 693_595;
/// DATETIME's 1/300 s ticks in a day.
pub const DATETIME_TICKS_PER_DAY: i64 = 300 * 86_400;

/// DATETIME's (days since 1900-01-01, 1/300 s of the day) for 100 ns ticks, rounded to the
/// nearest 1/300 s as SQL Server rounds (.0015 s up); `None` outside 1753-01-01..9999-12-31.
pub fn datetime_parts(t: i64) -> Option<(i32, u32)> {
    let mut days = t.div_euclid(TICKS_PER_DAY) - DAYS_1900;
    let mut ticks = (t.rem_euclid(TICKS_PER_DAY) * 3 + 50_000) / 100_000;
    if ticks == DATETIME_TICKS_PER_DAY {
        days += 1;
        ticks = 0;
    }
    // 1753-01-01 is day -53690; 9999-12-31 is day 2958463.
    (-53_690..=2_958_463).contains(&days).then_some((days as i32, ticks as u32))
}

/// 100 ns ticks of DATETIME parts (the 1/300 s rounded to the nearest 100 ns).
pub fn datetime_ticks(days: i32, ticks: u32) -> i64 {
    (DAYS_1900 + days as i64) * TICKS_PER_DAY + (ticks as i64 * 100_000 + 1) / 3
}

/// A value stored in a DATETIME column: rounded to 1/300 s, range-checked.
fn datetime_value(t: i64) -> Option<Value> {
    datetime_parts(t).map(|(d, k)| Value::DateTime2(datetime_ticks(d, k)))
}

/// Rounds 100 ns ticks to `scale` fractional digits (half away from zero, like SQL Server).
pub fn round_ticks(t: i64, scale: u8) -> i64 {
    let unit = 10i64.pow(7 - scale.min(7) as u32);
    let q = t.div_euclid(unit);
    let r = t.rem_euclid(unit);
    if r * 2 >= unit { (q + 1) * unit } else { q * unit }
}

/// Rescales a decimal mantissa, rounding half away from zero when the scale shrinks.
pub fn rescale(m: i128, from: u8, to: u8) -> Option<i128> {
    if to >= from {
        m.checked_mul(10i128.checked_pow((to - from) as u32)?)
    } else {
        let d = 10i128.checked_pow((from - to) as u32)?;
        let q = m / d;
        let r = (m % d).abs();
        Some(if r * 2 >= d { q + m.signum() } else { q })
    }
}

/// Parses `-123.4500` into a decimal value (no exponent).
pub fn parse_decimal_literal(s: &str) -> Option<Value> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || int.len() + frac.len() > 38 {
        return None;
    }
    let mut m: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        m = m.checked_mul(10)?.checked_add((b - b'0') as i128)?;
    }
    Some(Value::Decimal { mantissa: if neg { -m } else { m }, scale: frac.len() as u8 })
}

/// Parses `YYYY-MM-DD[( |T)HH:MM[:SS[.fffffff]]]` into DATETIME2 ticks.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, ""),
    };
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let mut ticks = (d.num_days_from_ce() as i64 - 1) * TICKS_PER_DAY;
    if !time.is_empty() {
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let parts: Vec<&str> = hms.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 || frac.len() > 7 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let h: i64 = parts[0].parse().ok()?;
        let m: i64 = parts[1].parse().ok()?;
        let sec: i64 = if parts.len() == 3 { parts[2].parse().ok()? } else { 0 };
        if h > 23 || m > 59 || sec > 59 {
            return None;
        }
        let mut f: i64 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
        for _ in frac.len()..7 {
            f *= 10;
        }
        ticks += (h * 3600 + m * 60 + sec) * 10_000_000 + f;
    }
    Some(ticks)
}

/// Case-insensitive comparison, like the default SQL_Latin1_General_CP1_CI_AS collation (approximately).
pub fn cmp_ci(a: &str, b: &str) -> Ordering {
    let la = a.chars().flat_map(char::to_lowercase);
    let lb = b.chars().flat_map(char::to_lowercase);
    la.cmp(lb)
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Bool(b) => write!(f, "{}", *b as u8),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Decimal { mantissa, scale } => {
                let neg = *mantissa < 0;
                let digits = mantissa.unsigned_abs().to_string();
                let scale = *scale as usize;
                let digits = if digits.len() <= scale { format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits) } else { digits };
                let (i, fr) = digits.split_at(digits.len() - scale);
                write!(f, "{}{}{}{}", if neg { "-" } else { "" }, i, if scale > 0 { "." } else { "" }, fr)
            }
            Value::Str(s) => write!(f, "{s}"),
            Value::Bytes(b) => {
                write!(f, "0x")?;
                b.iter().try_for_each(|x| write!(f, "{x:02X}"))
            }
            Value::Variant(v) => write!(f, "{}", v.value),
            Value::DateTime2(t) => match Value::ticks_to_naive(*t) {
                // chrono has no 7-digit fraction specifier (`%.7f` makes formatting fail): the
                // 100 ns ticks are written by hand, as SQL Server shows DATETIME2(7).
                Some(dt) => write!(f, "{}.{:07}", dt.format("%Y-%m-%d %H:%M:%S"), chrono::Timelike::nanosecond(&dt) / 100),
                None => write!(f, "<datetime2 {t}>"),
            },
        }
    }
}

#[cfg(test)]
mod display_tests {
    use super::Value;

    /// Regression: `%.7f` made chrono's formatting fail, which panicked the statement thread
    /// whenever a DATETIME2 value was shown (e.g. comparing a column with a string literal).
    #[test]
    fn datetime2_displays_with_seven_fraction_digits() {
        let v = Value::from_naive(chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap().and_hms_milli_opt(1, 2, 3, 456).unwrap());
        assert_eq!(v.to_string(), "2024-03-01 01:02:03.4560000");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_ticks_match_chrono() {
        let dt = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap().and_hms_milli_opt(13, 14, 15, 678).unwrap();
        let Value::DateTime2(t) = Value::from_naive(dt) else { panic!() };
        assert_eq!(Value::ticks_to_naive(t), Some(dt));
        assert_eq!(parse_datetime("2024-02-29 13:14:15.678"), Some(t));
        // 1970-01-01 is EPOCH_TICKS by definition.
        assert_eq!(parse_datetime("1970-01-01"), Some(EPOCH_TICKS));
    }

    #[test]
    fn decimal_coercion_rounds_and_checks_precision() {
        let ty = SqlType::Decimal { precision: 9, scale: 4 };
        assert_eq!(Value::Decimal { mantissa: 123456, scale: 5 }.coerce(&ty, "c").unwrap(), Value::Decimal { mantissa: 12346, scale: 4 });
        assert_eq!(Value::Int(99999).coerce(&ty, "c").unwrap(), Value::Decimal { mantissa: 999990000, scale: 4 });
        assert_eq!(Value::Int(100000).coerce(&ty, "c").unwrap_err().number, 8115);
        assert_eq!(Value::Decimal { mantissa: -5, scale: 1 }.to_string(), "-0.5");
    }
}
