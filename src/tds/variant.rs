//! SQL_VARIANT values (MS-TDS 2.2.5.5.4: base type byte, property byte count, properties,
//! data) to and from perfcopy's lossless representation, the Arrow struct
//! `{base_type: Utf8, value: Utf8}` of [`crate::schema::SqlType::SqlVariant`]:
//!
//! - `base_type` is the base type with its properties as T-SQL writes it, lowercase: `tinyint`,
//!   `smallint`, `int`, `bigint`, `bit`, `real`, `float`, `smallmoney`, `money`,
//!   `decimal(p,s)`, `numeric(p,s)`, `date`, `time(s)`, `datetime2(s)`, `datetimeoffset(s)`,
//!   `smalldatetime`, `datetime`, `uniqueidentifier`, `binary(n)`, `varbinary(n)`; the
//!   character types carry their collation as its 5 TDS bytes: `varchar(n) collate 0x0904D00034`
//!   (also `char`, `nvarchar`, `nchar`), so the bytes (and the code page) come back exactly.
//! - `value` is canonical text: integers in decimal; `bit` `0`/`1`; `real`/`float` the shortest
//!   text that reads back as the same number; money and decimals with exactly their scale's
//!   digits; `date` `YYYY-MM-DD`, `time(s)` `hh:mm:ss` plus `s` digits, `datetime2(s)`
//!   `YYYY-MM-DDThh:mm:ss` plus `s` digits, `datetimeoffset(s)` the same in local time plus
//!   `+hh:mm`, `datetime` with 3 digits (its 1/300 s ticks, rounded as SQL Server shows them;
//!   each tick has its own text), `smalldatetime` `YYYY-MM-DDThh:mm:00`; GUIDs as SQL Server
//!   shows them (uppercase, `8-4-4-4-12`); binary as `0x` and uppercase hex; strings verbatim.
//!
//! A NULL variant is a null struct (never a struct of nulls).

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// The most bytes a SQL_VARIANT value has (the 4-byte max length SQL Server declares).
pub const MAX_BYTES: usize = 8016;

fn date_of(days: i64) -> Result<NaiveDate, String> {
    i32::try_from(days + 1).ok().and_then(NaiveDate::from_num_days_from_ce_opt).ok_or_else(|| format!("date of day {days} out of range"))
}

fn days_of(d: NaiveDate) -> i64 {
    i64::from(d.num_days_from_ce()) - 1
}



/// Time of day in units of 10^-scale s as `hh:mm:ss` plus `scale` digits.
fn time_text(increments: u64, scale: u8) -> Result<String, String> {
    let per_sec = 10u64.pow(u32::from(scale));
    let secs = increments / per_sec;
    if secs >= 86_400 {
        return Err(format!("time of {increments} units of 10^-{scale} s is past midnight"));
    }
    let mut s = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if scale > 0 {
        s.push_str(&format!(".{:0width$}", increments % per_sec, width = scale as usize));
    }
    Ok(s)
}

/// `hh:mm:ss[.f…]` with exactly `scale` digits as units of 10^-scale s.
fn parse_time(t: &str, scale: u8) -> Option<u64> {
    let (hms, frac) = match t.split_once('.') {
        Some((a, b)) => (a, b),
        None => (t, ""),
    };
    if frac.len() != scale as usize || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut it = hms.split(':');
    let (h, m, s): (u64, u64, u64) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    if it.next().is_some() || h > 23 || m > 59 || s > 59 {
        return None;
    }
    let f: u64 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    Some(((h * 60 + m) * 60 + s) * 10u64.pow(u32::from(scale)) + f)
}

fn le(s: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = s.len().min(8);
    b[..n].copy_from_slice(&s[..n]);
    u64::from_le_bytes(b)
}

fn time_len(scale: u8) -> usize {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

/// `unscaled` with exactly `scale` digits after the point.
pub fn scaled_text(unscaled: i128, scale: u8) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Text with exactly `scale` digits after the point (none and no point for scale 0) as the
/// unscaled value.
pub fn parse_scaled(t: &str, scale: u8) -> Option<i128> {
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let (int, frac) = match t.split_once('.') {
        Some((a, b)) => (a, b),
        None => (t, ""),
    };
    if int.is_empty() || frac.len() != scale as usize || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i128 = format!("{int}{frac}").parse().ok()?;
    Some(if neg { -v } else { v })
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("0x");
    for x in b {
        s.push_str(&format!("{x:02X}"));
    }
    s
}

/// `0x…` hex (either case) as bytes.
pub fn parse_hex(t: &str) -> Option<Vec<u8>> {
    let h = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"))?;
    if h.len() % 2 != 0 {
        return None;
    }
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok()).collect()
}

