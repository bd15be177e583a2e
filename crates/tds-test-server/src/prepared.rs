//! Prepared statements as SQL Server's RPCs keep them: `sp_prepare` (ProcID 11), `sp_execute`
//! (12), `sp_prepexec` (13) and `sp_unprepare` (15). ODBC drivers (msodbcsql, used by
//! mssql-python) send a parameterised query as `sp_prepexec` and its re-executions as
//! `sp_execute`.
//!
//! SQL Server answers `sp_prepexec` and `sp_prepare` with the statement's results (DONEINPROC
//! each), then RETURNSTATUS, then a RETURNVALUE carrying the new handle in the `@handle INT
//! OUTPUT` parameter (ordinal 0), then DONEPROC. Handles are per connection and start at 1.

use std::collections::HashMap;

use crate::types::Value;

/// ProcIDs of the special procedures (MS-TDS 2.2.6.6).
pub mod proc_id {
    /// sp_executesql.
    pub const EXECUTESQL: u16 = 10;
    /// sp_prepare.
    pub const PREPARE: u16 = 11;
    /// sp_execute.
    pub const EXECUTE: u16 = 12;
    /// sp_prepexec.
    pub const PREPEXEC: u16 = 13;
    /// sp_unprepare.
    pub const UNPREPARE: u16 = 15;
}

/// The name SQL Server knows a special procedure by, for the ProcIDs this server runs.
pub fn proc_name(id: u16) -> Option<&'static str> {
    Some(match id {
        proc_id::EXECUTESQL => "sp_executesql",
        proc_id::PREPARE => "sp_prepare",
        proc_id::EXECUTE => "sp_execute",
        proc_id::PREPEXEC => "sp_prepexec",
        proc_id::UNPREPARE => "sp_unprepare",
        _ => return None,
    })
}

/// One prepared statement: its text and the parameter names its declaration lists, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The statement (`@stmt`).
    pub statement: String,
    /// `@P1`, `@P2`, ... as the `@params` declaration names them (lower-case).
    pub params: Vec<String>,
}

/// A connection's prepared statements, by handle.
#[derive(Debug, Default)]
pub struct PreparedStatements {
    by_handle: HashMap<i32, Prepared>,
    last: i32,
}

impl PreparedStatements {
    /// Keeps a statement and returns its new handle.
    pub fn prepare(&mut self, statement: String, declaration: &str) -> i32 {
        self.last += 1;
        self.by_handle.insert(self.last, Prepared { statement, params: declared_names(declaration) });
        self.last
    }

    /// The statement of `handle`, if prepared and not unprepared.
    pub fn get(&self, handle: i32) -> Option<&Prepared> {
        self.by_handle.get(&handle)
    }

    /// Forgets `handle`; false if it was not prepared.
    pub fn unprepare(&mut self, handle: i32) -> bool {
        self.by_handle.remove(&handle).is_some()
    }
}

/// The parameter names of a `sp_executesql`-style declaration (`@P1 int,@P2 decimal(9,4) OUTPUT`),
/// lower-cased, in order. Commas inside a type's parentheses do not separate parameters.
pub fn declared_names(declaration: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    let mut item = String::new();
    let mut push = |item: &str| {
        if let Some(name) = item.trim().split_whitespace().next().filter(|n| n.starts_with('@')) {
            names.push(name.to_lowercase());
        }
    };
    for ch in declaration.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                push(&item);
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(ch);
    }
    push(&item);
    names
}

/// The parameters of a declaration with their OUTPUT marks: `(name lower-cased, output)`.
pub fn declared_params(declaration: &str) -> Vec<(String, bool)> {
    let names = declared_names(declaration);
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut item = String::new();
    for ch in declaration.chars().chain(std::iter::once(',')) {
        match ch {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                if item.trim().starts_with('@') {
                    let up = item.to_ascii_uppercase();
                    items.push(up.split_whitespace().any(|w| w == "OUTPUT" || w == "OUT"));
                }
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(ch);
    }
    names.into_iter().zip(items).collect()
}

/// The integer value of a handle parameter (INTN/INT4), if it is one.
pub fn handle_of(v: &Value) -> Option<i32> {
    match v {
        Value::Int(i) => i32::try_from(*i).ok(),
        _ => None,
    }
}

/// A RETURNVALUE token (MS-TDS 2.2.7.18) for an `INT OUTPUT` parameter at `ordinal`:
/// ParamOrdinal, ParamName (B_VARCHAR), Status 0x01 (output parameter), UserType, Flags
/// (nullable), TYPE_INFO INTN(4), the value.
pub fn return_value_int(ordinal: u16, name: &str, value: Option<i32>) -> Vec<u8> {
    let mut b = vec![0xAC];
    b.extend_from_slice(&ordinal.to_le_bytes());
    let units: Vec<u16> = name.encode_utf16().collect();
    b.push(units.len().min(255) as u8);
    for u in units.iter().take(255) {
        b.extend_from_slice(&u.to_le_bytes());
    }
    b.push(0x01);
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0x0001u16.to_le_bytes());
    b.extend_from_slice(&[0x26, 4]);
    match value {
        Some(v) => {
            b.push(4);
            b.extend_from_slice(&v.to_le_bytes());
        }
        None => b.push(0),
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_split_at_top_level_commas_only() {
        assert_eq!(declared_names("@P1 int,@P2 decimal(9,4),@P3 nvarchar(4000) OUTPUT"), ["@p1", "@p2", "@p3"]);
        assert_eq!(declared_names(""), Vec::<String>::new());
        assert_eq!(declared_names(" @Id bigint "), ["@id"]);
    }

    #[test]
    fn output_marks_are_per_parameter() {
        assert_eq!(declared_params("@CN NVARCHAR(MAX) OUTPUT, @ObjId INT"), [("@cn".to_string(), true), ("@objid".to_string(), false)]);
    }

    #[test]
    fn handles_are_per_registry_and_unprepare_forgets_them() {
        let mut p = PreparedStatements::default();
        let a = p.prepare("SELECT 1".into(), "");
        let b = p.prepare("SELECT @P1".into(), "@P1 int");
        assert_eq!((a, b), (1, 2));
        assert_eq!(p.get(b).map(|s| s.params.clone()), Some(vec!["@p1".to_string()]));
        assert!(p.unprepare(a));
        assert!(!p.unprepare(a));
        assert!(p.get(a).is_none());
    }

    #[test]
    fn return_value_token_bytes() {
        // 0xAC, ordinal 0, name "" , status 1, usertype 0, flags 1, INTN(4), len 4, value 7.
        assert_eq!(return_value_int(0, "", Some(7)), [0xAC, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0x26, 4, 4, 7, 0, 0, 0]);
    }
}