/// The text of a UTF-16LE or code-page string value.
fn char_text(data: &[u8], wide: bool, collation: [u8; 5]) -> Result<String, String> {
    if wide {
        let mut s = String::new();
        super::decode::utf16le_to_utf8(data, &mut s)?;
        Ok(s)
    } else {
        let cp = super::decode::collation_code_page(collation)?;
        cp.decode_without_bom_handling_and_without_replacement(data).map(|c| c.into_owned()).ok_or_else(|| format!("text not valid in code page {}", cp.name()))
    }
}

/// A SQL_VARIANT's bytes (after its 4-byte length) as (base type, value text).
pub fn to_text(raw: &[u8]) -> Result<(String, String), String> {
    let short = || format!("SQL_VARIANT of {} bytes is shorter than its base type says", raw.len());
    let (&ty, rest) = raw.split_first().ok_or_else(short)?;
    let (&nprops, rest) = rest.split_first().ok_or_else(short)?;
    let props = rest.get(..nprops as usize).ok_or_else(short)?;
    let data = &rest[nprops as usize..];
    let want = |n: usize, name: &str| -> Result<(), String> {
        if props.len() != n {
            return Err(format!("SQL_VARIANT {name} with {} property bytes (MS-TDS says {n})", props.len()));
        }
        Ok(())
    };
    let fixed = |n: usize, name: &str| -> Result<(), String> {
        want(0, name)?;
        if data.len() != n {
            return Err(format!("SQL_VARIANT {name} of {} bytes (wants {n})", data.len()));
        }
        Ok(())
    };
    Ok(match ty {
        0x30 | 0x34 | 0x38 | 0x7F => {
            let (name, n) = match ty {
                0x30 => ("tinyint", 1),
                0x34 => ("smallint", 2),
                0x38 => ("int", 4),
                _ => ("bigint", 8),
            };
            fixed(n, name)?;
            let v = match n {
                1 => i64::from(data[0]),
                2 => i64::from(i16::from_le_bytes([data[0], data[1]])),
                4 => i64::from(i32::from_le_bytes([data[0], data[1], data[2], data[3]])),
                _ => le(data) as i64,
            };
            (name.into(), v.to_string())
        }
        0x32 => {
            fixed(1, "bit")?;
            ("bit".into(), if data[0] != 0 { "1" } else { "0" }.into())
        }
        0x3B => {
            fixed(4, "real")?;
            ("real".into(), f32::from_le_bytes([data[0], data[1], data[2], data[3]]).to_string())
        }
        0x3E => {
            fixed(8, "float")?;
            ("float".into(), f64::from_bits(le(data)).to_string())
        }
        0x7A => {
            fixed(4, "smallmoney")?;
            ("smallmoney".into(), scaled_text(i128::from(le(data) as u32 as i32), 4))
        }
        0x3C => {
            fixed(8, "money")?;
            // High 4 bytes first, then the low 4 (MS-TDS 2.2.5.5.1.4).
            let v = (le(&data[..4]) << 32 | le(&data[4..])) as i64;
            ("money".into(), scaled_text(i128::from(v), 4))
        }
        0x3D => {
            fixed(8, "datetime")?;
            let days = le(&data[..4]) as u32 as i32;
            let ticks = le(&data[4..]);
            let ms = (ticks * 10 + 1) / 3;
            let date = NaiveDate::from_ymd_opt(1900, 1, 1).ok_or("date")? + Duration::days(i64::from(days));
            let (secs, ms) = (ms / 1000, ms % 1000);
            ("datetime".into(), format!("{}T{}.{ms:03}", date.format("%Y-%m-%d"), time_text(secs, 0)?))
        }
        0x3A => {
            fixed(4, "smalldatetime")?;
            let days = le(&data[..2]) as i64;
            let minutes = le(&data[2..]);
            let date = NaiveDate::from_ymd_opt(1900, 1, 1).ok_or("date")? + Duration::days(days);
            ("smalldatetime".into(), format!("{}T{}", date.format("%Y-%m-%d"), time_text(minutes * 60, 0)?))
        }
        0x24 => {
            fixed(16, "uniqueidentifier")?;
            let d = data;
            let s = format!(
                "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
                d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6], d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]
            );
            ("uniqueidentifier".into(), s)
        }
        0x28 => {
            fixed(3, "date")?;
            ("date".into(), date_of(le(data) as i64)?.format("%Y-%m-%d").to_string())
        }
        0x29 | 0x2A | 0x2B => {
            let name = match ty {
                0x29 => "time",
                0x2A => "datetime2",
                _ => "datetimeoffset",
            };
            want(1, name)?;
            let scale = props[0];
            if scale > 7 {
                return Err(format!("SQL_VARIANT {name}({scale})"));
            }
            let tl = time_len(scale);
            let n = tl + if ty == 0x29 { 0 } else { 3 } + if ty == 0x2B { 2 } else { 0 };
            if data.len() != n {
                return Err(format!("SQL_VARIANT {name}({scale}) of {} bytes (wants {n})", data.len()));
            }
            let incr = le(&data[..tl]);
            let base = format!("{name}({scale})");
            if ty == 0x29 {
                return Ok((base, time_text(incr, scale)?));
            }
            let days = le(&data[tl..tl + 3]) as i64;
            if ty == 0x2A {
                return Ok((base, format!("{}T{}", date_of(days)?.format("%Y-%m-%d"), time_text(incr, scale)?)));
            }
            // DATETIMEOFFSET: the UTC time, then the offset in minutes; shown in local time.
            let offset = i16::from_le_bytes([data[tl + 3], data[tl + 4]]);
            let per_sec = 10u64.pow(u32::from(scale));
            let utc = date_of(days)?.and_time(NaiveTime::MIN) + Duration::seconds((incr / per_sec) as i64);
            let local = utc + Duration::minutes(i64::from(offset));
            let mut t = format!("{}T{}", local.format("%Y-%m-%d"), local.format("%H:%M:%S"));
            if scale > 0 {
                t.push_str(&format!(".{:0width$}", incr % per_sec, width = scale as usize));
            }
            let sign = if offset < 0 { '-' } else { '+' };
            let o = offset.unsigned_abs();
            t.push_str(&format!("{sign}{:02}:{:02}", o / 60, o % 60));
            (base, t)
        }
        0x6A | 0x6C => {
            let name = if ty == 0x6A { "decimal" } else { "numeric" };
            want(2, name)?;
            let (p, s) = (props[0], props[1]);
            let (&sign, mag) = data.split_first().ok_or_else(short)?;
            if mag.len() > 16 || !(1..=38).contains(&p) || s > p {
                return Err(format!("SQL_VARIANT {name}({p},{s}) of {} bytes", data.len()));
            }
            let mut b = [0u8; 16];
            b[..mag.len()].copy_from_slice(mag);
            let m = i128::try_from(u128::from_le_bytes(b)).map_err(|_| "decimal out of range".to_string())?;
            (format!("{name}({p},{s})"), scaled_text(if sign == 0 { -m } else { m }, s))
        }
        0xA5 | 0xAD => {
            let name = if ty == 0xA5 { "varbinary" } else { "binary" };
            want(2, name)?;
            let n = u16::from_le_bytes([props[0], props[1]]);
            (format!("{name}({n})"), hex(data))
        }
        0xA7 | 0xAF | 0xE7 | 0xEF => {
            let (name, wide) = match ty {
                0xA7 => ("varchar", false),
                0xAF => ("char", false),
                0xE7 => ("nvarchar", true),
                _ => ("nchar", true),
            };
            want(7, name)?;
            let collation = [props[0], props[1], props[2], props[3], props[4]];
            let bytes = u16::from_le_bytes([props[5], props[6]]);
            // NVARCHAR's property is its maximum length in bytes; T-SQL counts characters.
            let n = if wide { bytes / 2 } else { bytes };
            (format!("{name}({n}) collate {}", hex(&collation)), char_text(data, wide, collation)?)
        }
        t => return Err(format!("SQL_VARIANT of base type 0x{t:02X}, which is not one SQL Server sends")),
    })
}

/// The collation a character base type without `collate` gets: SQL Server's default
/// (SQL_Latin1_General_CP1_CI_AS).
const DEFAULT_COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// Appends a SQL_VARIANT's bytes (base type, property count, properties, data; not the 4-byte
/// length) for `(base_type, value)` as [`to_text`] writes them. `Err` says what does not parse.
pub fn from_text(base_type: &str, value: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let bad = || format!("SQL_VARIANT value '{value}' is not a {base_type}");
    let lower = base_type.trim().to_ascii_lowercase();
    let (ty_part, collation) = match lower.split_once(" collate ") {
        Some((t, c)) => {
            let b = parse_hex(c.trim()).filter(|b| b.len() == 5).ok_or_else(|| format!("SQL_VARIANT base type '{base_type}': collation is not 5 bytes of 0x-hex"))?;
            (t.trim(), Some([b[0], b[1], b[2], b[3], b[4]]))
        }
        None => (lower.as_str(), None),
    };
    let (name, args) = match ty_part.split_once('(') {
        Some((n, a)) => (n.trim(), Some(a.strip_suffix(')').ok_or_else(|| format!("SQL_VARIANT base type '{base_type}'"))?)),
        None => (ty_part, None),
    };
    let arg = |i: usize| -> Result<u16, String> {
        args.and_then(|a| a.split(',').nth(i)).and_then(|x| x.trim().parse().ok()).ok_or_else(|| format!("SQL_VARIANT base type '{base_type}' lacks its length, precision or scale"))
    };
    let int = |min: i64, max: i64| -> Result<i64, String> { value.parse::<i64>().ok().filter(|v| (min..=max).contains(v)).ok_or_else(bad) };
    let datetime2 = |t: &str, scale: u8| -> Option<(i64, u64)> {
        let (d, tm) = t.split_once('T')?;
        let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?;
        Some((days_of(date), parse_time(tm, scale)?))
    };
    match name {
        "tinyint" => out.extend([0x30, 0, int(0, 255)? as u8]),
        "smallint" => {
            out.extend([0x34, 0]);
            out.extend((int(i16::MIN.into(), i16::MAX.into())? as i16).to_le_bytes());
        }
        "int" => {
            out.extend([0x38, 0]);
            out.extend((int(i32::MIN.into(), i32::MAX.into())? as i32).to_le_bytes());
        }
        "bigint" => {
            out.extend([0x7F, 0]);
            out.extend(value.parse::<i64>().map_err(|_| bad())?.to_le_bytes());
        }
        "bit" => out.extend([0x32, 0, int(0, 1)? as u8]),
        "real" => {
            out.extend([0x3B, 0]);
            out.extend(value.parse::<f32>().ok().filter(|f| f.is_finite()).ok_or_else(bad)?.to_le_bytes());
        }
        "float" => {
            out.extend([0x3E, 0]);
            out.extend(value.parse::<f64>().ok().filter(|f| f.is_finite()).ok_or_else(bad)?.to_le_bytes());
        }
        "smallmoney" => {
            let v = parse_scaled(value, 4).and_then(|v| i32::try_from(v).ok()).ok_or_else(bad)?;
            out.extend([0x7A, 0]);
            out.extend(v.to_le_bytes());
        }
        "money" => {
            let v = parse_scaled(value, 4).and_then(|v| i64::try_from(v).ok()).ok_or_else(bad)?;
            out.extend([0x3C, 0]);
            out.extend(((v >> 32) as u32).to_le_bytes());
            out.extend((v as u32).to_le_bytes());
        }
        "decimal" | "numeric" => {
            let (p, s) = (arg(0)?, arg(1)?);
            if !(1..=38).contains(&p) || s > p {
                return Err(format!("SQL_VARIANT base type '{base_type}'"));
            }
            let v = parse_scaled(value, s as u8).filter(|v| v.unsigned_abs() < 10u128.pow(u32::from(p))).ok_or_else(bad)?;
            let n = match p {
                1..=9 => 4,
                10..=19 => 8,
                20..=28 => 12,
                _ => 16,
            };
            out.extend([if name == "decimal" { 0x6A } else { 0x6C }, 2, p as u8, s as u8, u8::from(v >= 0)]);
            out.extend(&v.unsigned_abs().to_le_bytes()[..n]);
        }
        "date" => {
            let d = NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| bad())?;
            out.extend([0x28, 0]);
            out.extend(&(days_of(d) as u32).to_le_bytes()[..3]);
        }
        "time" | "datetime2" | "datetimeoffset" => {
            let scale = arg(0)?;
            if scale > 7 {
                return Err(format!("SQL_VARIANT base type '{base_type}'"));
            }
            let scale = scale as u8;
            let tl = time_len(scale);
            let ty = match name {
                "time" => 0x29,
                "datetime2" => 0x2A,
                _ => 0x2B,
            };
            out.extend([ty, 1, scale]);
            match name {
                "time" => out.extend(&parse_time(value, scale).ok_or_else(bad)?.to_le_bytes()[..tl]),
                "datetime2" => {
                    let (days, incr) = datetime2(value, scale).ok_or_else(bad)?;
                    out.extend(&incr.to_le_bytes()[..tl]);
                    out.extend(&(days as u32).to_le_bytes()[..3]);
                }
                _ => {
                    // Local time, then ±hh:mm: stored as the UTC time and the offset.
                    let (local, off) = value.len().checked_sub(6).and_then(|k| value.get(..k).zip(value.get(k..))).ok_or_else(bad)?;
                    let sign = match off.as_bytes().first() {
                        Some(b'+') => 1,
                        Some(b'-') => -1,
                        _ => return Err(bad()),
                    };
                    let (h, m) = off[1..].split_once(':').ok_or_else(bad)?;
                    let minutes: i64 = sign * (h.parse::<i64>().map_err(|_| bad())? * 60 + m.parse::<i64>().map_err(|_| bad())?);
                    let (days, incr) = datetime2(local, scale).ok_or_else(bad)?;
                    let per_sec = 10u64.pow(u32::from(scale));
                    let local_dt: NaiveDateTime = date_of(days)?.and_time(NaiveTime::MIN) + Duration::seconds((incr / per_sec) as i64);
                    let utc = local_dt - Duration::minutes(minutes);
                    let utc_incr = u64::from(utc.time().num_seconds_from_midnight()) * per_sec + incr % per_sec;
                    out.extend(&utc_incr.to_le_bytes()[..tl]);
                    out.extend(&(days_of(utc.date()) as u32).to_le_bytes()[..3]);
                    out.extend((minutes as i16).to_le_bytes());
                }
            }
        }
        "datetime" => {
            let (d, t) = value.split_once('T').ok_or_else(bad)?;
            let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| bad())?;
            let ms = parse_time(t, 3).ok_or_else(bad)?;
            let days = date.signed_duration_since(NaiveDate::from_ymd_opt(1900, 1, 1).ok_or("date")?).num_days();
            let (secs, frac) = (ms / 1000, ms % 1000);
            let ticks = secs * 300 + (frac * 3 + 5) / 10;
            if (ticks % 300 * 10 + 1) / 3 != frac {
                return Err(format!("SQL_VARIANT value '{value}' is not a datetime (its milliseconds are no 1/300 s tick)"));
            }
            out.extend([0x3D, 0]);
            out.extend((i32::try_from(days).map_err(|_| bad())?).to_le_bytes());
            out.extend((ticks as u32).to_le_bytes());
        }
        "smalldatetime" => {
            let (d, t) = value.split_once('T').ok_or_else(bad)?;
            let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| bad())?;
            let secs = parse_time(t, 0).filter(|s| s % 60 == 0).ok_or_else(bad)?;
            let days = date.signed_duration_since(NaiveDate::from_ymd_opt(1900, 1, 1).ok_or("date")?).num_days();
            out.extend([0x3A, 0]);
            out.extend(u16::try_from(days).map_err(|_| bad())?.to_le_bytes());
            out.extend(((secs / 60) as u16).to_le_bytes());
        }
        "uniqueidentifier" => {
            let h: String = value.chars().filter(|&c| c != '-').collect();
            let b = parse_hex(&format!("0x{h}")).filter(|b| b.len() == 16 && value.len() == 36).ok_or_else(bad)?;
            out.extend([0x24, 0, b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]]);
            out.extend(&b[8..]);
        }
        "binary" | "varbinary" => {
            let n = arg(0)?;
            let b = parse_hex(value).filter(|b| b.len() <= n as usize && (name == "varbinary" || b.len() == n as usize)).ok_or_else(bad)?;
            out.extend([if name == "binary" { 0xAD } else { 0xA5 }, 2]);
            out.extend(n.to_le_bytes());
            out.extend(b);
        }
        "varchar" | "char" | "nvarchar" | "nchar" => {
            let n = arg(0)?;
            let wide = name.starts_with('n');
            let collation = collation.unwrap_or(DEFAULT_COLLATION);
            let ty = match name {
                "varchar" => 0xA7,
                "char" => 0xAF,
                "nvarchar" => 0xE7,
                _ => 0xEF,
            };
            let data: Vec<u8> = if wide {
                value.encode_utf16().flat_map(u16::to_le_bytes).collect()
            } else {
                let cp = super::decode::collation_code_page(collation)?;
                let (b, _, unmappable) = cp.encode(value);
                if unmappable || cp.output_encoding() != cp {
                    return Err(format!("SQL_VARIANT value '{value}' has characters code page {} cannot hold", cp.name()));
                }
                b.into_owned()
            };
            let max_bytes = if wide { n.checked_mul(2).ok_or_else(bad)? } else { n };
            if data.len() > max_bytes as usize || (!name.starts_with("var") && !name.starts_with("nvar") && data.len() != max_bytes as usize) {
                return Err(format!("SQL_VARIANT value '{value}' does not fit {base_type}"));
            }
            out.extend([ty, 7]);
            out.extend(collation);
            out.extend(max_bytes.to_le_bytes());
            out.extend(data);
        }
        _ => return Err(format!("SQL_VARIANT base type '{base_type}' is not one perfcopy writes")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (bytes SQL Server sends, base type, value): the bytes from MS-TDS 2.2.5.5.4's layout.
    fn cases() -> Vec<(Vec<u8>, &'static str, &'static str)> {
        vec![
            (vec![0x38, 0, 7, 0, 0, 0], "int", "7"),
            (vec![0x38, 0, 0xFF, 0xFF, 0xFF, 0xFF], "int", "-1"),
            (vec![0x30, 0, 255], "tinyint", "255"),
            (vec![0x34, 0, 0x00, 0x80], "smallint", "-32768"),
            ([&[0x7F, 0][..], &i64::MIN.to_le_bytes()].concat(), "bigint", "-9223372036854775808"),
            (vec![0x32, 0, 1], "bit", "1"),
            ([&[0x3E, 0][..], &0.1f64.to_le_bytes()].concat(), "float", "0.1"),
            ([&[0x3B, 0][..], &1.5f32.to_le_bytes()].concat(), "real", "1.5"),
            // DECIMAL(18,4) -12.3400: sign 0, magnitude 123400 in 8 bytes.
            ([&[0x6A, 2, 18, 4, 0][..], &123_400u64.to_le_bytes()].concat(), "decimal(18,4)", "-12.3400"),
            ([&[0x6C, 2, 5, 0, 1][..], &5u32.to_le_bytes()].concat(), "numeric(5,0)", "5"),
            ([&[0x6A, 2, 9, 4, 1][..], &5u32.to_le_bytes()].concat(), "decimal(9,4)", "0.0005"),
            // MONEY 1.0001 = 10001 (high half 0, then low half).
            ([&[0x3C, 0][..], &0u32.to_le_bytes(), &10_001u32.to_le_bytes()].concat(), "money", "1.0001"),
            ([&[0x7A, 0][..], &(-1i32).to_le_bytes()].concat(), "smallmoney", "-0.0001"),
            // 2024-02-29 is day 738944 since 0001-01-01.
            ([&[0x28, 0][..], &738_944u32.to_le_bytes()[..3]].concat(), "date", "2024-02-29"),
            // DATETIME2(3) 2024-02-29T12:34:56.789.
            ([&[0x2A, 1, 3][..], &45_296_789u32.to_le_bytes(), &738_944u32.to_le_bytes()[..3]].concat(), "datetime2(3)", "2024-02-29T12:34:56.789"),
            ([&[0x2A, 1, 0][..], &45_296u32.to_le_bytes()[..3], &738_944u32.to_le_bytes()[..3]].concat(), "datetime2(0)", "2024-02-29T12:34:56"),
            ([&[0x29, 1, 7][..], &(45_296_789_0123u64).to_le_bytes()[..5]].concat(), "time(7)", "12:34:56.7890123"),
            // DATETIMEOFFSET(0) 2024-02-29T23:30:00 UTC at +01:00: 2024-03-01T00:30:00+01:00.
            ([&[0x2B, 1, 0][..], &84_600u32.to_le_bytes()[..3], &738_944u32.to_le_bytes()[..3], &60i16.to_le_bytes()].concat(), "datetimeoffset(0)", "2024-03-01T00:30:00+01:00"),
            // DATETIME 1900-01-02 00:00:01.003 (1 day, 301 ticks).
            ([&[0x3D, 0][..], &1i32.to_le_bytes(), &301u32.to_le_bytes()].concat(), "datetime", "1900-01-02T00:00:01.003"),
            ([&[0x3A, 0][..], &1u16.to_le_bytes(), &61u16.to_le_bytes()].concat(), "smalldatetime", "1900-01-02T01:01:00"),
            (
                vec![0x24, 0, 0xFF, 0x19, 0x96, 0x6F, 0x86, 0x8B, 0x11, 0xD0, 0xB4, 0x2D, 0x00, 0xC0, 0x4F, 0xC9, 0x64, 0xFF],
                "uniqueidentifier",
                "6F9619FF-8B86-D011-B42D-00C04FC964FF",
            ),
            (vec![0xA5, 2, 16, 0, 0xDE, 0xAD], "varbinary(16)", "0xDEAD"),
            (vec![0xAD, 2, 2, 0, 0x00, 0x01], "binary(2)", "0x0001"),
            (vec![0xA5, 2, 16, 0], "varbinary(16)", "0x"),
            // VARCHAR(10) in Latin1_General_CI_AS (code page 1252): 'é€' is E9 80.
            (vec![0xA7, 7, 0x09, 0x04, 0xD0, 0x00, 0x00, 10, 0, 0xE9, 0x80], "varchar(10) collate 0x0904D00000", "é€"),
            // NVARCHAR(256): 512 bytes.
            ([&[0xE7, 7, 0x09, 0x04, 0xD0, 0x00, 0x34, 0x00, 0x02][..], &"Ωx".encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>()].concat(), "nvarchar(256) collate 0x0904D00034", "Ωx"),
        ]
    }

    #[test]
    fn variants_read_as_base_type_and_canonical_text_and_back_to_the_same_bytes() {
        for (bytes, base, value) in cases() {
            assert_eq!(to_text(&bytes), Ok((base.to_string(), value.to_string())), "{base} {value}");
            let mut out = Vec::new();
            from_text(base, value, &mut out).unwrap_or_else(|e| panic!("{base} {value}: {e}"));
            assert_eq!(out, bytes, "{base} {value}");
        }
    }

    #[test]
    fn every_datetime_tick_has_its_own_text() {
        for ticks in 0..300u32 {
            let bytes = [&[0x3D, 0][..], &0i32.to_le_bytes(), &ticks.to_le_bytes()].concat();
            let (base, value) = to_text(&bytes).unwrap();
            let mut out = Vec::new();
            from_text(&base, &value, &mut out).unwrap();
            assert_eq!(out, bytes, "{value}");
        }
    }

    #[test]
    fn values_that_do_not_fit_their_base_type_are_errors() {
        let mut out = Vec::new();
        assert!(from_text("int", "2147483648", &mut out).unwrap_err().contains("not a int"));
        assert!(from_text("decimal(5,2)", "1.2", &mut out).is_err(), "scale digits must be exact");
        assert!(from_text("decimal(5,2)", "1234.00", &mut out).is_err(), "too many digits for the precision");
        assert!(from_text("varchar(5) collate 0x0904D00000", "Ω", &mut out).unwrap_err().contains("cannot hold"));
        assert!(from_text("varbinary(1)", "0x0102", &mut out).is_err());
        assert!(from_text("geography", "x", &mut out).unwrap_err().contains("not one perfcopy writes"));
        assert!(from_text("datetime", "1900-01-01T00:00:00.001", &mut out).unwrap_err().contains("tick"));
        assert!(to_text(&[0x38, 0, 1]).is_err());
        assert!(to_text(&[0x99, 0]).is_err());
    }

    #[test]
    fn scaled_text_has_exactly_the_scale_digits() {
        assert_eq!(scaled_text(5, 2), "0.05");
        assert_eq!(scaled_text(-5, 2), "-0.05");
        assert_eq!(scaled_text(12_345, 2), "123.45");
        assert_eq!(scaled_text(0, 0), "0");
        assert_eq!(parse_scaled("-0.05", 2), Some(-5));
        assert_eq!(parse_scaled("1.5", 2), None);
    }
}
